package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
)

func TestLiveAlwaysOK(t *testing.T) {
	t.Parallel()
	h := NewHealth(nil, 0)
	h.Add("db", func(context.Context) error { return errors.New("down") })
	h.SetDraining()
	rec := httptest.NewRecorder()
	h.Live().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/healthz = %d, want 200 even with failing checks and draining", rec.Code)
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	h := NewHealth(nil, 50*time.Millisecond)
	h.ttl = 0 // every request runs the checks; TestReadyCaches covers the cache
	var dbErr error
	h.Add("postgres", func(context.Context) error { return dbErr })
	h.Add("rabbitmq", func(context.Context) error { return nil })

	rec := serveReady(h)
	if rec.Code != http.StatusOK {
		t.Fatalf("healthy: status %d, body %s", rec.Code, rec.Body)
	}
	var ok struct {
		Status string
		Checks map[string]string
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &ok); err != nil {
		t.Fatal(err)
	}
	if ok.Status != "ok" || ok.Checks["postgres"] != "ok" || ok.Checks["rabbitmq"] != "ok" {
		t.Errorf("healthy body = %s", rec.Body)
	}

	dbErr = errors.New("dial tcp 10.0.0.5:5432: connection refused")
	rec = serveReady(h)
	p := mustReadinessProblem(t, rec)
	if p.Detail != "failing checks: postgres" || p.Checks["postgres"] != "fail" || p.Checks["rabbitmq"] != "ok" {
		t.Errorf("failing body = %s", rec.Body)
	}

	dbErr = nil
	h.SetDraining()
	rec = serveReady(h)
	if p := mustReadinessProblem(t, rec); p.Detail != "service is shutting down" {
		t.Errorf("draining detail = %q", p.Detail)
	}
}

func TestReadyTimesOutStuckCheck(t *testing.T) {
	t.Parallel()
	h := NewHealth(nil, 50*time.Millisecond)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.Add("stuck", func(context.Context) error { <-release; return nil }) // ignores ctx
	h.Add("panics", func(context.Context) error { panic("boom") })

	start := time.Now()
	rec := serveReady(h)
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("probe took %v despite a 50ms check timeout", elapsed)
	}
	p := mustReadinessProblem(t, rec)
	if p.Checks["stuck"] != "timeout" || p.Checks["panics"] != "fail" {
		t.Errorf("checks = %v, want stuck=timeout panics=fail", p.Checks)
	}
}

func serveReady(h *Health) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.Ready().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	return rec
}

func mustReadinessProblem(tb testing.TB, rec *httptest.ResponseRecorder) notReady {
	tb.Helper()
	if rec.Code != http.StatusServiceUnavailable {
		tb.Fatalf("status %d, want 503; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != ProblemContentType {
		tb.Fatalf("Content-Type %q", ct)
	}
	var p notReady
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		tb.Fatal(err)
	}
	if p.Type != TypeNotReady || p.Status != 503 {
		tb.Errorf("problem %+v", p)
	}
	return p
}

// TestReadyCaches floods /readyz: the checks run once for all of it, a
// failure is reused too, and the next request after the window sees the
// recovery. Draining is not cached.
func TestReadyCaches(t *testing.T) {
	t.Parallel()
	h := NewHealth(nil, 0)
	h.ttl = time.Hour // the window outlasts the flood, however slow the machine
	var runs atomic.Int32
	release := make(chan struct{})
	h.Add("postgres", func(context.Context) error {
		runs.Add(1)
		<-release // hold the first run, so that the flood finds it in flight
		return nil
	})

	const n = 50
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() { codes <- serveReady(h).Code })
	}
	poll.Until(t, 5*time.Second, "the first check to start", func() bool { return runs.Load() > 0 })
	close(release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("status %d, want 200", code)
		}
	}
	// Requests after the flight, within the window, use its result.
	for range n {
		if code := serveReady(h).Code; code != http.StatusOK {
			t.Errorf("cached status %d, want 200", code)
		}
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("%d concurrent and %d later /readyz ran the checks %d times, want once", n, n, got)
	}

	h.SetDraining()
	if p := mustReadinessProblem(t, serveReady(h)); p.Detail != "service is shutting down" {
		t.Errorf("draining with a cached success: detail %q, want the shutdown at once", p.Detail)
	}
}

func TestReadyCacheExpires(t *testing.T) {
	t.Parallel()
	h := NewHealth(nil, 0)
	const window = 100 * time.Millisecond
	h.ttl = window
	var (
		runs   atomic.Int32
		broken atomic.Bool
	)
	broken.Store(true)
	h.Add("postgres", func(context.Context) error {
		runs.Add(1)
		if broken.Load() {
			return errors.New("connection refused")
		}
		return nil
	})

	if code := serveReady(h).Code; code != http.StatusServiceUnavailable {
		t.Fatalf("failing check: status %d, want 503", code)
	}
	broken.Store(false)
	start := time.Now()
	if code := serveReady(h).Code; code != http.StatusServiceUnavailable && time.Since(start) < window {
		t.Errorf("within the window: status %d, want the cached 503", code)
	}
	poll.Until(t, 5*time.Second, "/readyz to recover after the window", func() bool {
		return serveReady(h).Code == http.StatusOK
	})
	if elapsed := time.Since(start); elapsed < window/2 {
		t.Errorf("recovered after %v, before the %v window", elapsed, window)
	}
	if got := runs.Load(); got < 2 {
		t.Errorf("checks ran %d times, want again after the window", got)
	}
}
