// Command orderly-probe is a container healthcheck: it fetches one URL and
// exits 0 when the answer is 2xx. The service images have no shell and no
// HTTP client (distroless), so docker-compose.yml's healthchecks run this.
//
// Usage:
//
//	orderly-probe [URL]
//
// Without URL it asks the service in its own container: /readyz on the
// port of HTTP_ADDR, at 127.0.0.1 (the address every HTTP_ADDR a service
// takes listens on), so one healthcheck fits every service and port.
//
// The exit status is 0 when healthy, 1 when not (one line on stderr) and 2
// on a usage error.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/orderly/orderly/pkg/cmd/internal/cli"
)

// timeout stays under compose's healthcheck timeout, so that a hung
// service reads as unhealthy rather than as a probe that was killed.
const timeout = 3 * time.Second

func main() {
	cli.Exit("orderly-probe", run(os.Args[1:], os.Getenv("HTTP_ADDR")))
}

func run(args []string, httpAddr string) error {
	var raw string
	switch len(args) {
	case 0:
		_, port, err := net.SplitHostPort(httpAddr)
		if err != nil || port == "" {
			return cli.Usagef("no URL, and HTTP_ADDR %q has no port", httpAddr)
		}
		raw = "http://" + net.JoinHostPort("127.0.0.1", port) + "/readyz"
	case 1:
		raw = args[0]
	default:
		return cli.Usagef("usage: orderly-probe [URL]")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cli.Usagef("%q is not an http:// or https:// URL", raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return probe(ctx, http.DefaultClient, u.String())
}

// probe GETs target and reports a status outside 2xx as an error.
func probe(ctx context.Context, client *http.Client, target string) error {
	// The URL is the healthcheck's own (its command line or HTTP_ADDR).
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil) //nolint:gosec // G704: not user input

	if err != nil {
		return err
	}
	resp, err := client.Do(req) //nolint:gosec // G704: not user input
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s: %s", target, resp.Status)
	}
	return nil
}
