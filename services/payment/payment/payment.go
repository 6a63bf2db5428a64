// Package payment is the payment service's domain: a payment of an order, the
// states it can be in, the decisions on payment and refund requests (Book)
// with the events they publish, and the errors the rest of the service
// reports.
//
// An order has at most one payment. A PaymentRequested turns into an
// authorized or declined payment; a RefundRequested turns an authorized one
// into refunded, or, when no payment exists yet, records a voided one so that
// a PaymentRequested arriving later charges nothing (docs/saga.md, steps 4
// and 7).
//
// A gateway call is claimed before it is made and its answer recorded
// after, in two short transactions with none open across the call: the
// payment is authorizing (or refunding) in between. Whoever finds a
// payment in that state, a redelivery after a crash or a refund racing
// the charge, makes the same call again with the same idempotency key,
// which the provider answers as the first time, and records the answer.
package payment

import (
	"errors"
	"time"

	"github.com/google/uuid"
)

// Status is where a payment stands.
type Status string

// The statuses of a payment. Voided is internal: it marks an order that was
// cancelled before its payment ran, and the HTTP API does not list it.
// Authorizing and refunding are internal too: the gateway is being asked
// (or was, and its answer is not recorded yet) to authorize the payment,
// or to refund the authorized payment.
const (
	StatusAuthorizing Status = "authorizing"
	StatusAuthorized  Status = "authorized"
	StatusDeclined    Status = "declined"
	StatusRefunding   Status = "refunding"
	StatusRefunded    Status = "refunded"
	StatusVoided      Status = "voided"
)

// ReasonExpired is the decline reason of a payment requested after its
// deadline: the order has timed out, so the gateway is not asked at all.
const ReasonExpired = "expired"

// Payment is the payment of one order.
type Payment struct {
	ID          uuid.UUID
	OrderID     uuid.UUID
	CustomerID  string
	AmountCents int64
	Currency    string
	Method      string
	Status      Status
	// DeclineReason is set when Status is StatusDeclined: the gateway's
	// reason ("card_declined", "amount_limit", …) or ReasonExpired.
	DeclineReason string
	// GatewayReference is the gateway's id of the authorization; empty
	// unless the payment was authorized.
	GatewayReference string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Refund is the refund of an authorized payment; refunds are whole.
type Refund struct {
	ID               uuid.UUID
	PaymentID        uuid.UUID
	AmountCents      int64
	Currency         string
	GatewayReference string
	CreatedAt        time.Time
}

// Errors the service reports; match them with errors.Is.
var (
	// ErrExists means the order already has a payment: a second one would
	// be a second charge.
	ErrExists = errors.New("order already has a payment")
	// ErrInvalidOrderID means an order id is not a UUID.
	ErrInvalidOrderID = errors.New("order_id must be a UUID")
	// ErrSettled means a gateway answer is recorded already: the payment
	// is no longer in flight (another handler, resuming the same call,
	// recorded the same answer).
	ErrSettled = errors.New("the gateway's answer is recorded already")
)
