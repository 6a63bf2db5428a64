// Package browser checks the shopper's tracking page (GET /track/{id}), the
// operators' dashboard (GET /dashboard) and every service's API
// documentation (GET /docs) in a real headless
// Chromium, driven by chromedp, against the real order, inventory, payment
// and notification binaries wired to the real PostgreSQL and RabbitMQ
// (tests/stack).
//
// Chromium is not installed by the tests: .ci/run installs the Debian
// package (/usr/bin/chromium), and without it the tests fail and say so.
package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// chromiumPath is where Debian's chromium package puts the browser.
const chromiumPath = "/usr/bin/chromium"

// newBrowser starts a headless Chromium with a fresh profile and returns a
// chromedp context on its first tab. The browser is closed when t ends. A
// missing browser fails t: CI installs it, and a browser test that skips
// would hide that it never ran.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s not found (%v): the browser tests need Debian's chromium package; .ci/run installs it (apt-get install -y chromium)", chromiumPath, err)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 900),
	)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	return ctx
}

// watchConsole collects the uncaught exceptions of ctx's tab; the returned
// func lists those seen so far. ctx must already have its tab (chromedp.Do).
func watchConsole(ctx context.Context) func() []string {
	var (
		mu   sync.Mutex
		errs []string
	)
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			if m.IsException() {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("%s (%s:%d)", m.Text, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), errs...)
	}
}

// balancer is the load balancer in front of the notification replicas, as
// in production: the page and its streams go to whichever replica it
// picks, and the address the browser sees never changes when a replica
// restarts on a new port. It keeps the Host header, so the service sees
// the page's own origin.
type balancer struct {
	srv *httptest.Server

	mu       sync.Mutex
	backends []string // base URLs, the first one preferred; none: 503
	blockWS  bool     // refuse WebSocket handshakes, as a proxy that cannot pass them
	streams  map[string]int
}

func newBalancer(t *testing.T) *balancer {
	t.Helper()
	b := &balancer{streams: map[string]int{}}
	b.srv = httptest.NewServer(b)
	t.Cleanup(b.srv.Close)
	return b
}

// URL is the address the browser uses.
func (b *balancer) URL() string { return b.srv.URL }

// Route sends new requests to backends (the first preferred); with none,
// every request gets a 503, as when no replica is ready. Connections
// already open stay where they are.
func (b *balancer) Route(backends ...string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.backends = backends
}

// BlockWebSockets makes the balancer refuse (or again pass) WebSocket
// handshakes.
func (b *balancer) BlockWebSockets(block bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.blockWS = block
}

// Streams returns how many stream requests ("ws" and "events") have come
// in so far, refused or not.
func (b *balancer) Streams() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.streams {
		out[k] = v
	}
	return out
}

func (b *balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	isWS := strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	b.mu.Lock()
	switch {
	case strings.HasSuffix(r.URL.Path, "/ws"):
		b.streams["ws"]++
	case strings.HasSuffix(r.URL.Path, "/events"):
		b.streams["events"]++
	}
	backends, blockWS := b.backends, b.blockWS
	b.mu.Unlock()
	switch {
	case len(backends) == 0:
		http.Error(w, "no replica available", http.StatusServiceUnavailable)
		return
	case isWS && blockWS:
		http.Error(w, "WebSockets are not supported here", http.StatusBadGateway)
		return
	}
	target, err := url.Parse(backends[0])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1, // event streams pass through at once
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, "replica unreachable: "+err.Error(), http.StatusBadGateway)
		},
	}).ServeHTTP(w, r)
}

// startReplica starts another notification replica of s, called name in
// the test's messages, on the same database and vhost as s.Notification,
// with env added to its environment, and returns its base URL once it is
// ready. With a CA it serves HTTPS with a certificate ca signed, and the
// base URL is https://. It is stopped when t ends.
func startReplica(t *testing.T, s *stack.Stack, name string, ca *tlstest.CA, env ...string) (string, *stack.Process) {
	t.Helper()
	environ := []string{
		"ORDERLY_ENV=development",
		"DATABASE_URL=" + s.Notification.DBURL,
		"AMQP_URL=" + s.AMQPURL,
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + string(s.Secret),
		"TRACKING_SECRET=" + string(s.TrackingSecret),
		"SHUTDOWN_TIMEOUT=10s",
		"SHUTDOWN_DELAY=0s",
		"RATE_LIMIT_RPS=10000",
	}
	environ = append(environ, env...)
	scheme, client := "http://", &http.Client{Timeout: 2 * time.Second}
	if ca != nil {
		certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, t.TempDir())
		environ = append(environ, "TLS_CERT_FILE="+certFile, "TLS_KEY_FILE="+keyFile)
		scheme, client = "https://", ca.Client()
	}
	p := stack.StartProcess(t, stack.Binary(t, "notification"), environ...)
	base := scheme + p.Addr(t)
	poll.UntilNil(t, time.Minute, name+" to be ready", func() error {
		if !p.Running() {
			t.Fatalf("%s exited:\n%s", name, p.Stderr.String())
		}
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz answers %d", resp.StatusCode)
		}
		return nil
	})
	t.Cleanup(func() {
		if p.Running() {
			p.Signal(t, os.Interrupt)
			p.Exit(t, 20*time.Second)
		}
	})
	return base, p
}

// artifact returns the path of name under tests/artifacts (gitignored),
// creating the directory.
func artifact(t *testing.T, name string) string {
	t.Helper()
	root, err := stack.RepoRoot()
	if err != nil {
		t.Fatalf("repository root: %v", err)
	}
	dir := filepath.Join(root, "tests", "artifacts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create %s: %v", dir, err)
	}
	return filepath.Join(dir, name)
}

// screenshot keeps a full-page PNG of ctx's tab as the artifact name, for
// a person to look at (what).
func screenshot(t *testing.T, ctx context.Context, name, what string) {
	t.Helper()
	shot := artifact(t, name)
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatalf("write %s: %v", shot, err)
	}
	t.Logf("screenshot of %s: %s", what, shot)
}
