// Package sweep is the order service's deadline sweeper: it cancels orders
// whose saga step got no answer in time (docs/saga.md step 9).
package sweep

import (
	"context"

	"go.opentelemetry.io/otel/metric"

	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// Deadlines cancels overdue orders; the service runs Once every
// ORDER_SWEEP_INTERVAL.
type Deadlines struct {
	store     *postgres.Store
	timeouts  order.Timeouts
	batch     int
	cancelled metric.Int64Counter
}

// NewDeadlines returns a sweeper of store's overdue orders, whose
// cancellations run with the saga's timeouts, that cancels up to batch of
// them per transaction and counts them in order.timeouts
// (order_timeouts_total in Prometheus) on meter. It fails only if the
// counter cannot be created.
func NewDeadlines(store *postgres.Store, timeouts order.Timeouts, batch int, meter metric.Meter) (*Deadlines, error) {
	cancelled, err := meter.Int64Counter("order.timeouts",
		metric.WithDescription("Orders cancelled because a saga step got no answer before the deadline."))
	if err != nil {
		return nil, err
	}
	cancelled.Add(context.Background(), 0) // exported as 0 from the start, not missing until the first timeout
	return &Deadlines{store: store, timeouts: timeouts, batch: batch, cancelled: cancelled}, nil
}

// Once cancels every order overdue now and returns how many it cancelled.
func (d *Deadlines) Once(ctx context.Context) (int64, error) {
	n, err := d.store.SweepDeadlines(ctx, d.timeouts, d.batch)
	if n > 0 {
		d.cancelled.Add(ctx, int64(n))
	}
	return int64(n), err
}
