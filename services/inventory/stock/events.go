package stock

import (
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// The events inventory publishes, routed by the contract's table
// (eventsv1.RouteOf). Reservation events have the order id as aggregate, so
// the order service sees them in order; product events have the SKU.

// ProductUpserted is the event of an administrator's upsert of p, as stored
// (with its new version and time). Stock moved by orders publishes no
// product event: the catalog replica needs names and prices only.
func ProductUpserted(p Product) (outbox.Event, error) {
	return outbox.NewEvent(p.SKU, &eventsv1.ProductUpserted{
		Sku:        p.SKU,
		Name:       p.Name,
		PriceCents: p.PriceCents,
		Currency:   p.Currency,
		Version:    p.Version,
		UpdatedAt:  timestamppb.New(p.UpdatedAt),
	})
}

// eventOf returns the event announcing an applied change to the order's
// reservation: StockReserved or StockRejected, ReservationCommitted,
// ReservationReleased.
func eventOf(orderID uuid.UUID, c Change, at time.Time) (outbox.Event, error) {
	id, ts := orderID.String(), timestamppb.New(at)
	switch c.Status {
	case StatusReserved:
		return outbox.NewEvent(id, &eventsv1.StockReserved{OrderId: id, Items: stockLines(c.Lines), ReservedAt: ts})
	case StatusRejected:
		msg := &eventsv1.StockRejected{OrderId: id, RejectedAt: ts}
		for _, s := range c.Shortages {
			msg.Shortages = append(msg.Shortages, &eventsv1.StockShortage{Sku: s.SKU, Requested: s.Requested, Available: s.Available})
		}
		return outbox.NewEvent(id, msg)
	case StatusCommitted:
		return outbox.NewEvent(id, &eventsv1.ReservationCommitted{OrderId: id, Items: stockLines(c.Lines), CommittedAt: ts})
	case StatusReleased:
		return outbox.NewEvent(id, &eventsv1.ReservationReleased{OrderId: id, Items: stockLines(c.Lines), ReleasedAt: ts})
	}
	return outbox.Event{}, fmt.Errorf("order %s: no event for status %q", orderID, c.Status)
}

func stockLines(lines []Line) []*eventsv1.StockLine {
	out := make([]*eventsv1.StockLine, len(lines))
	for i, l := range lines {
		out[i] = &eventsv1.StockLine{Sku: l.SKU, Quantity: l.Quantity}
	}
	return out
}
