// Package migrations embeds the numbered SQL migrations of every service, and
// the messaging tables (outbox, inbox) that each service's database carries.
// Services apply them at start; tests migrate from the same files.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed messaging/*.sql
var messaging embed.FS

// Messaging holds the outbox and inbox tables shared by every service database.
var Messaging = sub(messaging, "messaging")

func sub(fsys embed.FS, dir string) fs.FS {
	s, err := fs.Sub(fsys, dir)
	if err != nil {
		// fs.Sub fails only for an invalid path, which is a constant here.
		panic(err)
	}
	return s
}
