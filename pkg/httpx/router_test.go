package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/telemetry"
)

// syncBuffer lets the test read logs written by handler goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the JSON log records written so far.
func (s *syncBuffer) lines(tb testing.TB) []map[string]any {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			tb.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

type userKey struct{}

type testRouter struct {
	mux    *chi.Mux
	logs   *syncBuffer
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	health *Health
}

func newTestRouter(tb testing.TB) *testRouter {
	tb.Helper()
	return newTestRouterWith(tb, nil)
}

// newTestRouterWith is newTestRouter with options changed by opt, when not
// nil.
func newTestRouterWith(tb testing.TB, opt func(*RouterOptions)) *testRouter {
	tb.Helper()
	logs := &syncBuffer{}
	logger, err := telemetry.NewLogger(logs, "test", "debug")
	if err != nil {
		tb.Fatal(err)
	}
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	health := NewHealth(logger, 0)
	o := RouterOptions{
		Logger:         logger,
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		Propagator:     propagation.TraceContext{},
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		Metrics:        http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("metrics here\n")) }),
		Health:         health,
	}
	if opt != nil {
		opt(&o)
	}
	mux, err := NewRouter(o)
	if err != nil {
		tb.Fatalf("NewRouter: %v", err)
	}
	mux.Route("/v1/orders", func(r chi.Router) {
		// A sub-router with its own middleware copies the request; the
		// route must still come out in full.
		r.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, "user")))
			})
		})
		r.Get("/{id}", func(w http.ResponseWriter, r *http.Request) {
			WriteJSON(w, http.StatusOK, map[string]string{"id": chi.URLParam(r, "id")})
		})
		r.Post("/{id}/boom", func(w http.ResponseWriter, r *http.Request) { panic("nil map write in handler") })
	})
	return &testRouter{mux: mux, logs: logs, spans: spans, reader: reader, health: health}
}

func (tr *testRouter) do(method, target string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	tr.mux.ServeHTTP(rec, req)
	return rec
}

func TestRouterMountsOperationalEndpoints(t *testing.T) {
	t.Parallel()
	tr := newTestRouter(t)
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		if rec := tr.do(http.MethodGet, path, nil); rec.Code != want {
			t.Errorf("GET %s = %d, want %d", path, rec.Code, want)
		}
	}
	tr.health.ttl = 0 // the new check counts at once; TestReadyCaches covers the cache
	tr.health.Add("broker", func(context.Context) error { return context.Canceled })
	if rec := tr.do(http.MethodGet, "/readyz", nil); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with failing check = %d, want 503", rec.Code)
	}
	if n := len(tr.spans.Ended()); n != 0 {
		t.Errorf("probes produced %d spans, want none", n)
	}
}

func TestRouterNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	tr := newTestRouter(t)

	rec := tr.do(http.MethodGet, "/nope", nil)
	if p := mustProblem(t, rec); rec.Code != 404 || p.Type != TypeNotFound {
		t.Errorf("GET /nope = %d %+v", rec.Code, p)
	}

	rec = tr.do(http.MethodDelete, "/v1/orders/42", nil)
	if p := mustProblem(t, rec); rec.Code != 405 || p.Type != TypeMethodNotAllowed {
		t.Errorf("DELETE = %d %+v", rec.Code, p)
	}
	if allow := rec.Header().Get("Allow"); allow != "GET" {
		t.Errorf("Allow = %q, want GET", allow)
	}
}

func TestRouterRecoversPanics(t *testing.T) {
	t.Parallel()
	tr := newTestRouter(t)
	rec := tr.do(http.MethodPost, "/v1/orders/42/boom", nil)
	p := mustProblem(t, rec)
	if rec.Code != 500 || p.Detail != "internal error" || strings.Contains(rec.Body.String(), "nil map") {
		t.Errorf("panic answered %d %s", rec.Code, rec.Body)
	}
	var sawPanic, sawRequest bool
	for _, l := range tr.logs.lines(t) {
		switch l["msg"] {
		case "handler panicked":
			sawPanic = strings.Contains(l["err"].(string), "nil map") && l["trace_id"] != nil
		case "http request":
			sawRequest = l["status"] == float64(500)
		}
	}
	if !sawPanic || !sawRequest {
		t.Errorf("logs lack the panic (with trace id) or the 500 request line: %v", tr.logs.lines(t))
	}
}

