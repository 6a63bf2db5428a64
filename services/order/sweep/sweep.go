// Package sweep runs the order service's background work: the deadline
// sweeper that cancels orders whose saga step got no answer in time
// (docs/saga.md step 9), and the purge of expired idempotency keys.
package sweep

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/orderly/orderly/services/order/postgres"
)

// Deadlines cancels overdue orders every Interval.
type Deadlines struct {
	Store *postgres.Store
	// Interval between sweeps (ORDER_SWEEP_INTERVAL, default 1s).
	Interval time.Duration
	// Batch is how many orders one transaction cancels (default 100).
	Batch int
	Log   *slog.Logger
	// Meter gets the counter order.timeouts (order_timeouts_total in
	// Prometheus); nil records nothing.
	Meter metric.Meter
}

// Run sweeps at once and then every Interval until ctx ends, when it
// returns nil. A failed sweep is logged and tried again at the next tick;
// it returns an error only if its counter cannot be created.
func (d *Deadlines) Run(ctx context.Context) error {
	if d.Interval <= 0 {
		d.Interval = time.Second
	}
	if d.Batch <= 0 {
		d.Batch = 100
	}
	if d.Meter == nil {
		d.Meter = noop.NewMeterProvider().Meter("")
	}
	timeouts, err := d.Meter.Int64Counter("order.timeouts",
		metric.WithDescription("Orders cancelled because a saga step got no answer before the deadline."))
	if err != nil {
		return err
	}
	timeouts.Add(ctx, 0) // exported as 0 from the start, not missing until the first timeout
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		n, err := d.Store.SweepDeadlines(ctx, d.Batch)
		if n > 0 {
			timeouts.Add(ctx, int64(n))
			d.Log.InfoContext(ctx, "orders timed out", "orders", n)
		}
		if err != nil && ctx.Err() == nil {
			d.Log.WarnContext(ctx, "deadline sweep failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// PurgeKeysEvery deletes expired idempotency keys at start and then every
// interval until ctx ends, when it returns nil. Failures are logged and
// retried at the next tick.
func PurgeKeysEvery(ctx context.Context, store *postgres.Store, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := store.PurgeKeys(ctx); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "idempotency key purge failed", "error", err)
		} else if n > 0 {
			log.InfoContext(ctx, "idempotency keys purged", "keys", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
