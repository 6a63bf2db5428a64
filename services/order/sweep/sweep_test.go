package sweep_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/order/internal/ordertest"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
	"github.com/orderly/orderly/services/order/sweep"
)

func TestDeadlinesCancelsAndCounts(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, pool := ordertest.NewStore(t, clock)
	ordertest.SeedCatalog(t, pool, order.Product{SKU: "A", Name: "a", PriceCents: 1, Currency: "EUR"})
	var ids []string
	for range 3 {
		o, err := store.Create(context.Background(), order.Request{CustomerID: "c", Lines: []order.Line{{SKU: "A", Quantity: 1}}, PaymentMethod: "pm"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, o.ID)
	}
	clock.Advance(31 * time.Second)

	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	d := &sweep.Deadlines{Store: store, Interval: 20 * time.Millisecond, Batch: 2, Meter: meter,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { done <- d.Run(ctx) }()

	poll.Until(t, 10*time.Second, "every overdue order to be cancelled", func() bool {
		return ordertest.Count(t, pool, `SELECT count(*) FROM orders WHERE status = 'cancelled' AND reason = 'timeout'`) == 3
	})
	poll.Until(t, 5*time.Second, "order.timeouts to reach 3", func() bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "order.timeouts" {
					return len(sum.DataPoints) == 1 && sum.DataPoints[0].Value == 3
				}
			}
		}
		return false
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil after cancel", err)
	}
	for _, id := range ids {
		o, err := store.Get(context.Background(), id, "c")
		if err != nil || o.Version != 2 || len(o.History) != 2 {
			t.Errorf("order %s = v%d with %d history entries, %v", id, o.Version, len(o.History), err)
		}
	}
}

func TestPurgeKeysEvery(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, pool := ordertest.NewStore(t, clock)
	ordertest.SeedCatalog(t, pool, order.Product{SKU: "A", Name: "A", PriceCents: 1, Currency: "EUR"})
	k := postgres.IdempotencyKey{CustomerID: "c", Key: "k", Hash: []byte("h")}
	req := order.Request{CustomerID: "c", Lines: []order.Line{{SKU: "A", Quantity: 1}}, PaymentMethod: "pm"}
	if _, _, err := store.CreateOnce(context.Background(), req, k, func(order.Order) ([]byte, error) { return []byte(`{}`), nil }); err != nil {
		t.Fatal(err)
	}
	clock.Advance(postgres.IdempotencyTTL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- sweep.PurgeKeysEvery(ctx, store, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	poll.Until(t, 10*time.Second, "the expired key to be purged at start", func() bool {
		return ordertest.Count(t, pool, `SELECT count(*) FROM idempotency_keys`) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("PurgeKeysEvery = %v", err)
	}
}
