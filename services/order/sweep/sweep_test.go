package sweep_test

import (
	"context"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/order/internal/ordertest"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/sweep"
)

func TestDeadlinesCancelsAndCounts(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, pool := ordertest.NewStore(t, clock)
	ordertest.SeedCatalog(t, pool, order.Product{SKU: "A", Name: "a", PriceCents: 1, Currency: "EUR"})
	var ids []string
	for range 3 {
		o, err := store.Create(context.Background(), ordertest.Timeouts, order.Request{CustomerID: "c", Lines: []order.Line{{SKU: "A", Quantity: 1}}, PaymentMethod: "pm"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	clock.Advance(31 * time.Second)

	reader := sdkmetric.NewManualReader()
	metrics, err := order.NewSagaMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	store.Metrics = metrics
	d := sweep.NewDeadlines(store, ordertest.Timeouts, 2)
	// A batch of 2 cancels the three in two transactions of one sweep.
	if n, err := d.Once(context.Background()); n != 3 || err != nil {
		t.Fatalf("Once = %d, %v; want 3 orders cancelled", n, err)
	}
	if n := ordertest.Count(t, pool, `SELECT count(*) FROM orders WHERE status = 'cancelled' AND reason = 'timeout'`); n != 3 {
		t.Errorf("%d orders cancelled with reason timeout, want 3", n)
	}
	if n, err := d.Once(context.Background()); n != 0 || err != nil {
		t.Errorf("second Once = %d, %v; want nothing left to cancel", n, err)
	}
	poll.Until(t, 5*time.Second, "order.timeouts{step=pending_to_reserved} to reach 3", func() bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "order.timeouts" {
					for _, p := range sum.DataPoints {
						if step, _ := p.Attributes.Value("step"); step.AsString() == "pending_to_reserved" {
							return p.Value == 3
						}
					}
				}
			}
		}
		return false
	})
	for _, id := range ids {
		o, err := store.Get(context.Background(), id, "c")
		if err != nil || o.Version != 2 || len(o.History) != 2 {
			t.Errorf("order %s = v%d with %d history entries, %v", id, o.Version, len(o.History), err)
		}
	}
}
