// Command orderly-token mints a bearer token for a development stack (`make
// run`, docker compose), so that anyone can call the API without an
// identity provider.
//
// Usage:
//
//	orderly-token --sub ID [--admin] [--ttl DURATION] [--url URL]
//
// The token is signed with the settings the services read, from the same
// environment variables: AUTH_JWT_SECRET (or AUTH_JWT_SECRET_FILE; unset,
// the development secret), AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE, and
// AUTH_JWT_MAX_TTL, the longest --ttl (default 1h, or AUTH_JWT_MAX_TTL when
// that is shorter). --admin adds the admin role. It refuses unless
// ORDERLY_ENV=development: production tokens come from the identity
// provider, and production is the services' default.
//
// The token alone goes to stdout, so that TOKEN=$(orderly-token --sub
// alice) works; a curl command ready to paste, calling --url (default the
// order service's list of the caller's orders), goes to stderr. The exit
// status is 0 on success, 1 on a failure and 2 on a usage error; a failure
// is one line on stderr. See docs/operations.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/cmd/internal/cli"
)

// defaultURL lists the caller's orders on the order service at its default
// HTTP_ADDR.
const defaultURL = "http://127.0.0.1:8080/v1/orders"

// defaultTTL is long enough for an afternoon of trying the API and short
// enough that a token pasted somewhere public soon stops working.
const defaultTTL = time.Hour

const usageText = `orderly-token mints a development bearer token.

Usage:
  orderly-token --sub ID [--admin] [--ttl DURATION] [--url URL]

It signs with AUTH_JWT_SECRET (or AUTH_JWT_SECRET_FILE), AUTH_JWT_ISSUER and
AUTH_JWT_AUDIENCE, as the services check them, and only when
ORDERLY_ENV=development. The token goes to stdout, a curl command to stderr.

Flags:
`

func main() {
	err := run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	cli.Exit("orderly-token", err)
}

// request is what the command line asks for.
type request struct {
	sub    string
	admin  bool
	ttl    time.Duration
	ttlSet bool
	url    string
}

// parseFlags reads args into a request, checking what needs no settings.
func parseFlags(args []string, stdout io.Writer) (request, bool, error) {
	var r request
	fs := flag.NewFlagSet("orderly-token", flag.ContinueOnError)
	fs.StringVar(&r.sub, "sub", "", "the token's subject: the customer id (required)")
	fs.BoolVar(&r.admin, "admin", false, "give the token the admin role")
	fs.DurationVar(&r.ttl, "ttl", defaultTTL, "how long the token is valid, at most AUTH_JWT_MAX_TTL")
	fs.StringVar(&r.url, "url", defaultURL, "what the printed curl command calls")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usageText)
		fs.PrintDefaults()
		return r, true, nil
	} else if err != nil {
		return r, false, cli.Usagef("%v (orderly-token -h for help)", err)
	}
	fs.Visit(func(f *flag.Flag) { r.ttlSet = r.ttlSet || f.Name == "ttl" })
	switch {
	case fs.NArg() > 0:
		return r, false, cli.Usagef("unexpected argument %q (orderly-token -h for help)", fs.Arg(0))
	case strings.TrimSpace(r.sub) == "":
		return r, false, cli.Usagef("--sub is required: the customer id the token is for")
	case r.ttl <= 0:
		return r, false, cli.Usagef("--ttl must be positive, not %s", r.ttl)
	}
	if u, err := url.Parse(r.url); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return r, false, cli.Usagef("--url %q is not an http:// or https:// URL", r.url)
	}
	return r, false, nil
}

// run is the whole program but for the exit status, so that tests call it
// directly: args without the program name, and environ as from os.Environ.
func run(args, environ []string, stdout, stderr io.Writer) error {
	r, help, err := parseFlags(args, stdout)
	if err != nil || help {
		return err
	}
	cfg, err := boot.LoadTokenConfig(environ)
	if err != nil {
		return err
	}
	if cfg.Env != boot.EnvDevelopment {
		return fmt.Errorf("refusing to mint a token: ORDERLY_ENV is %q (production is the default when unset); set ORDERLY_ENV=development on a development stack, production tokens come from your identity provider", cfg.Env)
	}
	if !r.ttlSet {
		r.ttl = min(r.ttl, cfg.JWTMaxTTL)
	}
	if r.ttl > cfg.JWTMaxTTL {
		return cli.Usagef("--ttl %s is longer than AUTH_JWT_MAX_TTL (%s), so the services would refuse the token", r.ttl, cfg.JWTMaxTTL)
	}

	claims := authn.Claims{Subject: r.sub, ExpiresAt: time.Now().Add(r.ttl)}
	if r.admin {
		claims.Role = authn.RoleAdmin
	}
	token, err := cfg.Issue(claims)
	if err != nil {
		return err
	}
	// The services' own check, so that a token they would refuse (a
	// subject too long or with control characters) is never printed.
	if _, err := cfg.Verifier().Verify(token); err != nil {
		return fmt.Errorf("the services would refuse this token: %w", err)
	}

	if _, err := fmt.Fprintln(stdout, token); err != nil {
		return err
	}
	who := "customer"
	if r.admin {
		who = "admin"
	}
	_, err = fmt.Fprintf(stderr, "# %s %q, valid until %s:\ncurl -sS -H 'Authorization: Bearer %s' %s\n",
		who, r.sub, claims.ExpiresAt.UTC().Format(time.RFC3339), token, shellQuote(r.url))
	return err
}

// shellQuote quotes s for a POSIX shell, so that a URL with & or ? pastes
// as one argument.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
