// Package order is the order service's domain: an order's statuses and cancel
// reasons, the saga that moves an order through them (an explicit state
// machine, see lifecycle.go; a batch of steps, steps.go), the rules a new
// order must satisfy and its placing (place.go), the events each of these
// decisions publishes (events.go), what a page of an order list may ask for
// and where it starts (list.go, cursor.go), and the errors the rest of the
// service maps to HTTP and to message handling. It does no I/O: the time and
// the saga's Timeouts are parameters.
package order

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// Status is the state of an order, spelled as in the HTTP API and in
// OrderStatusChanged labels.
type Status string

// The statuses of the lifecycle: pending → reserved → confirmed → shipped →
// delivered, and cancelled from any status before shipped.
const (
	StatusPending   Status = "pending"
	StatusReserved  Status = "reserved"
	StatusConfirmed Status = "confirmed"
	StatusShipped   Status = "shipped"
	StatusDelivered Status = "delivered"
	StatusCancelled Status = "cancelled"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusPending, StatusReserved, StatusConfirmed, StatusShipped, StatusDelivered, StatusCancelled}

// ParseStatus returns the status spelled s, or ErrInvalidStatus.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("%w: %q", ErrInvalidStatus, s)
}

// Terminal reports whether no transition leaves s.
func (s Status) Terminal() bool { return s == StatusDelivered || s == StatusCancelled }

// Reason says why an order was cancelled; it is empty for every other status.
type Reason string

// Cancel reasons.
const (
	ReasonNone            Reason = ""
	ReasonOutOfStock      Reason = "out_of_stock"
	ReasonPaymentDeclined Reason = "payment_declined"
	ReasonCustomerRequest Reason = "customer_request"
	ReasonTimeout         Reason = "timeout"
)

// Sentinel errors. Functions of this service wrap them with the operation
// (`fmt.Errorf("cancel order %s: %w", id, ErrNotCancellable)`); callers
// match them with errors.Is.
var (
	// ErrNotFound means there is no such order, or it belongs to someone else.
	ErrNotFound = errors.New("order not found")
	// ErrNotCancellable means the order is shipped, delivered or cancelled already.
	ErrNotCancellable = errors.New("order can no longer be cancelled")
	// ErrInvalidTransition means the state machine has no transition for the
	// order's status and the event (shipping a pending order, a late message).
	ErrInvalidTransition = errors.New("transition not allowed in the order's current status")
	// ErrInvalidOrder means a new order breaks a rule on its fields; the
	// wrapping error says which (see ValidationError).
	ErrInvalidOrder = errors.New("invalid order")
	// ErrUnknownSKU means a line names a SKU the catalog does not have.
	ErrUnknownSKU = errors.New("unknown SKU")
	// ErrMixedCurrency means the lines are priced in more than one currency.
	ErrMixedCurrency = errors.New("items are priced in different currencies")
	// ErrForbiddenCustomer means the request names a customer other than the caller.
	ErrForbiddenCustomer = errors.New("customer_id is not the caller's")
	// ErrInvalidStatus means a status filter is not one of Statuses.
	ErrInvalidStatus = errors.New("unknown order status")
	// ErrInvalidCursor means a list cursor was not made by this service.
	ErrInvalidCursor = errors.New("invalid cursor")
	// ErrInvalidQuery means another parameter of a list (limit, a time
	// bound, customer_id) is malformed or given twice; the wrapping
	// ValidationError says which.
	ErrInvalidQuery = errors.New("invalid query parameter")
	// ErrIdempotencyKeyInUse means the first request with this
	// Idempotency-Key is still being processed.
	ErrIdempotencyKeyInUse = errors.New("a request with this Idempotency-Key is still in progress")
	// ErrOverloaded means the saga lags too far behind to take a new order
	// now (see Admission); the client retries later.
	ErrOverloaded = errors.New("the service is taking no new orders for now: the orders it has are late")
	// ErrIdempotencyKeyReused means the Idempotency-Key was first used
	// with a different request body.
	ErrIdempotencyKeyReused = errors.New("this Idempotency-Key was used with a different request body")
)

// ValidationError is a rule a request broke, written for the client. It
// matches its Kind (ErrInvalidOrder, ErrUnknownSKU, …) with errors.Is.
type ValidationError struct {
	Kind   error
	Detail string
}

// Error returns the client-facing detail.
func (e *ValidationError) Error() string { return e.Detail }

