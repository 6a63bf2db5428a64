package httpx

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// RouterOptions are what NewRouter needs from a service's telemetry setup.
// With pkg/telemetry they come straight from *telemetry.Telemetry.
type RouterOptions struct {
	// Logger receives request logs, panics and 5xx errors. Required.
	Logger *slog.Logger
	// TracerProvider and Propagator default to the OpenTelemetry globals.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// MeterProvider gets the request duration histogram; nil records
	// nothing.
	MeterProvider metric.MeterProvider
	// Metrics is served on GET /metrics; nil leaves the route out.
	Metrics http.Handler
	// Health backs /healthz and /readyz; nil serves both with no checks.
	Health *Health
	// TrustedProxies are the proxies whose X-Forwarded-For names the
	// client (ClientAddr, CallerKey, request logs and spans); the zero
	// value trusts nobody.
	TrustedProxies TrustedProxies
	// SeparateAdmin leaves GET /readyz and GET /metrics off the router,
	// for a service that serves them on an admin listener of their own
	// (NewAdminRouter); /healthz stays.
	SeparateAdmin bool
	// RequestTimeout bounds every request of NewRouter's (Deadline):
	// DefaultRequestTimeout when zero, none when negative.
	RequestTimeout time.Duration
}

// NewRouter returns a chi router with the middleware every service uses, in
// this order: TrustedProxies.Middleware, Deadline, Trace, Instrument,
// Recover, ValidInput. It already serves GET /healthz, GET /readyz and GET /metrics
// (only /healthz with SeparateAdmin), and answers unknown routes and methods
// with 404 and 405 problems. Services add their routes to it (middleware of their
// own, such as authentication, goes on a Group or With, since chi allows Use
// only before the first route).
//
// It returns an error when Logger is nil or the request histogram cannot be
// created.
func NewRouter(o RouterOptions) (*chi.Mux, error) {
	if o.Logger == nil {
		return nil, errors.New("httpx: NewRouter needs a Logger")
	}
	instrument, err := Instrument(o.Logger, o.MeterProvider)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	// The client address is resolved first, so that the span, the log
	// line and the rate limits all name the same client.
	timeout := o.RequestTimeout
	if timeout == 0 {
		timeout = DefaultRequestTimeout
	}
	// Deadline copies the request, so it comes before Trace: the span is
	// named after the route chi records on the request Trace passes on.
	r.Use(o.TrustedProxies.Middleware, Deadline(timeout), Trace(o.TracerProvider, o.Propagator), instrument, Recover(o.Logger), ValidInput)
	problemRoutes(r)
	mountOperational(r, o, !o.SeparateAdmin)
	return r, nil
}

// NewAdminRouter returns the router of a service's admin listener: GET
// /healthz, /readyz and /metrics (when Metrics is set), with the request
// metrics and log lines of Instrument, panics recovered, and 404 and 405
// problems. It is not traced and reads no X-Forwarded-For: only the
// cluster (kubelet, Prometheus) reaches it.
//
// It returns an error when Logger is nil or the request histogram cannot be
// created.
func NewAdminRouter(o RouterOptions) (*chi.Mux, error) {
	if o.Logger == nil {
		return nil, errors.New("httpx: NewAdminRouter needs a Logger")
	}
	instrument, err := Instrument(o.Logger, o.MeterProvider)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Use(instrument, Recover(o.Logger))
	problemRoutes(r)
	mountOperational(r, o, true)
	return r, nil
}

// mountOperational adds GET /healthz and, when all is set, GET /readyz and
// GET /metrics (if o.Metrics is set) to r.
func mountOperational(r chi.Router, o RouterOptions, all bool) {
	health := o.Health
	if health == nil {
		health = NewHealth(o.Logger, 0)
	}
	r.Method(http.MethodGet, "/healthz", health.Live())
	if !all {
		return
	}
	r.Method(http.MethodGet, "/readyz", health.Ready())
	if o.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", o.Metrics)
	}
}

// problemRoutes answers unknown routes and methods on r with 404 and 405
// problems.
func problemRoutes(r *chi.Mux) {
	r.NotFound(func(w http.ResponseWriter, req *http.Request) {
		WriteProblem(w, req, http.StatusNotFound, TypeNotFound, "Not found",
			"no route for "+req.Method+" "+req.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, req *http.Request) {
		// chi drops the Allow header once the handler is replaced, so
		// recompute it; RFC 9110 requires it on a 405.
		if allow := allowedMethods(r, req.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
		}
		WriteProblem(w, req, http.StatusMethodNotAllowed, TypeMethodNotAllowed, "Method not allowed",
			"method "+req.Method+" is not allowed on "+req.URL.Path)
	})
}

func allowedMethods(routes chi.Routes, path string) string {
	var allowed []string
	for _, m := range []string{
		http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions,
	} {
		if routes.Match(chi.NewRouteContext(), m, path) {
			allowed = append(allowed, m)
		}
	}
	return strings.Join(allowed, ", ")
}
