package order

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/orderly/orderly/pkg/outbox"
)

// Step is one event for one order, with what its message or request tells
// besides the event itself.
type Step struct {
	OrderID string
	Event   Event
	// Owner, when set, restricts the step to that customer's order;
	// another customer's order is ErrNotFound.
	Owner string
	// PaymentID is the authorized payment (EventPaymentAuthorized).
	PaymentID string
}

// Result is what a step did: the order after it and the transition, or,
// in Err, why the step did nothing: an error matching ErrNotFound (an
// unknown order, or another customer's with Owner set) or
// ErrInvalidTransition (and, for a cancel, ErrNotCancellable) when the
// order's status does not allow the event.
type Result struct {
	Order      Order
	Transition Transition
	Err        error
}

// IsIgnorable reports whether err, a Result's, means the step does not
// apply to the order — a duplicate or late message, or an order this
// service never stored — so that its message is acknowledged with no
// effect.
func IsIgnorable(err error) bool {
	return errors.Is(err, ErrInvalidTransition) || errors.Is(err, ErrNotFound)
}

// Outcome is what a run of steps decided, to be saved all at once.
type Outcome struct {
	// Results has one Result per step, in step order.
	Results []Result
	// Changed are the orders whose row changes (a new status, or the
	// payment a compensation records), as they are after every step, in
	// the order they first changed.
	Changed []Order
	// Entered has an order each time a step moved it to a new status, as
	// it was then: its new history entries.
	Entered []Order
	// Events are the events of every step, in step order.
	Events []outbox.Event
	// Timings measure each status change, in step order, for the saga's
	// metrics (SagaMetrics), once the outcome is saved.
	Timings []StepTiming
}

// ApplySteps runs steps in order on orders (keyed by id: those of the steps'
// orders that exist) at now, each by Order.Apply on the order as the steps
// before it left it, so that one order can take several steps at once. A
// step that does not apply is reported in its Result and the others go on.
// orders is not changed. It fails only if an event cannot be built.
func ApplySteps(orders map[string]Order, steps []Step, now time.Time, t Timeouts) (Outcome, error) {
	cur := maps.Clone(orders)
	out := Outcome{Results: make([]Result, len(steps))}
	var changed []string // ids, in first-change order
	for i, st := range steps {
		o, ok := cur[st.OrderID]
		if !ok || (st.Owner != "" && o.CustomerID != st.Owner) {
			out.Results[i].Err = fmt.Errorf("%s order %s: %w", st.Event, st.OrderID, ErrNotFound)
			continue
		}
		next, tr, events, err := o.Apply(st.Event, st.PaymentID, now, t)
		out.Results[i] = Result{Order: next, Transition: tr}
		switch {
		case errors.Is(err, ErrInvalidTransition):
			out.Results[i].Err = fmt.Errorf("order %s: %w", st.OrderID, err)
			continue
		case err != nil:
			return Outcome{}, err
		}
		if tr.Changes() {
			out.Entered = append(out.Entered, next)
			out.Timings = append(out.Timings, timing(o, next, tr))
		}
		if (tr.Changes() || next.PaymentID != o.PaymentID) && !slices.Contains(changed, st.OrderID) {
			changed = append(changed, st.OrderID)
		}
		out.Events = append(out.Events, events...)
		cur[st.OrderID] = next
	}
	for _, id := range changed {
		out.Changed = append(out.Changed, cur[id])
	}
	return out, nil
}