// Unwrap returns the kind, for errors.Is.
func (e *ValidationError) Unwrap() error { return e.Kind }

// ProblemDetail returns the client-facing detail, for httpx.WriteError.
func (e *ValidationError) ProblemDetail() string { return e.Detail }

func invalid(kind error, format string, args ...any) error {
	return &ValidationError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// Limits of a new order.
const (
	MaxLines            = 100
	MinQuantity         = 1
	MaxQuantity         = 1000
	MaxPaymentMethodLen = 64
	MaxSKULen           = 64
)

// Line is one requested line of a new order.
type Line struct {
	SKU      string
	Quantity int
}

// Item is one priced line of an order.
type Item struct {
	SKU            string
	Quantity       int
	UnitPriceCents int64
}

// Product is what the catalog replica knows of a SKU.
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
	Currency   string
	Version    int64
}

// Request is a new order as a customer asked for it.
type Request struct {
	CustomerID    string
	Lines         []Line
	PaymentMethod string
}

// Validate checks the rules that need no catalog: 1..100 lines, no SKU
// twice, quantities 1..1000, a payment method of 1..64 printable
// characters. It returns a *ValidationError of kind ErrInvalidOrder naming
// the first broken rule, or nil.
func (r Request) Validate() error {
	switch {
	case len(r.Lines) == 0:
		return invalid(ErrInvalidOrder, "items must not be empty")
	case len(r.Lines) > MaxLines:
		return invalid(ErrInvalidOrder, "items must have at most %d lines, got %d", MaxLines, len(r.Lines))
	}
	seen := make(map[string]bool, len(r.Lines))
	for i, l := range r.Lines {
		switch {
		case l.SKU == "":
			return invalid(ErrInvalidOrder, "items[%d].sku must not be empty", i)
		case len(l.SKU) > MaxSKULen:
			return invalid(ErrInvalidOrder, "items[%d].sku must be at most %d bytes", i, MaxSKULen)
		case seen[l.SKU]:
			return invalid(ErrInvalidOrder, "items[%d].sku %q appears more than once; put the total quantity on one line", i, l.SKU)
		case l.Quantity < MinQuantity || l.Quantity > MaxQuantity:
			return invalid(ErrInvalidOrder, "items[%d].quantity must be between %d and %d, got %d", i, MinQuantity, MaxQuantity, l.Quantity)
		}
		seen[l.SKU] = true
	}
	switch pm := r.PaymentMethod; {
	case strings.TrimSpace(pm) == "":
		return invalid(ErrInvalidOrder, "payment_method must not be empty")
	case len(pm) > MaxPaymentMethodLen:
		return invalid(ErrInvalidOrder, "payment_method must be at most %d bytes", MaxPaymentMethodLen)
	case strings.IndexFunc(pm, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return invalid(ErrInvalidOrder, "payment_method must contain printable characters only")
	}
	return nil
}

// Price prices the lines with the catalog's products (keyed by SKU). It
// returns the items, the total and the currency, or a *ValidationError of
// kind ErrUnknownSKU naming every SKU the catalog lacks, or of kind
// ErrMixedCurrency.
func Price(lines []Line, catalog map[string]Product) (items []Item, totalCents int64, currency string, err error) {
	var unknown []string
	for _, l := range lines {
		p, ok := catalog[l.SKU]
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%q", l.SKU))
			continue
		}
		if currency == "" {
			currency = p.Currency
		} else if p.Currency != currency {
			return nil, 0, "", invalid(ErrMixedCurrency, "items are priced in %s and %s; place one order per currency", currency, p.Currency)
		}
		items = append(items, Item{SKU: l.SKU, Quantity: l.Quantity, UnitPriceCents: p.PriceCents})
		totalCents += p.PriceCents * int64(l.Quantity)
	}
	if len(unknown) > 0 {
		return nil, 0, "", invalid(ErrUnknownSKU, "unknown SKU %s", strings.Join(unknown, ", "))
	}
	return items, totalCents, currency, nil
}

// Order is an order as stored.
type Order struct {
	ID            string
	CustomerID    string
	Status        Status
	Reason        Reason
	PaymentMethod string
	PaymentID     string
	Items         []Item
	TotalCents    int64
	Currency      string
	Version       int64
	DeadlineAt    *time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
	// History is filled only where the caller asked for it, oldest first.
	History []HistoryEntry
}

// HistoryEntry is one status an order went through.
type HistoryEntry struct {
	Seq    int64
	Status Status
	Reason Reason
	At     time.Time
}
