package boot_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// newTestConfig returns a config for a service on a fresh database and vhost,
// listening on a free port, with the settings extra added.
func newTestConfig(tb testing.TB, extra ...string) boot.Config {
	tb.Helper()
	_, dbURL := pgtest.NewDB(tb)
	cfg, err := boot.LoadConfig(append([]string{
		"ORDERLY_ENV=development",
		"DATABASE_URL=" + dbURL,
		"AMQP_URL=" + rabbittest.NewVhost(tb),
		"HTTP_ADDR=127.0.0.1:0",
		"SHUTDOWN_TIMEOUT=10s",
		"SHUTDOWN_DELAY=200ms",
		"LOG_LEVEL=warn",
	}, extra...), "boottest", ":0")
	if err != nil {
		tb.Fatalf("LoadConfig: %v", err)
	}
	return cfg
}

// mustStart starts a service and closes it when the test ends.
func mustStart(tb testing.TB, cfg boot.Config) *boot.Service {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc, err := boot.Start(ctx, cfg, boot.Messaging)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { _ = svc.Close() })
	return svc
}

// running is a service whose Run goes on in the background.
type running struct {
	tb     testing.TB
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// mustRun runs svc until stop, or the end of the test, and fails the test
// unless Run then returns nil in time.
func mustRun(tb testing.TB, svc *boot.Service) *running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{tb: tb, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	tb.Cleanup(r.stop)
	return r
}

// shutdown asks Run to stop, as SIGTERM does, without waiting.
func (r *running) shutdown() { r.cancel() }

// stop asks Run to stop and waits for its clean return.
func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			if err != nil {
				r.tb.Errorf("Run = %v, want nil after a clean shutdown", err)
			}
		case <-time.After(15 * time.Second):
			r.tb.Error("Run did not return within the shutdown timeout")
		}
	})
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url) //nolint:gosec // test URL on localhost
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// clock records the order in which things happened.
type clock struct {
	mu     sync.Mutex
	events []string
}

func (c *clock) mark(e string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.events = append(c.events, e)
}

func (c *clock) order() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.events, " → ")
}

func TestRunServesHealthAndDrainsInOrder(t *testing.T) {
	t.Parallel()
	svc := mustStart(t, newTestConfig(t))

	var seen clock
	started := make(chan struct{})
	svc.Router.Get("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(500 * time.Millisecond)
		seen.mark("request done")
		_, _ = io.WriteString(w, "done")
	})
	svc.Go("worker", func(ctx context.Context) error {
		<-ctx.Done()
		seen.mark("worker cancelled")
		return nil
	})
	svc.Publishes("boottest.events")

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()

	poll.Until(t, 10*time.Second, "the server to listen", func() bool { return svc.Addr() != "" })
	base := "http://" + svc.Addr()
	poll.Ready(t, 10*time.Second, base, nil)
	code, body, err := get(base + "/readyz")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /readyz = %d, %v", code, err)
	}
	for _, check := range []string{`"postgres":"ok"`, `"rabbitmq":"ok"`, `"migrations":"ok"`} {
		if !strings.Contains(body, check) {
			t.Errorf("/readyz body %s lacks %s", body, check)
		}
	}
	if code, body, err := get(base + "/metrics"); err != nil || code != http.StatusOK || !strings.Contains(body, "# TYPE go_goroutines gauge") {
		t.Errorf("GET /metrics = %d, %v, body starts %.80q", code, err, body)
	}

	// A request in flight when the signal arrives completes, and the
	// workers are cancelled only after it did.
	slow := make(chan error, 1)
	go func() {
		code, body, err := get(base + "/slow")
		if err == nil && (code != http.StatusOK || body != "done") {
			err = errors.New("unexpected response " + body)
		}
		slow <- err
	}()
	<-started
	stop()
	// While draining, readiness is off but the server still answers.
	poll.Until(t, 5*time.Second, "/readyz to answer 503 while draining", func() bool {
		code, _, err := get(base + "/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})

	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run = %v, want nil after a clean shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within the shutdown timeout")
	}
	if err := <-slow; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if got, want := seen.order(), "request done → worker cancelled"; got != want {
		t.Errorf("shutdown order = %s, want %s", got, want)
	}
	if _, err := net.DialTimeout("tcp", svc.Addr(), time.Second); err == nil {
		t.Error("server still accepts connections after Run returned")
	}
	if err := svc.Pool.Ping(context.Background()); err == nil {
		t.Error("pool still usable after Run returned")
	}
	if svc.Rabbit.Connected() {
		t.Error("broker connection still open after Run returned")
	}
}

func TestRunStopsWhenAPartFails(t *testing.T) {
	t.Parallel()
	svc := mustStart(t, newTestConfig(t))
	boom := errors.New("boom")
	svc.Go("failing", func(ctx context.Context) error {
		select {
		case <-time.After(200 * time.Millisecond):
			return boom
		case <-ctx.Done():
			return nil
		}
	})
	var cancelled sync.WaitGroup
	cancelled.Add(1)
	svc.Go("healthy", func(ctx context.Context) error {
		<-ctx.Done()
		cancelled.Done()
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := svc.Run(ctx)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "failing") {
		t.Fatalf("Run = %v, want the failing part's error", err)
	}
	cancelled.Wait()
	if ctx.Err() != nil {
		t.Error("Run waited for its context instead of stopping on the failure")
	}
}

func TestStartFailsClearlyWhenADependencyIsUnreachable(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: bind one, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()

	tests := []struct {
		name    string
		environ []string
		want    string
	}{
		{"postgres", []string{"DATABASE_URL=postgres://postgres:pw@" + closed + "/x"}, "postgres at postgres://postgres:xxxxx@" + closed},
		{"rabbitmq", []string{"AMQP_URL=amqp://guest:guest@" + closed + "/", "CONNECT_TIMEOUT=1s"}, "rabbitmq at amqp://guest:xxxxx@" + closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			environ := tt.environ
			if tt.name == "rabbitmq" {
				_, dbURL := pgtest.NewDB(t)
				environ = append(environ, "DATABASE_URL="+dbURL)
			}
			cfg, err := boot.LoadConfig(append(environ, "ORDERLY_ENV=development", "LOG_LEVEL=error"), "boottest", ":0")
			if err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			_, err = boot.Start(context.Background(), cfg, boot.Messaging)
			if err == nil {
				t.Fatal("Start succeeded against a closed port")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error = %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), ":guest@") {
				t.Errorf("Start error leaks a password: %q", err)
			}
			if took := time.Since(begin); took > cfg.ConnectTimeout+5*time.Second {
				t.Errorf("Start took %v, want it bounded by CONNECT_TIMEOUT %v", took, cfg.ConnectTimeout)
			}
		})
	}
}

