package payment

import (
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/payment/gateway"
)

// Request asks for the payment of an order (PaymentRequested).
type Request struct {
	OrderID     uuid.UUID
	CustomerID  string
	AmountCents int64
	Currency    string
	Method      string
	// ExpiresAt is the order's deadline for its payment; zero means none.
	ExpiresAt time.Time
}

// RefundRequest asks for the refund of a cancelled order's payment
// (RefundRequested). AmountCents and Currency are the order's, kept on the
// voided payment of an order that has none yet.
type RefundRequest struct {
	OrderID     uuid.UUID
	AmountCents int64
	Currency    string
}

// Action is what a request comes to once the book has looked at it.
type Action string

// The actions of a Decision. Only ActionAuthorize and ActionRefund wait for
// the gateway; the others are complete when the book returns them.
const (
	// ActionIgnore: the request changes nothing. A payment request found a
	// payment (a duplicate request, or an order voided before its payment
	// ran); a refund request found one that is not authorized.
	ActionIgnore Action = "ignore"
	// ActionExpire: the payment request came at or after its deadline and
	// is declined with ReasonExpired. The order has timed out (or will be
	// cancelled any moment): a charge now would only have to be refunded.
	ActionExpire Action = "expire"
	// ActionVoid: the refund request came before any payment (the order was
	// cancelled before its payment ran, or while the service was down). The
	// voided payment makes a later payment request charge nothing.
	ActionVoid Action = "void"
	// ActionAuthorize: a charge is due, and the payment is authorizing.
	// Ask the gateway for Decision.Authorization and tell the book its
	// answer with Authorized (or, if the gateway refused the request for
	// good, give the charge up with Release).
	ActionAuthorize Action = "authorize"
	// ActionRefund: the authorized payment is refunding. Ask the gateway
	// for Decision.Refund and tell the book its answer with Refunded (or
	// Release).
	ActionRefund Action = "refund"
)

// Decision is the book's answer to a request.
type Decision struct {
	Action Action
	// Payment is the order's payment: the one found (ActionIgnore), the one
	// recorded (ActionExpire, ActionVoid), the one to charge (ActionAuthorize)
	// or the one to refund (ActionRefund), in flight.
	Payment Payment
	// Resume is set when the payment was in flight already: the gateway
	// was asked before and its answer is not recorded, so it is asked
	// again, with the same idempotency key. Nothing new is claimed.
	Resume bool
	// Authorization is the gateway request of ActionAuthorize.
	Authorization gateway.AuthorizeRequest
	// Refund is the gateway request of ActionRefund.
	Refund gateway.RefundRequest
}

// Update is a change of a stored payment, to be written only while the
// stored payment is still in status From: a decision taken on a payment
// that has changed since it was loaded must not take effect.
type Update struct {
	Payment Payment
	From    Status
}

// Book is the payments of the orders a batch of requests is about, keyed
// by order, as loaded (and locked) from the store. Requests are decided one
// after the other against it, so that each sees those before it in the
// batch: a payment request behind a void charges nothing, a duplicate
// charges once. The book collects what the decisions write (Payments,
// Updates, Released, Refunds, Events) for the store to save in one go.
//
// The rules are those of docs/saga.md, steps 4 and 7: an order has at most
// one payment; a request is charged unless the order has a payment or its
// deadline passed; a refund request refunds an authorized payment whole,
// voids an order that has no payment, and leaves any other alone. A
// payment in flight is resumed by whichever request finds it: a refund
// request that finds the charge in flight first resumes the charge, and is
// decided again once its answer is recorded.
type Book struct {
	payments map[uuid.UUID]Payment // by order, as decided so far
	stored   map[uuid.UUID]Status  // by payment id, the status as loaded
	created  []*Payment
	updated  []*Update
	released []uuid.UUID
	refunds  []*Refund
	events   []outbox.Event
}

// NewBook returns a book of the given payments, keyed by order.
func NewBook(payments map[uuid.UUID]Payment) *Book {
	b := &Book{payments: make(map[uuid.UUID]Payment, len(payments)), stored: make(map[uuid.UUID]Status, len(payments))}
	for order, p := range payments {
		b.payments[order] = p
		b.stored[p.ID] = p.Status
	}
	return b
}

