package httpx

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })

// headerKey keys requests by their X-Test-Key header.
func headerKey(r *http.Request) string { return r.Header.Get("X-Test-Key") }

func newTestRequest(key, remoteAddr string) *http.Request {
	req := httptest.NewRequest(http.MethodGet, "/v1/orders", nil)
	if key != "" {
		req.Header.Set("X-Test-Key", key)
	}
	if remoteAddr != "" {
		req.RemoteAddr = remoteAddr
	}
	return req
}

func serveRL(h http.Handler, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	const limit = 5
	h := RateLimit(limit, headerKey)(okHandler)

	for i := range limit {
		if rec := serveRL(h, newTestRequest("alice", "")); rec.Code != http.StatusNoContent {
			t.Fatalf("request %d of %d: status %d, want 204", i+1, limit, rec.Code)
		}
	}
	rec := serveRL(h, newTestRequest("alice", ""))
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("request %d: status %d, want 429", limit+1, rec.Code)
	}
	if s, err := strconv.Atoi(rec.Header().Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After = %q, want whole seconds ≥ 1", rec.Header().Get("Retry-After"))
	}
	p := mustProblem(t, rec)
	if p.Type != TypeRateLimited || p.Type != ProblemType("rate-limited") {
		t.Errorf("type = %q, want %q", p.Type, TypeRateLimited)
	}
	if p.Detail == "" || p.Instance != "/v1/orders" {
		t.Errorf("problem = %+v, want a detail and the path as instance", p)
	}

	// Another key has its own budget, and alice's excess did not use it.
	for i := range limit {
		if rec := serveRL(h, newTestRequest("bob", "")); rec.Code != http.StatusNoContent {
			t.Fatalf("bob's request %d: status %d, want 204", i+1, rec.Code)
		}
	}
	if rec := serveRL(h, newTestRequest("bob", "")); rec.Code != http.StatusTooManyRequests {
		t.Errorf("bob's request %d: status %d, want 429", limit+1, rec.Code)
	}
}

func TestRateLimitSeparateMiddlewaresCountSeparately(t *testing.T) {
	t.Parallel()
	a := RateLimit(1, headerKey)(okHandler)
	b := RateLimit(1, headerKey)(okHandler)
	if rec := serveRL(a, newTestRequest("k", "")); rec.Code != http.StatusNoContent {
		t.Fatalf("first request through a: %d", rec.Code)
	}
	if rec := serveRL(b, newTestRequest("k", "")); rec.Code != http.StatusNoContent {
		t.Errorf("first request through b: %d, want 204 (limiters must not share counters)", rec.Code)
	}
}

func TestRateLimitConcurrent(t *testing.T) {
	t.Parallel()
	const limit, clients = 20, 60
	h := RateLimit(limit, headerKey)(okHandler)
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		passed, denied int
	)
	for range clients {
		wg.Go(func() {
			code := serveRL(h, newTestRequest("crowd", "")).Code
			mu.Lock()
			defer mu.Unlock()
			switch code {
			case http.StatusNoContent:
				passed++
			case http.StatusTooManyRequests:
				denied++
			}
		})
	}
	wg.Wait()
	// One extra may pass if the burst happens to straddle a window
	// boundary, where the sliding window's estimate rounds down.
	if passed < limit || passed > limit+1 || passed+denied != clients {
		t.Errorf("passed %d, denied %d; want %d (or one more) and the rest", passed, denied, limit)
	}
}

func TestRateLimitDefaultsToCallerKey(t *testing.T) {
	t.Parallel()
	h := RateLimit(1, nil)(okHandler)
	if rec := serveRL(h, newTestRequest("", "192.0.2.1:1000")); rec.Code != http.StatusNoContent {
		t.Fatalf("first request: %d", rec.Code)
	}
	// Same address, another port and a forged X-Forwarded-For: same caller.
	req := newTestRequest("", "192.0.2.1:2000")
	req.Header.Set("X-Forwarded-For", "203.0.113.50")
	if rec := serveRL(h, req); rec.Code != http.StatusTooManyRequests {
		t.Errorf("second request from the same address: %d, want 429", rec.Code)
	}
	if rec := serveRL(h, newTestRequest("", "192.0.2.2:1000")); rec.Code != http.StatusNoContent {
		t.Errorf("request from another address: %d, want 204", rec.Code)
	}
}

func TestRateLimitOff(t *testing.T) {
	t.Parallel()
	h := RateLimit(0, headerKey)(okHandler)
	for i := range 50 {
		if rec := serveRL(h, newTestRequest("k", "")); rec.Code != http.StatusNoContent {
			t.Fatalf("request %d with limiting off: %d", i+1, rec.Code)
		}
	}
}

func TestCallerKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		remoteAddr string
		xff        string
		want       string
	}{
		{remoteAddr: "192.0.2.1:5555", want: "ip:192.0.2.1"},
		{remoteAddr: "192.0.2.1:5555", xff: "203.0.113.9", want: "ip:192.0.2.1"},
		{remoteAddr: "[2001:db8:1:2:3:4:5:6]:443", want: "ip:2001:db8:1:2::"},
		{remoteAddr: "[2001:db8:1:2:ffff::1]:443", want: "ip:2001:db8:1:2::"},
		{remoteAddr: "[::ffff:192.0.2.1]:80", want: "ip:192.0.2.1"},
		{remoteAddr: "192.0.2.1", want: "ip:192.0.2.1"},
		{remoteAddr: "@", want: "ip:@"},
	}
	for _, tt := range tests {
		req := newTestRequest("", tt.remoteAddr)
		if tt.xff != "" {
			req.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := CallerKey(req); got != tt.want {
			t.Errorf("CallerKey(RemoteAddr %q, X-Forwarded-For %q) = %q, want %q", tt.remoteAddr, tt.xff, got, tt.want)
		}
	}
}
