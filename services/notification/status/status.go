// Package status is what the notification service knows about an order: a
// Change is one status the order went through, as the order service's
// OrderStatusChanged event told it, and Message is how a Change travels to
// a shopper over WebSocket and Server-Sent Events.
package status

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// Change is one status of one order. Seq is the order's version: 1 for
// pending, one more for each later status; a higher Seq is always newer.
type Change struct {
	OrderID    string
	CustomerID string
	// Status and Reason are spelled as the HTTP API spells them
	// ("cancelled", "out_of_stock"); Reason is "" unless cancelled.
	Status string
	Reason string
	Seq    int64
	At     time.Time
	// Traceparent is the W3C trace context of the consumer span that
	// stored the change, so that its delivery to shoppers joins the
	// order's trace on whichever replica serves them; "" when unknown (a
	// change read back from the database).
	Traceparent string
}

// Terminal reports whether no status can follow this one (delivered or
// cancelled).
func (c Change) Terminal() bool { return IsTerminal(c.Status) }

// IsTerminal reports whether status ends an order's life.
func IsTerminal(status string) bool { return status == "delivered" || status == "cancelled" }

// ErrUnknownOrder is returned for an order the service has not heard of
// (yet: its first status may still be on its way).
var ErrUnknownOrder = errors.New("order not known to the notification service")

// ErrInvalidEvent is wrapped by FromEvent's errors: the event can never be
// applied, so its message belongs in the dead-letter queue.
var ErrInvalidEvent = errors.New("invalid OrderStatusChanged")

// FromEvent turns an OrderStatusChanged event into a Change. It returns an
// error wrapping ErrInvalidEvent when a field is missing or out of range.
func FromEvent(e *eventsv1.OrderStatusChanged) (Change, error) {
	id, err := uuid.Parse(e.GetOrderId())
	if err != nil {
		return Change{}, fmt.Errorf("%w: order_id %q is not a UUID", ErrInvalidEvent, e.GetOrderId())
	}
	c := Change{
		OrderID:    id.String(),
		CustomerID: e.GetCustomerId(),
		Status:     e.GetStatus().Label(),
		Reason:     e.GetReason().Label(),
		Seq:        e.GetSeq(),
	}
	switch {
	case c.Status == "":
		return Change{}, fmt.Errorf("%w: order %s: unknown status %v", ErrInvalidEvent, c.OrderID, e.GetStatus())
	case c.Seq <= 0:
		return Change{}, fmt.Errorf("%w: order %s: seq %d", ErrInvalidEvent, c.OrderID, c.Seq)
	case e.GetAt() == nil || !e.GetAt().IsValid():
		return Change{}, fmt.Errorf("%w: order %s: no valid at", ErrInvalidEvent, c.OrderID)
	case (c.Status == "cancelled") != (c.Reason != ""):
		return Change{}, fmt.Errorf("%w: order %s: status %q with reason %q", ErrInvalidEvent, c.OrderID, c.Status, c.Reason)
	}
	c.At = e.GetAt().AsTime()
	return c, nil
}

// Message returns the JSON message of c that clients receive:
//
//	{"type":"status","order_id":"…","status":"cancelled","reason":"out_of_stock","seq":3,"at":"2026-01-02T15:04:05.123Z"}
//
// with "reason":null when there is none and at in RFC 3339 (UTC, with
// fractional seconds when it has them). It is built by hand because it is
// encoded once per change and then shared by every connection watching
// the order.
func (c Change) Message() []byte {
	b := make([]byte, 0, 160)
	b = append(b, `{"type":"status","order_id":`...)
	b = strconv.AppendQuote(b, c.OrderID)
	b = append(b, `,"status":`...)
	b = strconv.AppendQuote(b, c.Status)
	b = append(b, `,"reason":`...)
	if c.Reason == "" {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendQuote(b, c.Reason)
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, c.Seq, 10)
	b = append(b, `,"at":"`...)
	b = c.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `"}`...)
	return b
}
