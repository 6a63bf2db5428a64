// Package sweep is the order service's deadline sweeper: it cancels orders
// whose saga step got no answer in time (docs/saga.md step 9).
package sweep

import (
	"context"

	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// Deadlines cancels overdue orders; the service runs Once every
// ORDER_SWEEP_INTERVAL. The store's Metrics count the timeouts
// (order_timeouts_total, by the step awaited).
type Deadlines struct {
	store    *postgres.Store
	timeouts order.Timeouts
	batch    int
}

// NewDeadlines returns a sweeper of store's overdue orders, whose
// cancellations run with the saga's timeouts, that cancels up to batch of
// them per transaction.
func NewDeadlines(store *postgres.Store, timeouts order.Timeouts, batch int) *Deadlines {
	return &Deadlines{store: store, timeouts: timeouts, batch: batch}
}

// Once cancels every order overdue now and returns how many it cancelled.
func (d *Deadlines) Once(ctx context.Context) (int64, error) {
	n, err := d.store.SweepDeadlines(ctx, d.timeouts, d.batch)
	return int64(n), err
}