// RequestPayment decides r at now: ignored when the order has a payment,
// declined as expired when now is at or past r.ExpiresAt, and otherwise to
// be authorized by the gateway, the payment authorizing. A payment still
// authorizing is resumed, whatever the deadline: the gateway may have
// authorized it already, and only its answer can tell.
func (b *Book) RequestPayment(r Request, now time.Time) (Decision, error) {
	if p, ok := b.payments[r.OrderID]; ok {
		if p.Status == StatusAuthorizing {
			return authorize(p, true), nil
		}
		return Decision{Action: ActionIgnore, Payment: p}, nil
	}
	p := Payment{
		ID:          uuid.New(),
		OrderID:     r.OrderID,
		CustomerID:  r.CustomerID,
		AmountCents: r.AmountCents,
		Currency:    r.Currency,
		Method:      r.Method,
	}
	if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
		p.Status, p.DeclineReason = StatusDeclined, ReasonExpired
		return Decision{Action: ActionExpire, Payment: p}, b.set(p, announce(p, now))
	}
	p.Status = StatusAuthorizing
	return authorize(p, false), b.set(p, nil)
}

// authorize is the decision to ask the gateway to authorize p.
func authorize(p Payment, resume bool) Decision {
	return Decision{Action: ActionAuthorize, Payment: p, Resume: resume, Authorization: gateway.AuthorizeRequest{
		// The order id whatever the request says: one order, one
		// authorization, however many requests arrive.
		IdempotencyKey: p.OrderID.String(),
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
		PaymentMethod:  p.Method,
	}}
}

// inFlight returns the order's payment if it is still status, in flight
// with d's payment; else an error matching ErrSettled.
func (b *Book) inFlight(d Decision, status Status) (Payment, error) {
	p, ok := b.payments[d.Payment.OrderID]
	if !ok || p.ID != d.Payment.ID || p.Status != status {
		return Payment{}, fmt.Errorf("order %s: payment %s is no longer %s: %w", d.Payment.OrderID, d.Payment.ID, status, ErrSettled)
	}
	return p, nil
}

// Authorized records the gateway's answer res to d (an ActionAuthorize
// decision) at now: the payment is authorized, or declined with the
// gateway's reason ("declined" when it gives none). It returns the
// payment, and an error matching ErrSettled when the payment is no longer
// authorizing (the answer was recorded already).
func (b *Book) Authorized(d Decision, res gateway.AuthorizeResult, now time.Time) (Payment, error) {
	p, err := b.inFlight(d, StatusAuthorizing)
	if err != nil {
		return Payment{}, err
	}
	if res.Approved {
		p.Status, p.GatewayReference = StatusAuthorized, res.Reference
	} else {
		p.Status, p.DeclineReason = StatusDeclined, res.DeclineReason
		if p.DeclineReason == "" {
			p.DeclineReason = "declined"
		}
	}
	return p, b.set(p, announce(p, now))
}

// RequestRefund decides r: the order's authorized payment is to be
// refunded by the gateway (it is refunding), an order without a payment is
// voided, and any other payment is left alone. A payment in flight is
// resumed: a refund in flight is asked again, and so is a charge in
// flight, whose answer the refund then waits for.
func (b *Book) RequestRefund(r RefundRequest) (Decision, error) {
	p, ok := b.payments[r.OrderID]
	switch {
	case !ok:
		p = Payment{
			ID:          uuid.New(),
			OrderID:     r.OrderID,
			AmountCents: max(r.AmountCents, 0),
			Currency:    r.Currency,
			Status:      StatusVoided,
		}
		return Decision{Action: ActionVoid, Payment: p}, b.set(p, nil)
	case p.Status == StatusAuthorizing:
		return authorize(p, true), nil
	case p.Status == StatusRefunding:
		return refund(p, true), nil
	case p.Status != StatusAuthorized:
		return Decision{Action: ActionIgnore, Payment: p}, nil
	}
	p.Status = StatusRefunding
	return refund(p, false), b.set(p, nil)
}

// refund is the decision to ask the gateway to refund p.
func refund(p Payment, resume bool) Decision {
	// The whole authorization: the order was cancelled.
	return Decision{Action: ActionRefund, Payment: p, Resume: resume, Refund: gateway.RefundRequest{
		IdempotencyKey: "refund:" + p.OrderID.String(),
		Reference:      p.GatewayReference,
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
	}}
}

