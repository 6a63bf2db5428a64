package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
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
