package httpx

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// Every request of the router is bounded; a stream's handler lifts the
// bound and keeps what the request gathered on its way.
func TestRequestsAreBounded(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		timeout time.Duration
		want    time.Duration // 0: no deadline
	}{
		{"default", 0, DefaultRequestTimeout},
		{"configured", 3 * time.Second, 3 * time.Second},
		{"off", -1, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newTestRouterWith(t, func(o *RouterOptions) { o.RequestTimeout = tt.timeout })
			var left, unboundedLeft time.Duration
			var bounded, unboundedHas bool
			var route string
			tr.mux.With(func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, "user")))
				})
			}).Get("/stream", func(w http.ResponseWriter, r *http.Request) {
				var d time.Time
				d, bounded = r.Context().Deadline()
				left = time.Until(d)
				u := Unbounded(r)
				d, unboundedHas = u.Context().Deadline()
				unboundedLeft = time.Until(d)
				if u.Context().Value(userKey{}) != "user" {
					t.Error("Unbounded lost a value of the request's context")
				}
				route = routePattern(u)
				w.WriteHeader(http.StatusNoContent)
			})
			rec := httptest.NewRecorder()
			tr.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/stream", nil))
			if rec.Code != http.StatusNoContent {
				t.Fatalf("status %d", rec.Code)
			}
			if bounded != (tt.want > 0) || bounded && (left > tt.want || left < tt.want-time.Second) {
				t.Errorf("deadline in %v (bounded %v), want in %v", left, bounded, tt.want)
			}
			if unboundedHas {
				t.Errorf("Unbounded still has a deadline, in %v", unboundedLeft)
			}
			if route != "/stream" {
				t.Errorf("route after Unbounded = %q", route)
			}
		})
	}
}

// A request that outlasts its bound has its work cancelled and gets the
// 503 with Retry-After that tells the client to try again.
func TestRequestOutOfTimeIs503(t *testing.T) {
	t.Parallel()
	tr := newTestRouterWith(t, func(o *RouterOptions) { o.RequestTimeout = 50 * time.Millisecond })
	tr.mux.Post("/slow", func(w http.ResponseWriter, r *http.Request) {
		// A statement on a database that no longer answers.
		<-r.Context().Done()
		WriteError(w, r, nil, r.Context().Err(), nil)
	})
	start := time.Now()
	rec := httptest.NewRecorder()
	tr.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/slow", nil))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("answered after %v", took)
	}
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	if p := mustProblem(t, rec); p.Type != TypeUnavailable {
		t.Errorf("problem %+v", p)
	}
}

// Unbounded leaves a request that was never bounded alone.
func TestUnboundedWithoutDeadline(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	if Unbounded(r) != r {
		t.Error("Unbounded copied a request Deadline never saw")
	}
}
