package admission_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/order/admission"
	"github.com/orderly/orderly/services/order/order"
)

// backlog is a store whose backlog the test sets; a negative lag fails the
// measurement.
type backlog struct{ lag atomic.Int64 }

func (b *backlog) Backlog(context.Context, order.Timeouts, int) (order.Backlog, error) {
	lag := time.Duration(b.lag.Load())
	if lag < 0 {
		return order.Backlog{}, errors.New("database down")
	}
	return order.Backlog{Reserve: lag}, nil
}

// The gate follows the backlog: it refuses while the saga lags more than
// the policy allows, keeps its decision while the backlog cannot be
// measured, and takes orders again once the backlog is gone.
func TestGateFollowsTheBacklog(t *testing.T) {
	t.Parallel()
	store := &backlog{}
	g := &admission.Gate{Store: store, Policy: order.Admission{MaxLag: 5 * time.Second}, Interval: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	admitted := func() bool { ok, _ := g.Admit(ctx); return ok }

	poll.Until(t, 5*time.Second, "orders taken while the saga keeps up", admitted)
	store.lag.Store(int64(12 * time.Second))
	poll.Until(t, 5*time.Second, "orders refused while the saga lags", func() bool { return !admitted() })
	if _, retry := g.Admit(ctx); retry != 12*time.Second {
		t.Errorf("Retry-After = %v, want the lag, 12s", retry)
	}
	store.lag.Store(-1)
	// Several failed measurements, which must not change the decision.
	time.Sleep(20 * time.Millisecond)
	if admitted() {
		t.Error("a failed measurement reopened the gate")
	}
	store.lag.Store(int64(time.Second))
	poll.Until(t, 5*time.Second, "orders taken again once the backlog is gone", admitted)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// Between the limit and twice the limit the gate sheds a share of orders,
// not all of them.
func TestGateShedsAShare(t *testing.T) {
	t.Parallel()
	store := &backlog{}
	store.lag.Store(int64(7500 * time.Millisecond)) // half-way: take half
	g := &admission.Gate{Store: store, Policy: order.Admission{MaxLag: 5 * time.Second}, Interval: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	poll.Until(t, 5*time.Second, "the gate to shed", func() bool { ok, _ := g.Admit(ctx); return !ok })
	taken := 0
	for range 4000 {
		if ok, _ := g.Admit(ctx); ok {
			taken++
		}
	}
	if taken < 1600 || taken > 2400 {
		t.Errorf("took %d of 4000 orders at half-way past the limit, want about half", taken)
	}
}
