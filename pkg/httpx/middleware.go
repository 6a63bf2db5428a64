package httpx

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/felixge/httpsnoop"
	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// probePaths are hit every few seconds by Kubernetes and Prometheus; tracing
// them or logging them at info level would drown the real traffic.
var probePaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// Trace returns middleware that wraps each request in a server span named
// "METHOD /route/{pattern}" once chi has routed it. Probe and metrics
// endpoints are not traced. A nil tp or prop falls back to the
// OpenTelemetry globals.
//
// Every service's HTTP API faces the public internet, so a caller's
// traceparent and baggage are not trusted: each request starts a new root
// trace, which our sampler alone decides to record, linked to the caller's
// span context (if any) for whoever can correlate them; the caller's
// baggage is dropped rather than passed on to our messages.
func Trace(tp trace.TracerProvider, prop propagation.TextMapPropagator) func(http.Handler) http.Handler {
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	opts := []otelhttp.Option{
		otelhttp.WithPublicEndpointFn(func(*http.Request) bool { return true }),
		otelhttp.WithPropagators(publicPropagator{prop}),
		// Request metrics come from Instrument, which knows the full chi
		// route; otelhttp's own would duplicate them with a coarser route.
		otelhttp.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelhttp.WithFilter(func(r *http.Request) bool { return !probePaths[r.URL.Path] }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if route := routePattern(r); route != "" {
				return r.Method + " " + route
			}
			return r.Method
		}),
	}
	if tp != nil {
		opts = append(opts, otelhttp.WithTracerProvider(tp))
	}
	return otelhttp.NewMiddleware("http.server", opts...)
}

// publicPropagator extracts what a request from the public internet
// carries: its span context, which Trace only links to, and none of its
// baggage, which would otherwise ride along on every message the request
// causes.
type publicPropagator struct{ propagation.TextMapPropagator }

// Extract returns ctx with the carrier's span context and ctx's own
// baggage.
func (p publicPropagator) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	return baggage.ContextWithBaggage(p.TextMapPropagator.Extract(ctx, carrier), baggage.FromContext(ctx))
}

// routePattern returns the chi route that matched r, or "" before routing or
// when nothing matched. chi shares one route context across sub-routers, so
// this is the full pattern even for mounted routers.
func routePattern(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		return rctx.RoutePattern()
	}
	return ""
}

