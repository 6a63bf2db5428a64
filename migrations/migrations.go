// Package migrations embeds the numbered SQL migrations of every service
// (the directory migrations/<service>), and the messaging tables (outbox,
// inbox) of the services that publish or consume through them. Services
// apply them at start; tests migrate from the same files.
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
)

//go:embed */*.sql
var all embed.FS

// Messaging holds the outbox and inbox tables.
var Messaging = sub("messaging")

// Of returns the migrations of service, the files of migrations/<service>.
// It panics when there are none: a service without its own tables names
// none, and a typo should stop the service at once.
func Of(service string) fs.FS {
	if m, _ := fs.Glob(all, service+"/*.sql"); len(m) == 0 {
		panic(fmt.Sprintf("migrations: no migrations/%s/*.sql", service))
	}
	return sub(service)
}

func sub(dir string) fs.FS {
	s, err := fs.Sub(all, dir)
	if err != nil {
		// fs.Sub fails only for an invalid path, which is a constant here.
		panic(err)
	}
	return s
}
