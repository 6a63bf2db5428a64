package order

import (
	"math"
	"time"
)

// Backlog is how far behind the saga is: how long the orders that have
// waited longest in each step have been waiting for its answer.
type Backlog struct {
	// Reserve is the wait of pending orders for inventory's answer.
	Reserve time.Duration
	// Payment is the wait of reserved orders for payment's answer.
	Payment time.Duration
}

// Lag is roughly what a new order would wait before it is confirmed: the
// backlog of each step ahead of it.
func (b Backlog) Lag() time.Duration { return b.Reserve + b.Payment }

// Backlog is the backlog at now given the deadlines of the orders that have
// waited longest for inventory and for payment (nil where none waits): a
// step's deadline is when it began plus its timeout.
func (t Timeouts) Backlog(now time.Time, reserveDeadline, paymentDeadline *time.Time) Backlog {
	waited := func(deadline *time.Time, timeout time.Duration) time.Duration {
		if deadline == nil {
			return 0
		}
		return max(0, now.Sub(deadline.Add(-timeout)))
	}
	return Backlog{Reserve: waited(reserveDeadline, t.Reserve), Payment: waited(paymentDeadline, t.Payment)}
}

// Admission decides how many new orders the order service takes, so that
// past saturation it refuses orders it could not finish in time rather than
// accept them only for them to time out. Up to MaxLag of saga lag every
// order is taken; from MaxLag to twice MaxLag the share taken falls
// linearly to none, and the refused get 503 with Retry-After. Shedding a
// share, rather than everything the moment the lag passes MaxLag, keeps the
// saga fed while its backlog drains instead of swinging between taking all
// and nothing. MaxLag bounds roughly what a taken order waits under
// overload; keep it well under the saga's deadlines.
type Admission struct {
	MaxLag time.Duration
}

// maxRetryAfter caps the wait a refused client is asked for.
const maxRetryAfter = 30 * time.Second

// Admit returns the share of new orders to take given the backlog b, from
// 1 (all) to 0 (none), and the wait (whole seconds, at least one) to ask
// of a client that is refused: about the time the backlog takes to drain.
func (a Admission) Admit(b Backlog) (share float64, retryAfter time.Duration) {
	lag := b.Lag()
	if a.MaxLag <= 0 || lag <= a.MaxLag {
		return 1, 0
	}
	share = max(0, 1-float64(lag-a.MaxLag)/float64(a.MaxLag))
	s := math.Ceil(min(lag, maxRetryAfter).Seconds())
	return share, time.Duration(max(s, 1)) * time.Second
}