// Refunded records the gateway's refund res of d (an ActionRefund
// decision) at now: the payment becomes refunded. It returns the refund,
// and an error matching ErrSettled when the payment is no longer
// refunding (the refund was recorded already).
func (b *Book) Refunded(d Decision, res gateway.RefundResult, now time.Time) (Refund, error) {
	p, err := b.inFlight(d, StatusRefunding)
	if err != nil {
		return Refund{}, err
	}
	r := Refund{
		ID:               uuid.New(),
		PaymentID:        p.ID,
		AmountCents:      p.AmountCents,
		Currency:         p.Currency,
		GatewayReference: res.Reference,
	}
	p.Status = StatusRefunded
	err = b.set(p, &eventsv1.PaymentRefunded{
		OrderId:     p.OrderID.String(),
		PaymentId:   p.ID.String(),
		RefundId:    r.ID.String(),
		AmountCents: r.AmountCents,
		Currency:    r.Currency,
		RefundedAt:  timestamppb.New(now),
	})
	if err != nil {
		return Refund{}, err
	}
	b.refunds = append(b.refunds, &r)
	return r, nil
}

// Release gives up d's call, which the gateway refused for good (a
// malformed request): nothing was authorized or refunded, so the payment
// goes back to what it was before d, no payment at all or authorized, and
// a later request decides afresh. It returns an error matching ErrSettled
// when the payment is no longer in flight.
func (b *Book) Release(d Decision) error {
	switch d.Action {
	case ActionAuthorize:
		p, err := b.inFlight(d, StatusAuthorizing)
		if err != nil {
			return err
		}
		delete(b.payments, p.OrderID)
		if _, ok := b.stored[p.ID]; ok {
			b.released = append(b.released, p.ID)
		}
		b.created = slices.DeleteFunc(b.created, func(c *Payment) bool { return c.ID == p.ID })
		return nil
	case ActionRefund:
		p, err := b.inFlight(d, StatusRefunding)
		if err != nil {
			return err
		}
		p.Status = StatusAuthorized
		return b.set(p, nil)
	}
	return fmt.Errorf("release of a decision to %s", d.Action)
}

// Payments returns the payments new in the book, in the order they were
// decided, as they stand now.
func (b *Book) Payments() []*Payment { return b.created }

// Updates returns the changes of stored payments, in the order they were
// first changed, each with the status it was loaded in.
func (b *Book) Updates() []*Update { return b.updated }

// Released returns the ids of the stored payments whose authorization was
// given up (Release): they are to be deleted.
func (b *Book) Released() []uuid.UUID { return b.released }

// Refunds returns the refunds of the book, in the order they were made.
func (b *Book) Refunds() []*Refund { return b.refunds }

// Events returns the events of the book's decisions, in the order they
// were made.
func (b *Book) Events() []outbox.Event { return b.events }

// set records p as the order's payment, new or changed, and its event msg
// (nil: none).
func (b *Book) set(p Payment, msg proto.Message) error {
	if msg != nil {
		ev, err := outbox.NewEvent(p.OrderID.String(), msg)
		if err != nil {
			return err
		}
		b.events = append(b.events, ev)
	}
	b.payments[p.OrderID] = p
	if from, ok := b.stored[p.ID]; ok {
		for _, u := range b.updated {
			if u.Payment.ID == p.ID {
				u.Payment = p
				return nil
			}
		}
		b.updated = append(b.updated, &Update{Payment: p, From: from})
		return nil
	}
	for _, c := range b.created {
		if c.ID == p.ID {
			*c = p
			return nil
		}
	}
	b.created = append(b.created, &p)
	return nil
}

// announce returns the event of a decided payment: PaymentAuthorized or
// PaymentDeclined.
func announce(p Payment, now time.Time) proto.Message {
	if p.Status == StatusAuthorized {
		return &eventsv1.PaymentAuthorized{
			OrderId:      p.OrderID.String(),
			PaymentId:    p.ID.String(),
			AmountCents:  p.AmountCents,
			Currency:     p.Currency,
			AuthorizedAt: timestamppb.New(now),
		}
	}
	return &eventsv1.PaymentDeclined{
		OrderId:    p.OrderID.String(),
		PaymentId:  p.ID.String(),
		Reason:     p.DeclineReason,
		DeclinedAt: timestamppb.New(now),
	}
}