func TestRouterTracesLogsAndMeasures(t *testing.T) {
	t.Parallel()
	tr := newTestRouter(t)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	rec := tr.do(http.MethodGet, "/v1/orders/42", http.Header{
		"Traceparent": {"00-" + traceID + "-00f067aa0ba902b7-01"},
	})
	if rec.Code != http.StatusOK {
		t.Fatalf("GET = %d", rec.Code)
	}

	ended := tr.spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("got %d spans, want 1", len(ended))
	}
	span := ended[0]
	// A public endpoint: the caller's sampled traceparent starts no trace
	// of ours, it is only linked to.
	gotTraceID := span.SpanContext().TraceID().String()
	if gotTraceID == traceID || span.Parent().IsValid() {
		t.Errorf("span trace id %s, parent %v: want a new root, not the caller's %s", gotTraceID, span.Parent(), traceID)
	}
	if links := span.Links(); len(links) != 1 || links[0].SpanContext.TraceID().String() != traceID {
		t.Errorf("span links %+v, want one to the caller's trace %s", links, traceID)
	}
	if span.Name() != "GET /v1/orders/{id}" {
		t.Errorf("span name %q", span.Name())
	}

	var line map[string]any
	for _, l := range tr.logs.lines(t) {
		if l["msg"] == "http request" {
			line = l
		}
	}
	if line["trace_id"] != gotTraceID || line["route"] != "/v1/orders/{id}" || line["status"] != float64(200) || line["path"] != "/v1/orders/42" {
		t.Errorf("request log line = %v", line)
	}

	var rm metricdata.ResourceMetrics
	if err := tr.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.server.request.duration" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				route, _ := dp.Attributes.Value(attribute.Key("http.route"))
				status, _ := dp.Attributes.Value(attribute.Key("http.response.status_code"))
				if route.AsString() == "/v1/orders/{id}" && status.AsInt64() == 200 && dp.Count == 1 {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no duration data point for GET /v1/orders/{id} 200 in %+v", rm)
	}
}

// TestTraceDistrustsThePublic sends what an outsider could: a sampled
// traceparent and baggage. Neither may decide what we record or reach our
// handlers (and from them, our messages).
func TestTraceDistrustsThePublic(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	// Sample only what a trusted parent sampled, as an operator keeping
	// costs down would: a caller's sampled flag must not count as one.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0))))
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	var sawBaggage string
	var sawSpan trace.SpanContext
	h := Trace(tp, prop)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		sawBaggage = baggage.FromContext(r.Context()).String()
		sawSpan = trace.SpanContextFromContext(r.Context())
	}))
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := httptest.NewRequest(http.MethodGet, "/v1/orders", nil)
	req.Header.Set("Traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	req.Header.Set("Baggage", "tenant=evil,debug=true")
	h.ServeHTTP(httptest.NewRecorder(), req)

	if sawBaggage != "" {
		t.Errorf("handler saw the caller's baggage %q", sawBaggage)
	}
	if sawSpan.TraceID().String() == traceID {
		t.Errorf("handler runs in the caller's trace %s", traceID)
	}
	if sawSpan.IsSampled() || len(spans.Ended()) != 0 {
		t.Errorf("the caller's sampled flag decided: sampled %v, %d spans recorded", sawSpan.IsSampled(), len(spans.Ended()))
	}
}

func TestNewRouterNeedsLogger(t *testing.T) {
	t.Parallel()
	if _, err := NewRouter(RouterOptions{}); err == nil {
		t.Error("NewRouter without a logger returned no error")
	}
}
