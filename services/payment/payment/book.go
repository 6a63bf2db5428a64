package payment

import (
	"fmt"
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
	// ActionAuthorize: a charge is due. Ask the gateway for
	// Decision.Authorization and tell the book its answer with Authorized.
	ActionAuthorize Action = "authorize"
	// ActionRefund: the authorized payment is refunded. Ask the gateway for
	// Decision.Refund and tell the book its answer with Refunded.
	ActionRefund Action = "refund"
)

// Decision is the book's answer to a request.
type Decision struct {
	Action Action
	// Payment is the order's payment: the one found (ActionIgnore), the one
	// recorded (ActionExpire, ActionVoid), the one to charge (ActionAuthorize,
	// recorded by Authorized) or the one to refund (ActionRefund).
	Payment Payment
	// Authorization is the gateway request of ActionAuthorize.
	Authorization gateway.AuthorizeRequest
	// Refund is the gateway request of ActionRefund.
	Refund gateway.RefundRequest
}

// Book is the payments of the orders a batch of requests is about, keyed
// by order, as loaded (and locked) from the store. Requests are decided one
// after the other against it, so that each sees those before it in the
// batch: a refund right behind its charge refunds it, a payment request
// behind a void charges nothing, a duplicate charges once. The book
// collects what the decisions write (Payments, Refunds, Events) for the
// store to save in one go.
//
// The rules are those of docs/saga.md, steps 4 and 7: an order has at most
// one payment; a request is charged unless the order has a payment or its
// deadline passed; a refund request refunds an authorized payment whole,
// voids an order that has no payment, and leaves any other alone.
type Book struct {
	payments map[uuid.UUID]Payment
	created  []*Payment
	refunds  []*Refund
	events   []outbox.Event
}

// NewBook returns a book of the given payments, keyed by order.
func NewBook(payments map[uuid.UUID]Payment) *Book {
	b := &Book{payments: make(map[uuid.UUID]Payment, len(payments))}
	for order, p := range payments {
		b.payments[order] = p
	}
	return b
}

// RequestPayment decides r at now: ignored when the order has a payment,
// declined as expired when now is at or past r.ExpiresAt, and otherwise to
// be authorized by the gateway.
func (b *Book) RequestPayment(r Request, now time.Time) (Decision, error) {
	if p, ok := b.payments[r.OrderID]; ok {
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
		return Decision{Action: ActionExpire, Payment: p}, b.add(p, announce(p, now))
	}
	return Decision{Action: ActionAuthorize, Payment: p, Authorization: gateway.AuthorizeRequest{
		// The order id whatever the request says: one order, one
		// authorization, however many requests arrive.
		IdempotencyKey: r.OrderID.String(),
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
		PaymentMethod:  p.Method,
	}}, nil
}

// Authorized records the gateway's answer res to d (an ActionAuthorize
// decision) at now: the payment is authorized, or declined with the
// gateway's reason ("declined" when it gives none). It returns the
// payment, and an error matching ErrExists when the order has a payment by
// now (d was decided already).
func (b *Book) Authorized(d Decision, res gateway.AuthorizeResult, now time.Time) (Payment, error) {
	p := d.Payment
	if _, ok := b.payments[p.OrderID]; ok {
		return Payment{}, fmt.Errorf("order %s: %w", p.OrderID, ErrExists)
	}
	if res.Approved {
		p.Status, p.GatewayReference = StatusAuthorized, res.Reference
	} else {
		p.Status, p.DeclineReason = StatusDeclined, res.DeclineReason
		if p.DeclineReason == "" {
			p.DeclineReason = "declined"
		}
	}
	return p, b.add(p, announce(p, now))
}

// RequestRefund decides r: the order's authorized payment is to be
// refunded by the gateway, an order without a payment is voided, and any
// other payment is left alone.
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
		return Decision{Action: ActionVoid, Payment: p}, b.add(p, nil)
	case p.Status != StatusAuthorized:
		return Decision{Action: ActionIgnore, Payment: p}, nil
	}
	// The whole authorization: the order was cancelled.
	return Decision{Action: ActionRefund, Payment: p, Refund: gateway.RefundRequest{
		IdempotencyKey: "refund:" + r.OrderID.String(),
		Reference:      p.GatewayReference,
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
	}}, nil
}

// Refunded records the gateway's refund res of d (an ActionRefund
// decision) at now: the payment becomes refunded. It returns the refund,
// and an error when the payment is no longer the authorized one d was
// decided on (d was decided already).
func (b *Book) Refunded(d Decision, res gateway.RefundResult, now time.Time) (Refund, error) {
	p, ok := b.payments[d.Payment.OrderID]
	if !ok || p.ID != d.Payment.ID || p.Status != StatusAuthorized {
		return Refund{}, fmt.Errorf("order %s: payment %s is not authorized", d.Payment.OrderID, d.Payment.ID)
	}
	r := Refund{
		ID:               uuid.New(),
		PaymentID:        p.ID,
		AmountCents:      p.AmountCents,
		Currency:         p.Currency,
		GatewayReference: res.Reference,
	}
	ev, err := outbox.NewEvent(p.OrderID.String(), &eventsv1.PaymentRefunded{
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
	p.Status = StatusRefunded
	b.payments[p.OrderID] = p
	b.refunds = append(b.refunds, &r)
	b.events = append(b.events, ev)
	return r, nil
}

// Payments returns the payments new in the book, in the order they were
// decided, as decided: one refunded later in the batch is still authorized
// here, since the store writes it first and then its refund.
func (b *Book) Payments() []*Payment { return b.created }

// Refunds returns the refunds of the book, in the order they were made.
func (b *Book) Refunds() []*Refund { return b.refunds }

// Events returns the events of the book's decisions, in the order they
// were made.
func (b *Book) Events() []outbox.Event { return b.events }

// add records p, a new payment, and its event msg (nil: none).
func (b *Book) add(p Payment, msg proto.Message) error {
	if msg != nil {
		ev, err := outbox.NewEvent(p.OrderID.String(), msg)
		if err != nil {
			return err
		}
		b.events = append(b.events, ev)
	}
	b.payments[p.OrderID] = p
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