// TestAdminListener runs a service with ADMIN_ADDR: /readyz and /metrics
// move off the public listener onto the admin one, /healthz is on both,
// and the admin /readyz turns 503 for the whole shutdown delay.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	svc := mustStart(t, newTestConfig(t, "ADMIN_ADDR=127.0.0.1:0", "SHUTDOWN_DELAY=1s"))
	run := mustRun(t, svc)
	poll.Until(t, 10*time.Second, "the listeners", func() bool { return svc.Addr() != "" && svc.AdminURL() != "" })
	public, admin := svc.URL(), svc.AdminURL()
	if public == admin {
		t.Fatalf("admin listener is the public one (%s)", public)
	}
	if got, want := svc.ReadyURL(), admin+"/readyz"; got != want {
		t.Errorf("ReadyURL = %s, want %s", got, want)
	}
	poll.Ready(t, 10*time.Second, admin, nil)
	for _, c := range []struct {
		url  string
		want int
	}{
		{public + "/healthz", http.StatusOK},
		{public + "/readyz", http.StatusNotFound},
		{public + "/metrics", http.StatusNotFound},
		{admin + "/healthz", http.StatusOK},
		{admin + "/readyz", http.StatusOK},
		{admin + "/metrics", http.StatusOK},
		{admin + "/v1/anything", http.StatusNotFound},
	} {
		if code, body, err := get(c.url); err != nil || code != c.want {
			t.Errorf("GET %s = %d, %v, want %d (body %.80q)", c.url, code, err, c.want, body)
		}
	}
	if _, body, _ := get(admin + "/metrics"); !strings.Contains(body, "# TYPE go_goroutines gauge") {
		t.Errorf("admin /metrics body starts %.80q, want Prometheus text", body)
	}

	run.shutdown()
	// Draining: the admin /readyz says so while the public listener still
	// serves.
	poll.Until(t, 5*time.Second, "admin /readyz to answer 503 while draining", func() bool {
		code, _, err := get(admin + "/readyz")
		return err == nil && code == http.StatusServiceUnavailable
	})
	if code, _, err := get(public + "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("public /healthz during the shutdown delay = %d, %v; want 200", code, err)
	}
	run.stop()
	if _, err := net.DialTimeout("tcp", strings.TrimPrefix(admin, "http://"), time.Second); err == nil {
		t.Error("admin listener still accepts connections after Run returned")
	}
}

// TestNoAdminListener checks that without ADMIN_ADDR everything stays on
// the public listener.
func TestNoAdminListener(t *testing.T) {
	t.Parallel()
	svc := mustStart(t, newTestConfig(t))
	mustRun(t, svc)
	poll.Until(t, 10*time.Second, "the server to listen", func() bool { return svc.Addr() != "" })
	if svc.AdminURL() != "" || svc.ReadyURL() != svc.URL()+"/readyz" {
		t.Errorf("AdminURL %q, ReadyURL %q without ADMIN_ADDR; want none and the public /readyz", svc.AdminURL(), svc.ReadyURL())
	}
	poll.Ready(t, 10*time.Second, svc.URL(), nil)
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _, err := get(svc.URL() + path); err != nil || code != http.StatusOK {
			t.Errorf("public GET %s = %d, %v; want 200", path, code, err)
		}
	}
}

// TestAdminListenerPortTaken checks that a busy ADMIN_ADDR fails Run with
// an error naming the admin listener rather than serving half the service.
func TestAdminListenerPortTaken(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	svc := mustStart(t, newTestConfig(t, "ADMIN_ADDR="+busy.Addr().String()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.Run(ctx); err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Errorf("Run with a busy ADMIN_ADDR = %v, want an admin listener error", err)
	}
}
