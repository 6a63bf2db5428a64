// Command orderly-probe is a container healthcheck: it fetches one URL and
// exits 0 when the answer is 2xx. The service images have no shell and no
// HTTP client (distroless), so docker-compose.yml's healthchecks run this.
//
// Usage:
//
//	orderly-probe URL
//
// The exit status is 0 when healthy, 1 when not (one line on stderr) and 2
// on a usage error.
package main

import (
	"context"
	"fmt"
	"io"
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
	cli.Exit("orderly-probe", run(os.Args[1:]))
}

func run(args []string) error {
	if len(args) != 1 {
		return cli.Usagef("usage: orderly-probe URL")
	}
	u, err := url.Parse(args[0])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return cli.Usagef("%q is not an http:// or https:// URL", args[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return probe(ctx, http.DefaultClient, u.String())
}

// probe GETs target and reports a status outside 2xx as an error.
func probe(ctx context.Context, client *http.Client, target string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
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
