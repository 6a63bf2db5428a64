package pg_test

import (
	"context"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

// The pool's statistics are there to read after a query: the connection
// counts and the acquires, which the alerts and dashboard use
// (docs/operations.md).
func TestRecordStats(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	if err := pg.RecordStats(pool, mp); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				got[m.Name] = d.DataPoints[0].Value
			case metricdata.Gauge[int64]:
				got[m.Name] = d.DataPoints[0].Value
			}
		}
	}
	for _, name := range []string{"pgxpool.acquires", "pgxpool.total_connections", "pgxpool.max_connections"} {
		if got[name] < 1 {
			t.Errorf("%s = %d, want at least 1 (got %v)", name, got[name], got)
		}
	}
	for _, name := range []string{"pgxpool.idle_connections", "pgxpool.acquired_connections", "pgxpool.acquire_duration",
		"pgxpool.empty_acquire", "pgxpool.empty_acquire_wait_time"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing (got %v)", name, got)
		}
	}
}
