package httpx

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

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
}

// NewRouter returns a chi router with the middleware every service uses, in
// this order: Trace, Instrument, Recover, ValidInput. It already serves GET /healthz,
// GET /readyz and GET /metrics, and answers unknown routes and methods with
// 404 and 405 problems. Services add their routes to it (middleware of their
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
	health := o.Health
	if health == nil {
		health = NewHealth(o.Logger, 0)
	}

	r := chi.NewRouter()
	r.Use(Trace(o.TracerProvider, o.Propagator), instrument, Recover(o.Logger), ValidInput)
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
	r.Method(http.MethodGet, "/healthz", health.Live())
	r.Method(http.MethodGet, "/readyz", health.Ready())
	if o.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", o.Metrics)
	}
	return r, nil
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
