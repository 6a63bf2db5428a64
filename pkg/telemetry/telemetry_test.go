package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

func TestLoggerAddsTraceIDs(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger, err := NewLogger(&buf, "order", "debug")
	if err != nil {
		t.Fatalf("NewLogger: %v", err)
	}
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	defer span.End()

	logger.InfoContext(ctx, "placed", "order_id", "o-1")
	logger.Info("no context")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2:\n%s", len(lines), buf.String())
	}
	got := decodeLine(t, lines[0])
	want := map[string]string{
		"msg":      "placed",
		"service":  "order",
		"order_id": "o-1",
		"trace_id": span.SpanContext().TraceID().String(),
		"span_id":  span.SpanContext().SpanID().String(),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("line[%q] = %v, want %q", k, got[k], v)
		}
	}
	if plain := decodeLine(t, lines[1]); plain["trace_id"] != nil {
		t.Errorf("record without span got trace_id %v", plain["trace_id"])
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"", "debug", "INFO", "warn", "Warning", "error"} {
		if _, err := ParseLevel(ok); err != nil {
			t.Errorf("ParseLevel(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"verbose", "trace", "3"} {
		if _, err := ParseLevel(bad); err == nil {
			t.Errorf("ParseLevel(%q) = nil error, want one", bad)
		}
	}
}

func TestSetupRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no service":      {LogLevel: "info"},
		"bad level":       {Service: "order", LogLevel: "loud"},
		"endpoint scheme": {Service: "order", OTLPEndpoint: "otel-collector:4318"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, _, err := Setup(context.Background(), cfg); err == nil {
				t.Errorf("Setup(%+v) = nil error, want one", cfg)
			}
		})
	}
}

func TestTracesURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://collector:4318":       "http://collector:4318/v1/traces",
		"http://collector:4318/":      "http://collector:4318/v1/traces",
		"https://example.com/otlp":    "https://example.com/otlp/v1/traces",
		"https://example.com/otlp/":   "https://example.com/otlp/v1/traces",
		"http://127.0.0.1:4318?x=1":   "http://127.0.0.1:4318/v1/traces?x=1",
		"http://[::1]:4318/base/path": "http://[::1]:4318/base/path/v1/traces",
	} {
		got, err := tracesURL(in)
		if err != nil || got != want {
			t.Errorf("tracesURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestSetupTracesWithoutExporter(t *testing.T) {
	tel, shutdown := mustSetup(t, Config{Service: "order", Version: "test"})
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "op")
	span.End()
	if !span.SpanContext().IsValid() || !span.SpanContext().IsSampled() {
		t.Errorf("span context %+v: want valid and sampled", span.SpanContext())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

// TestSetupHonoursTheSampler: OTEL_TRACES_SAMPLER with a ratio (here 0)
// leaves an order's root unsampled, with a valid trace id for the logs and
// for propagation, and every later hop follows the root's decision, so an
// order is traced whole or not at all (docs/benchmarks.md, ADR 0015).
func TestSetupHonoursTheSampler(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0")
	tel, _ := mustSetup(t, Config{Service: "order"})
	tracer := tel.TracerProvider.Tracer("test")

	ctx, root := tracer.Start(context.Background(), "POST /v1/orders")
	defer root.End()
	if sc := root.SpanContext(); !sc.IsValid() || sc.IsSampled() {
		t.Errorf("root span context %+v: want a valid trace id, not sampled", sc)
	}
	_, child := tracer.Start(ctx, "INSERT")
	defer child.End()
	if sc := child.SpanContext(); sc.TraceID() != root.SpanContext().TraceID() || sc.IsSampled() {
		t.Errorf("child span context %+v: want the root's trace, not sampled", sc)
	}

	// A hop whose upstream sampled the order (its traceparent says so)
	// traces it too, whatever the ratio.
	h := map[string]string{}
	sampled := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	tel.Propagator.Inject(trace.ContextWithRemoteSpanContext(context.Background(), sampled), propagation.MapCarrier(h))
	_, consumer := tracer.Start(tel.Propagator.Extract(context.Background(), propagation.MapCarrier(h)), "process")
	defer consumer.End()
	if sc := consumer.SpanContext(); sc.TraceID() != sampled.TraceID() || !sc.IsSampled() {
		t.Errorf("span under a sampled traceparent %+v: want its trace, sampled", sc)
	}
}

func TestSetupWithOTLPEndpoint(t *testing.T) {
	var hits atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" {
			t.Errorf("exporter posted to %q, want /v1/traces", r.URL.Path)
		}
		hits.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	defer collector.Close()

	tel, shutdown := mustSetup(t, Config{Service: "order", OTLPEndpoint: collector.URL})
	_, span := tel.TracerProvider.Tracer("test").Start(context.Background(), "op")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if hits.Load() == 0 {
		t.Error("shutdown did not flush the span to the collector")
	}
}

func TestMetricsHandlerServesCounter(t *testing.T) {
	tel, _ := mustSetup(t, Config{Service: "order"})
	counter, err := tel.MeterProvider.Meter("test").Int64Counter("orders.placed")
	if err != nil {
		t.Fatalf("Int64Counter: %v", err)
	}
	counter.Add(context.Background(), 3)

	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d, want 200", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{"orders_placed_total{", "} 3\n", "go_goroutines ", "process_cpu_seconds_total "} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics output lacks %q", want)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", ct)
	}
}

func TestHeadersRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, want := newSpanContext(t)
	member, err := baggage.NewMember("tenant", "acme")
	if err != nil {
		t.Fatal(err)
	}
	bag, err := baggage.New(member)
	if err != nil {
		t.Fatal(err)
	}
	ctx = baggage.ContextWithBaggage(ctx, bag)

	headers := map[string]any{"x-aggregate-id": "o-1"}
	InjectHeaders(ctx, headers)
	if _, ok := headers["traceparent"].(string); !ok {
		t.Fatalf("headers after inject: %v, want a traceparent string", headers)
	}

	got := ExtractHeaders(context.Background(), headers)
	assertRemoteSpan(t, got, want)
	if v := baggage.FromContext(got).Member("tenant").Value(); v != "acme" {
		t.Errorf("baggage tenant = %q, want acme", v)
	}

	// Some clients deliver header strings as byte slices.
	raw := map[string]any{"traceparent": []byte(headers["traceparent"].(string))}
	assertRemoteSpan(t, ExtractHeaders(context.Background(), raw), want)
}

func TestMapRoundTrip(t *testing.T) {
	t.Parallel()
	ctx, want := newSpanContext(t)
	m := map[string]string{}
	InjectMap(ctx, m)
	b, err := json.Marshal(m) // the outbox stores the map as JSON
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]string
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	assertRemoteSpan(t, ExtractMap(context.Background(), back), want)
}

func TestExtractWithoutHeaders(t *testing.T) {
	t.Parallel()
	for _, ctx := range []context.Context{
		ExtractHeaders(context.Background(), nil),
		ExtractHeaders(context.Background(), map[string]any{"traceparent": 42}),
		ExtractMap(context.Background(), map[string]string{"traceparent": "garbage"}),
	} {
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			t.Errorf("got span context %v from bad headers", sc)
		}
	}
	InjectHeaders(context.Background(), nil) // must not panic
	InjectMap(context.Background(), nil)
}

func mustSetup(tb testing.TB, cfg Config) (*Telemetry, func(context.Context) error) {
	tb.Helper()
	tel, shutdown, err := Setup(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Setup: %v", err)
	}
	tb.Cleanup(func() { _ = shutdown(context.Background()) })
	return tel, shutdown
}

func newSpanContext(tb testing.TB) (context.Context, trace.SpanContext) {
	tb.Helper()
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "publish")
	tb.Cleanup(func() { span.End() })
	return ctx, span.SpanContext()
}

func assertRemoteSpan(tb testing.TB, ctx context.Context, want trace.SpanContext) {
	tb.Helper()
	got := trace.SpanContextFromContext(ctx)
	if !got.IsRemote() || got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || got.TraceFlags() != want.TraceFlags() {
		tb.Errorf("extracted span context %+v, want remote copy of %+v", got, want)
	}
}

func decodeLine(tb testing.TB, line string) map[string]any {
	tb.Helper()
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(strings.NewReader(line), 1<<20)).Decode(&m); err != nil {
		tb.Fatalf("log line %q is not JSON: %v", line, err)
	}
	return m
}
