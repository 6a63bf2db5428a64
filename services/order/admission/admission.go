// Package admission keeps the order service healthy past saturation: a Gate
// measures the saga's backlog a few times a second and, while the saga lags
// more than order.Admission allows, has POST /v1/orders refuse a share of
// new orders with 503 and Retry-After instead of taking orders that would
// time out.
package admission

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/orderly/orderly/services/order/order"
)

// Store measures the backlog (*postgres.Store).
type Store interface {
	Backlog(ctx context.Context, t order.Timeouts, skip int) (order.Backlog, error)
}

// skipStuck is how many of the longest-waiting orders of each step the
// backlog ignores: a few orders in a delayed retry are not a backlog.
const skipStuck = 10

// Gate admits or refuses new orders. Its zero value admits everything; Run
// keeps its decision current.
type Gate struct {
	Store Store
	// Timeouts are the saga's, which set the deadlines the backlog is
	// measured from.
	Timeouts order.Timeouts
	Policy   order.Admission
	// Interval between measurements (default 250ms).
	Interval time.Duration
	Log      *slog.Logger
	// Meter gets order.saga.lag (seconds) and order.admission.refused.
	Meter metric.Meter

	// The policy's last answer: the share of new orders refused (float64
	// bits, so that the zero value takes all) and their Retry-After.
	shed       atomic.Uint64
	retryAfter atomic.Int64
	refused    metric.Int64Counter
}

// Admit reports whether a new order is taken now and, when not, after how
// long the client should retry. It never blocks; while the gate sheds a
// share of orders, which ones is left to chance.
func (g *Gate) Admit(ctx context.Context) (bool, time.Duration) {
	shed := math.Float64frombits(g.shed.Load())
	if shed == 0 || rand.Float64() >= shed { //nolint:gosec // load shedding, not a secret
		return true, 0
	}
	if g.refused != nil {
		g.refused.Add(ctx, 1)
	}
	return false, time.Duration(g.retryAfter.Load())
}

// set records the policy's answer: the share of orders to take.
func (g *Gate) set(share float64, retryAfter time.Duration) {
	g.retryAfter.Store(int64(retryAfter))
	g.shed.Store(math.Float64bits(1 - min(max(share, 0), 1)))
}

// Run measures the backlog at once and then every Interval until ctx ends,
// when it returns nil. A failed measurement keeps the last decision and is
// logged; it returns an error only when its metrics cannot be created.
func (g *Gate) Run(ctx context.Context) error {
	if g.Interval <= 0 {
		g.Interval = 250 * time.Millisecond
	}
	if g.Log == nil {
		g.Log = slog.Default()
	}
	m := g.Meter
	if m == nil {
		m = noop.NewMeterProvider().Meter("")
	}
	shareGauge, err := m.Float64Gauge("order.admission.share",
		metric.WithDescription("Share of new orders the order service takes now: 1 while the saga keeps up, less as it falls behind."))
	if err != nil {
		return err
	}
	lag, err := m.Float64Gauge("order.saga.lag", metric.WithUnit("s"),
		metric.WithDescription("How long the orders waiting longest for inventory and payment have waited, summed: what a new order would wait."))
	if err != nil {
		return err
	}
	if g.refused, err = m.Int64Counter("order.admission.refused",
		metric.WithDescription("New orders refused with 503 because the saga lagged more than ORDER_ADMISSION_MAX_LAG.")); err != nil {
		return err
	}
	g.refused.Add(ctx, 0)
	t := time.NewTicker(g.Interval)
	defer t.Stop()
	refusing := false
	for {
		b, err := g.Store.Backlog(ctx, g.Timeouts, skipStuck)
		switch {
		case err != nil && ctx.Err() == nil:
			g.Log.WarnContext(ctx, "saga backlog measurement failed; keeping the last admission decision", "err", err)
		case err == nil:
			lag.Record(ctx, b.Lag().Seconds())
			share, retry := g.Policy.Admit(b)
			shareGauge.Record(ctx, share)
			g.set(share, retry)
			if (share < 1) != refusing {
				refusing = share < 1
				g.Log.WarnContext(ctx, "order admission changed", "refusing", refusing, "lag", b.Lag().String(),
					"reserve_wait", b.Reserve.String(), "payment_wait", b.Payment.String())
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
