package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// DefaultCheckTimeout bounds each readiness check. It stays under the
// one-second default probe timeout of Kubernetes, so that a hung dependency
// reads as "not ready" rather than as a probe that timed out.
const DefaultCheckTimeout = 800 * time.Millisecond

// ReadyCacheTTL is how long /readyz reuses the result of its checks. Probes
// come every few seconds, so this changes nothing for Kubernetes; it keeps
// a flood of /readyz (from anybody who can reach it) from turning into a
// flood of database pings.
const ReadyCacheTTL = time.Second

// Health serves liveness and readiness. Services Add one check per dependency
// (database, broker, migrations) and call SetDraining first thing on SIGTERM,
// so load balancers stop sending traffic before the server drains.
//
// The zero value is not usable; create one with NewHealth. A Health is safe
// for concurrent use.
type Health struct {
	logger   *slog.Logger
	timeout  time.Duration
	draining atomic.Bool

	mu     sync.Mutex
	checks []namedCheck

	// ttl is ReadyCacheTTL; tests shorten it. Concurrent requests that
	// miss the cache share one run of the checks (flight).
	ttl      time.Duration
	flight   singleflight.Group
	cacheMu  sync.Mutex
	cached   map[string]string
	cachedAt time.Time
}

type namedCheck struct {
	name  string
	check func(context.Context) error
}

// NewHealth returns a Health whose checks each get timeout (DefaultCheckTimeout
// when timeout <= 0). Failing checks are logged to logger at warn level with
// their error, which the response body leaves out; logger may be nil.
func NewHealth(logger *slog.Logger, timeout time.Duration) *Health {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	return &Health{logger: logger, timeout: timeout, ttl: ReadyCacheTTL}
}

// Add registers a readiness check under name. The check gets a context with
// the check timeout and reports trouble with a non-nil error. Checks run
// concurrently, at most once per ReadyCacheTTL however many /readyz
// requests come, and should be cheap (a ping, a channel state).
func (h *Health) Add(name string, check func(ctx context.Context) error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.checks = append(h.checks, namedCheck{name: name, check: check})
}

// SetDraining makes /readyz answer 503 from now on, without running checks.
// Call it before shutting the server down, and keep serving for a moment so
// that load balancers notice. It cannot be undone.
func (h *Health) SetDraining() { h.draining.Store(true) }

// Draining reports whether SetDraining has been called.
func (h *Health) Draining() bool { return h.draining.Load() }

// Live returns the GET /healthz handler: 200 for as long as the process can
// answer HTTP at all. It deliberately checks no dependency, so an outage of
// Postgres or RabbitMQ never makes Kubernetes restart every replica.
func (h *Health) Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, healthStatus{Status: "ok"})
	})
}

// healthStatus is the body of a successful probe.
type healthStatus struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// notReady is the problem body of a failed readiness probe; Checks says which
// dependency failed without exposing its error.
type notReady struct {
	Problem
	Checks map[string]string `json:"checks,omitempty"`
}

// Ready returns the GET /readyz handler. It runs every check concurrently and
// answers 200 {"status":"ok","checks":{"name":"ok",…}} when all pass, or a 503
// problem naming the failing checks ("fail" or "timeout" per check) when any
// fails or the service is draining. The checks' results are reused for
// ReadyCacheTTL, passing or failing; draining is never cached, so it shows
// on the next request.
func (h *Health) Ready() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.Draining() {
			WriteProblem(w, r, http.StatusServiceUnavailable, TypeNotReady, "Service not ready", "service is shutting down")
			return
		}
		results := h.results(r.Context())
		var failing []string
		for name, res := range results {
			if res != "ok" {
				failing = append(failing, name)
			}
		}
		if len(failing) == 0 {
			WriteJSON(w, http.StatusOK, healthStatus{Status: "ok", Checks: results})
			return
		}
		sort.Strings(failing)
		body, _ := json.Marshal(notReady{
			Problem: Problem{
				Type:     TypeNotReady,
				Title:    "Service not ready",
				Status:   http.StatusServiceUnavailable,
				Detail:   "failing checks: " + strings.Join(failing, ", "),
				Instance: r.URL.Path,
			},
			Checks: results,
		})
		WriteBody(w, http.StatusServiceUnavailable, ProblemContentType, append(body, '\n'))
	})
}

// results returns the checks' results: the cached ones while they are
// younger than ttl, else those of a fresh run shared with every request
// that arrives while it is going. The run does not end with the request
// that started it (a client hanging up would fail the others'); each check
// is bounded by the check timeout instead.
func (h *Health) results(ctx context.Context) map[string]string {
	if res, ok := h.fresh(); ok {
		return res
	}
	v, _, _ := h.flight.Do("ready", func() (any, error) {
		// A run that finished between fresh and Do has just been
		// stored: reuse it rather than run again.
		if res, ok := h.fresh(); ok {
			return res, nil
		}
		res := h.run(context.WithoutCancel(ctx))
		h.cacheMu.Lock()
		h.cached, h.cachedAt = res, time.Now()
		h.cacheMu.Unlock()
		return res, nil
	})
	return v.(map[string]string)
}

// fresh returns the cached results if they are younger than ttl.
func (h *Health) fresh() (map[string]string, bool) {
	h.cacheMu.Lock()
	defer h.cacheMu.Unlock()
	if h.cached == nil || time.Since(h.cachedAt) >= h.ttl {
		return nil, false
	}
	return h.cached, true
}

// run executes all checks concurrently and returns "ok", "fail" or "timeout"
// per check name.
func (h *Health) run(ctx context.Context) map[string]string {
	h.mu.Lock()
	checks := append([]namedCheck(nil), h.checks...)
	h.mu.Unlock()

	results := make(map[string]string, len(checks))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, c := range checks {
		wg.Go(func() {
			res := h.runOne(ctx, c)
			mu.Lock()
			results[c.name] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	return results
}

func (h *Health) runOne(ctx context.Context, c namedCheck) (result string) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				errc <- errors.New("check panicked")
			}
		}()
		errc <- c.check(ctx)
	}()
	// A check that ignores its context must not hold the probe hostage.
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err == nil {
		return "ok"
	}
	result = "fail"
	if errors.Is(err, context.DeadlineExceeded) {
		result = "timeout"
	}
	if h.logger != nil {
		h.logger.WarnContext(ctx, "readiness check failed", "check", c.name, "err", err)
	}
	return result
}
