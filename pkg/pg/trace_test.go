package pg_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

// small caps a test pool: the database server is shared.
const small = "&pool_max_conns=2"

// Statements run inside a span become its children, with the SQL but not
// its arguments; statements run outside any span make none.
func TestWithTracing(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewDB(t)
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	pool := mustConnect(t, url+small, pg.WithTracing(tp))
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE t (secret text)"); err != nil {
		t.Fatal(err)
	}
	if n := len(spans.GetSpans()); n != 0 {
		t.Fatalf("%d spans of statements run outside a span, want none", n)
	}

	pctx, parent := tp.Tracer("test").Start(ctx, "POST /v1/orders")
	err := pg.Transact(pctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(pctx, "INSERT INTO t VALUES ($1)", "card 4242")
		return err
	})
	parent.End()
	if err != nil {
		t.Fatal(err)
	}
	var inserts int
	for _, s := range spans.GetSpans() {
		if s.Name == "POST /v1/orders" {
			continue
		}
		if s.Parent.TraceID() != parent.SpanContext().TraceID() || s.SpanKind != trace.SpanKindClient {
			t.Errorf("span %q in trace %s kind %v, want a client span in the caller's trace", s.Name, s.Parent.TraceID(), s.SpanKind)
		}
		attrs := map[string]string{}
		for _, kv := range s.Attributes {
			attrs[string(kv.Key)] = kv.Value.String()
		}
		if attrs["db.system.name"] != "postgresql" {
			t.Errorf("span %q attributes %v, want db.system.name postgresql", s.Name, attrs)
		}
		for k, v := range attrs {
			if v == "card 4242" || k == "pgx.query.parameters" {
				t.Errorf("span %q records the statement's arguments (%s=%s)", s.Name, k, v)
			}
		}
		if s.Name == "INSERT" {
			inserts++
			if attrs["db.query.text"] != "INSERT INTO t VALUES ($1)" {
				t.Errorf("INSERT span db.query.text = %q", attrs["db.query.text"])
			}
		}
	}
	if inserts != 1 {
		t.Errorf("%d INSERT spans, want 1 (spans: %d)", inserts, len(spans.GetSpans()))
	}
}

// discard is an exporter that drops what it is given, so that the
// exported case pays for the batching and not for a network.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkTracing compares, in one run, the client's CPU for one
// transaction (an INSERT and a SELECT, as a handler runs) without otelpgx
// (untraced), with it outside any span (no-parent: the background loops),
// inside a recording span that nothing exports (recorded: what a service
// without OTEL_EXPORTER_OTLP_ENDPOINT would pay) and inside a span that is
// exported (exported, to an exporter that drops the batches). Each op is
// one transaction of each kind, run in turns of 50 so that the machine's
// noise falls on all alike; it reports the process's CPU per transaction
// of each kind (<kind>-cpu-us/tx), which is what tracing adds on the
// client; the server's share is the same for all.
func BenchmarkTracing(b *testing.B) {
	_, url := pgtest.NewDB(b)
	setup := mustConnect(b, url+small)
	if _, err := setup.Exec(context.Background(), "CREATE TABLE t (n int, s text); CREATE INDEX ON t (n)"); err != nil {
		b.Fatal(err)
	}
	exported := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
	b.Cleanup(func() { _ = exported.Shutdown(context.Background()) })
	recorded := sdktrace.NewTracerProvider()
	kinds := []struct {
		name   string
		pool   *pgxpool.Pool
		parent trace.TracerProvider
		cpu    time.Duration
	}{
		{"untraced", mustConnect(b, url+small), recorded, 0},
		{"no-parent", mustConnect(b, url+small, pg.WithTracing(recorded)), nil, 0},
		{"recorded", mustConnect(b, url+small, pg.WithTracing(recorded)), recorded, 0},
		{"exported", mustConnect(b, url+small, pg.WithTracing(exported)), exported, 0},
	}
	const turn = 50
	b.ResetTimer()
	for done := 0; done < b.N; done += turn {
		for k := range kinds {
			kind := &kinds[k]
			before := cpu()
			for i := done; i < min(done+turn, b.N); i++ {
				ctx := context.Background()
				var span trace.Span
				if kind.parent != nil {
					ctx, span = kind.parent.Tracer("bench").Start(ctx, "request")
				}
				err := pg.Transact(ctx, kind.pool, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1, $2)", i, "x"); err != nil {
						return err
					}
					var n int
					return tx.QueryRow(ctx, "SELECT count(*) FROM t WHERE n = $1", i).Scan(&n)
				})
				if span != nil {
					span.End()
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			kind.cpu += cpu() - before
		}
	}
	b.StopTimer()
	for _, kind := range kinds {
		b.ReportMetric(float64(kind.cpu.Microseconds())/float64(b.N), kind.name+"-cpu-us/tx")
	}
}

// cpu returns the user and system CPU time the process has used.
func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
