package order

import (
	"fmt"
	"time"

	"github.com/orderly/orderly/pkg/outbox"
)

// Timeouts are how long the saga waits for each answer before the order is
// cancelled with reason timeout: Reserve for inventory's answer to a new
// order (ORDER_RESERVE_TIMEOUT), Payment for payment's answer to a reserved
// one (ORDER_PAYMENT_TIMEOUT).
type Timeouts struct {
	Reserve time.Duration
	Payment time.Duration
}

// Event is something that happens to an order: a saga message, a customer
// or admin action, or its deadline passing.
type Event string

// Events the state machine knows.
const (
	EventStockReserved     Event = "stock_reserved"
	EventStockRejected     Event = "stock_rejected"
	EventPaymentAuthorized Event = "payment_authorized"
	EventPaymentDeclined   Event = "payment_declined"
	EventCancel            Event = "cancel"  // the customer asked
	EventTimeout           Event = "timeout" // the deadline passed
	EventShip              Event = "ship"    // an admin
	EventDeliver           Event = "deliver" // an admin
)

// Events lists every event, for tests and documentation.
var Events = []Event{
	EventStockReserved, EventStockRejected, EventPaymentAuthorized, EventPaymentDeclined,
	EventCancel, EventTimeout, EventShip, EventDeliver,
}

// Command is a message the order service sends to another service as part
// of a transition (docs/saga.md).
type Command string

// Commands of the saga.
const (
	CommandRequestPayment     Command = "request_payment"     // PaymentRequested
	CommandCommitReservation  Command = "commit_reservation"  // CommitReservation
	CommandReleaseReservation Command = "release_reservation" // ReleaseReservation
	CommandRequestRefund      Command = "request_refund"      // RefundRequested
)

// Deadline says what a transition does to the order's deadline.
type Deadline int

// Deadline effects.
const (
	// DeadlineKeep leaves it as it is (a compensation that changes no status).
	DeadlineKeep Deadline = iota
	// DeadlinePayment sets it to now + the payment timeout.
	DeadlinePayment
	// DeadlineClear removes it: nothing is awaited any more.
	DeadlineClear
)

// Transition is one row of the state machine: in status From, on event On,
// the order moves to To with Reason and sends Commands. A row with To ==
// From changes nothing but still sends its commands: a compensation for a
// message that arrived after the order was cancelled.
type Transition struct {
	From     Status
	On       Event
	To       Status
	Reason   Reason
	Commands []Command
	Deadline Deadline
}

// Changes reports whether the transition moves the order to a new status
// (and so bumps its version and appends to its history).
func (t Transition) Changes() bool { return t.To != t.From }

var (
	releaseAndRefund = []Command{CommandReleaseReservation, CommandRequestRefund}
)

// transitions is the whole saga as seen by the order service. Any (status,
// event) pair not listed is refused with ErrInvalidTransition: a duplicate
// or late message, or an action the status does not allow.
var transitions = []Transition{
	// docs/saga.md 3a, 3b: inventory answered OrderPlaced.
	{From: StatusPending, On: EventStockReserved, To: StatusReserved, Commands: []Command{CommandRequestPayment}, Deadline: DeadlinePayment},
	{From: StatusPending, On: EventStockRejected, To: StatusCancelled, Reason: ReasonOutOfStock, Deadline: DeadlineClear},
	// 5a, 5b: payment answered PaymentRequested.
	{From: StatusReserved, On: EventPaymentAuthorized, To: StatusConfirmed, Commands: []Command{CommandCommitReservation}, Deadline: DeadlineClear},
	{From: StatusReserved, On: EventPaymentDeclined, To: StatusCancelled, Reason: ReasonPaymentDeclined, Commands: []Command{CommandReleaseReservation}, Deadline: DeadlineClear},
	// 8: the customer cancels; payment may be in flight or done, so both
	// compensations go out whatever the status.
	{From: StatusPending, On: EventCancel, To: StatusCancelled, Reason: ReasonCustomerRequest, Commands: releaseAndRefund, Deadline: DeadlineClear},
	{From: StatusReserved, On: EventCancel, To: StatusCancelled, Reason: ReasonCustomerRequest, Commands: releaseAndRefund, Deadline: DeadlineClear},
	{From: StatusConfirmed, On: EventCancel, To: StatusCancelled, Reason: ReasonCustomerRequest, Commands: releaseAndRefund, Deadline: DeadlineClear},
	// 9: a saga step had no answer in time.
	{From: StatusPending, On: EventTimeout, To: StatusCancelled, Reason: ReasonTimeout, Commands: releaseAndRefund, Deadline: DeadlineClear},
	{From: StatusReserved, On: EventTimeout, To: StatusCancelled, Reason: ReasonTimeout, Commands: releaseAndRefund, Deadline: DeadlineClear},
	// 10: an admin ships and delivers.
	{From: StatusConfirmed, On: EventShip, To: StatusShipped, Deadline: DeadlineClear},
	{From: StatusShipped, On: EventDeliver, To: StatusDelivered, Deadline: DeadlineClear},
	// Compensations: stock reserved, or a payment authorized, for an order
	// cancelled in the meantime must not stay held or charged.
	{From: StatusCancelled, On: EventStockReserved, To: StatusCancelled, Commands: []Command{CommandReleaseReservation}},
	{From: StatusCancelled, On: EventPaymentAuthorized, To: StatusCancelled, Commands: []Command{CommandRequestRefund}},
}

// Next returns the transition for an order in status from on event on. It
// returns an error matching ErrInvalidTransition when there is none; for
// EventCancel that error also matches ErrNotCancellable.
func Next(from Status, on Event) (Transition, error) {
	for _, t := range transitions {
		if t.From == from && t.On == on {
			t.Commands = append([]Command(nil), t.Commands...)
			return t, nil
		}
	}
	if on == EventCancel {
		return Transition{}, fmt.Errorf("%s order: %w (%w)", from, ErrNotCancellable, ErrInvalidTransition)
	}
	return Transition{}, fmt.Errorf("%s on a %s order: %w", on, from, ErrInvalidTransition)
}

// Apply moves order o by event at now, by the state machine, and returns
// the order after the transition, the transition and the events it emits.
// When the transition changes the status it sets the new status, reason and
// update time, bumps the version (the seq of the new status) and sets the
// deadline (now plus t.Payment for the payment step, none once nothing is
// awaited); its events are OrderStatusChanged, OrderCancelled into
// cancelled, and then its commands (PaymentRequested, CommitReservation,
// ReleaseReservation, RefundRequested). A compensation changes nothing but
// still sends its commands. paymentID, given with EventPaymentAuthorized, is
// recorded even by a compensation, so that a refund names the payment. It
// returns o unchanged, no events and the errors of Next when the state
// machine has no such transition.
func (o Order) Apply(event Event, paymentID string, now time.Time, t Timeouts) (Order, Transition, []outbox.Event, error) {
	tr, err := Next(o.Status, event)
	if err != nil {
		return o, tr, nil, err
	}
	next := o
	if paymentID != "" && event == EventPaymentAuthorized {
		next.PaymentID = paymentID
	}
	if tr.Changes() {
		next.Status, next.Reason, next.Version, next.UpdatedAt = tr.To, tr.Reason, o.Version+1, now
		switch tr.Deadline {
		case DeadlinePayment:
			d := now.Add(t.Payment)
			next.DeadlineAt = &d
		case DeadlineClear:
			next.DeadlineAt = nil
		case DeadlineKeep:
		}
	}
	events, err := transitionEvents(next, o.Status, tr, now)
	if err != nil {
		return o, tr, nil, err
	}
	return next, tr, events, nil
}
