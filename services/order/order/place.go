package order

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// expirySlack is added to both timeouts for OrderPlaced's expires_at: past
// it nobody should act on the order any more, even a late saga step.
const expirySlack = time.Minute

// Place decides a new order: req, checked by Validate and priced with the
// catalog's products (keyed by SKU, see Price), becomes order id, placed at
// now. It returns the order as pending (version 1, one history entry) with
// inventory's deadline, now plus t.Reserve, and its events: OrderPlaced,
// which expires when both steps and a minute of slack have passed, and
// OrderStatusChanged. It returns Validate's and Price's
// *ValidationError.
func Place(req Request, catalog map[string]Product, id string, now time.Time, t Timeouts) (Order, []outbox.Event, error) {
	if err := req.Validate(); err != nil {
		return Order{}, nil, err
	}
	items, total, currency, err := Price(req.Lines, catalog)
	if err != nil {
		return Order{}, nil, err
	}
	deadline := now.Add(t.Reserve)
	o := Order{
		ID:            id,
		CustomerID:    req.CustomerID,
		Status:        StatusPending,
		PaymentMethod: req.PaymentMethod,
		Items:         items,
		TotalCents:    total,
		Currency:      currency,
		Version:       1,
		DeadlineAt:    &deadline,
		CreatedAt:     now,
		UpdatedAt:     now,
		History:       []HistoryEntry{{Seq: 1, Status: StatusPending, At: now}},
	}
	lines := make([]*eventsv1.LineItem, len(o.Items))
	for i, it := range o.Items {
		lines[i] = &eventsv1.LineItem{Sku: it.SKU, Quantity: int32(it.Quantity), UnitPriceCents: it.UnitPriceCents} //nolint:gosec // 1..1000
	}
	placed := &eventsv1.OrderPlaced{
		OrderId:       o.ID,
		CustomerId:    o.CustomerID,
		Items:         lines,
		TotalCents:    o.TotalCents,
		Currency:      o.Currency,
		PaymentMethod: o.PaymentMethod,
		PlacedAt:      timestamppb.New(now),
		ExpiresAt:     timestamppb.New(now.Add(t.Reserve + t.Payment + expirySlack)),
	}
	events, err := newEvents(o.ID, placed, statusChanged(o))
	if err != nil {
		return Order{}, nil, err
	}
	return o, events, nil
}
