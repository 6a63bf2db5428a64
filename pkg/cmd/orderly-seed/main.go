// Command orderly-seed puts the demo catalog (pkg/demo) on sale on a
// development stack: docker compose runs it once the inventory service is
// ready (`make run` seeds the same catalog itself).
//
// Usage:
//
//	orderly-seed [--url URL]
//
// --url is the inventory service (default INVENTORY_URL, else
// http://127.0.0.1:8081). It mints a short admin token with the settings
// the services read (AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE,
// AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE) and, like orderly-token, refuses
// unless ORDERLY_ENV=development. Products already there are left as they
// are, so it is safe to run again. The exit status is 0 on success, 1 on a
// failure and 2 on a usage error.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/cmd/internal/cli"
	"github.com/orderly/orderly/pkg/demo"
)

// timeout bounds the whole run: a handful of calls to one service.
const timeout = 30 * time.Second

func main() {
	cli.Exit("orderly-seed", run(os.Args[1:], os.Environ(), os.Stdout))
}

func run(args, environ []string, stdout io.Writer) error {
	def := "http://127.0.0.1:8081"
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "INVENTORY_URL="); ok && v != "" {
			def = v
		}
	}
	fs := flag.NewFlagSet("orderly-seed", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	inventory := fs.String("url", def, "the inventory service")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		return cli.Usagef("usage: orderly-seed [--url URL]")
	}
	cfg, err := boot.LoadTokenConfig(environ)
	if err != nil {
		return err
	}
	if cfg.Env != boot.EnvDevelopment {
		return fmt.Errorf("refusing to seed: ORDERLY_ENV is %q; the demo catalog is for development stacks", cfg.Env)
	}
	token, err := cfg.Issue(authn.Claims{Subject: "orderly-seed", Role: authn.RoleAdmin, ExpiresAt: time.Now().Add(timeout)})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	created, err := demo.Seed(ctx, &http.Client{Timeout: 5 * time.Second}, *inventory, token)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "orderly-seed: %d of %d demo products created (%s)\n", len(created), len(demo.Catalog), strings.Join(created, ", "))
	return nil
}
