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

// Admission decides whether the order service takes a new order, so that
// past saturation it refuses orders it could not finish in time rather than
// accept them only for them to time out: while the saga lags more than
// MaxLag behind, POST /v1/orders answers 503 with Retry-After, and the
// orders already taken drain. MaxLag bounds what a taken order waits under
// overload; keep it well under the saga's deadlines.
type Admission struct {
	MaxLag time.Duration
}

// maxRetryAfter caps the wait a refused client is asked for.
const maxRetryAfter = 30 * time.Second

// Admit reports whether a new order is taken given the backlog b and, when
// it is not, after how long (whole seconds, at least one) the client should
// try again: about the time the backlog takes to drain.
func (a Admission) Admit(b Backlog) (ok bool, retryAfter time.Duration) {
	lag := b.Lag()
	if a.MaxLag <= 0 || lag <= a.MaxLag {
		return true, 0
	}
	s := math.Ceil(min(lag, maxRetryAfter).Seconds())
	return false, time.Duration(max(s, 1)) * time.Second
}