// Instrument returns middleware that, after each request, records its
// duration in the http.server.request.duration histogram (seconds; labels
// method, route and status code, exported to Prometheus as
// http_server_request_duration_seconds) and logs one line with method, path,
// route, client address (ClientAddr), status, bytes and duration. The line
// is at info level, debug for probes; trace ids come from the request
// context, so Trace must run first. The client address also replaces the
// server span's client.address.
// logger must not be nil; a nil mp records nothing.
//
// It returns an error when the histogram cannot be created.
func Instrument(logger *slog.Logger, mp metric.MeterProvider) (func(http.Handler) http.Handler, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	duration, err := mp.Meter("github.com/orderly/orderly/pkg/httpx").Float64Histogram(
		"http.server.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		// The OpenTelemetry semantic-convention buckets, tuned for latency
		// in seconds rather than the SDK's millisecond-oriented defaults.
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10),
	)
	if err != nil {
		return nil, fmt.Errorf("httpx: request duration histogram: %w", err)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			var (
				status  int
				written int64
			)
			ww := httpsnoop.Wrap(w, httpsnoop.Hooks{
				WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
					return func(code int) {
						if status == 0 || status < 200 {
							status = code
						}
						next(code)
					}
				},
				Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
					return func(b []byte) (int, error) {
						if status == 0 {
							status = http.StatusOK
						}
						n, err := next(b)
						written += int64(n)
						return n, err
					}
				},
				ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
					return func(src io.Reader) (int64, error) {
						if status == 0 {
							status = http.StatusOK
						}
						n, err := next(src)
						written += n
						return n, err
					}
				},
				Hijack: func(next httpsnoop.HijackFunc) httpsnoop.HijackFunc {
					return func() (net.Conn, *bufio.ReadWriter, error) {
						conn, rw, err := next()
						if err == nil && status == 0 {
							status = http.StatusSwitchingProtocols
						}
						return conn, rw, err
					}
				},
			})

			next.ServeHTTP(ww, r)

			if status == 0 {
				// The handler wrote nothing; net/http sends 200.
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			route := routePattern(r)
			ctx := r.Context()
			attrs := []attribute.KeyValue{
				attribute.String("http.request.method", methodLabel(r.Method)),
				attribute.Int("http.response.status_code", status),
			}
			span := trace.SpanFromContext(ctx)
			if route != "" {
				attrs = append(attrs, attribute.String("http.route", route))
				span.SetAttributes(attribute.String("http.route", route))
			}
			client := clientString(r)
			// otelhttp fills client.address from the leftmost
			// X-Forwarded-For entry, which any client can forge; the
			// resolved address replaces it.
			if client != "" {
				span.SetAttributes(attribute.String("client.address", client))
			}
			duration.Record(ctx, elapsed.Seconds(), metric.WithAttributes(attrs...))

			level := slog.LevelInfo
			if probePaths[r.URL.Path] && status < 400 {
				level = slog.LevelDebug
			}
			logger.LogAttrs(ctx, level, "http request",
				slog.String("method", r.Method),
				slog.String("path", r.URL.Path),
				slog.String("route", route),
				slog.String("client", client),
				slog.Int("status", status),
				slog.Int64("bytes", written),
				slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
			)
		})
	}, nil
}

// clientString is ClientAddr as a string, "" when RemoteAddr is not an IP
// address.
func clientString(r *http.Request) string {
	if a := ClientAddr(r); a.IsValid() {
		return a.String()
	}
	return ""
}

// knownMethods bounds the method label's cardinality, as the semantic
// conventions ask: anything else is reported as _OTHER.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodConnect: true,
	http.MethodOptions: true, http.MethodTrace: true,
}

func methodLabel(m string) string {
	if knownMethods[m] {
		return m
	}
	return "_OTHER"
}

// Recover returns middleware that turns a handler panic into a 500 problem
// (if the response has not started) with detail "internal error", and logs
// the panic value and stack at error level and records it on the span, so
// one bad request never takes the process down. http.ErrAbortHandler is
// passed through, since it is net/http's way to abort a response on purpose.
// logger must not be nil.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started := false
			ww := httpsnoop.Wrap(w, httpsnoop.Hooks{
				WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
					return func(code int) {
						if code >= 200 {
							started = true
						}
						next(code)
					}
				},
				Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
					return func(b []byte) (int, error) {
						started = true
						return next(b)
					}
				},
				ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
					return func(src io.Reader) (int64, error) {
						started = true
						return next(src)
					}
				},
				Hijack: func(next httpsnoop.HijackFunc) httpsnoop.HijackFunc {
					return func() (net.Conn, *bufio.ReadWriter, error) {
						started = true
						return next()
					}
				},
			})
			defer func() {
				p := recover()
				if p == nil {
					return
				}
				if err, ok := p.(error); ok && errors.Is(err, http.ErrAbortHandler) {
					panic(p)
				}
				ctx := r.Context()
				err := fmt.Errorf("panic: %v", p)
				span := trace.SpanFromContext(ctx)
				span.RecordError(err, trace.WithStackTrace(true))
				span.SetStatus(codes.Error, err.Error())
				logger.ErrorContext(ctx, "handler panicked",
					"err", err, "method", r.Method, "path", r.URL.Path, "stack", string(debug.Stack()))
				if !started {
					WriteProblem(w, r, http.StatusInternalServerError, TypeInternal,
						http.StatusText(http.StatusInternalServerError), "internal error")
				}
			}()
			next.ServeHTTP(ww, r)
		})
	}
}
