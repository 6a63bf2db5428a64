package postgres

import (
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/stock"
)

// The events inventory publishes, each on inventory.events with the routing
// key from names.go. Reservation events have the order id as aggregate, so
// the order service sees them in order; product events have the SKU.

func productUpserted(p stock.Product) (outbox.Event, error) {
	return outbox.NewEvent(p.SKU, &eventsv1.ProductUpserted{
		Sku:        p.SKU,
		Name:       p.Name,
		PriceCents: p.PriceCents,
		Currency:   p.Currency,
		Version:    p.Version,
		UpdatedAt:  timestamppb.New(p.UpdatedAt),
	})
}

func stockReserved(orderID uuid.UUID, lines []stock.Line, at time.Time) (outbox.Event, error) {
	return outbox.NewEvent(orderID.String(), &eventsv1.StockReserved{
		OrderId:    orderID.String(),
		Items:      stockLines(lines),
		ReservedAt: timestamppb.New(at),
	})
}

func stockRejected(orderID uuid.UUID, shortages []stock.Shortage, at time.Time) (outbox.Event, error) {
	msg := &eventsv1.StockRejected{OrderId: orderID.String(), RejectedAt: timestamppb.New(at)}
	for _, s := range shortages {
		msg.Shortages = append(msg.Shortages, &eventsv1.StockShortage{Sku: s.SKU, Requested: s.Requested, Available: s.Available})
	}
	return outbox.NewEvent(orderID.String(), msg)
}

func reservationCommitted(orderID uuid.UUID, lines []stock.Line, at time.Time) (outbox.Event, error) {
	return outbox.NewEvent(orderID.String(), &eventsv1.ReservationCommitted{
		OrderId:     orderID.String(),
		Items:       stockLines(lines),
		CommittedAt: timestamppb.New(at),
	})
}

func reservationReleased(orderID uuid.UUID, lines []stock.Line, at time.Time) (outbox.Event, error) {
	return outbox.NewEvent(orderID.String(), &eventsv1.ReservationReleased{
		OrderId:    orderID.String(),
		Items:      stockLines(lines),
		ReleasedAt: timestamppb.New(at),
	})
}

func stockLines(lines []stock.Line) []*eventsv1.StockLine {
	out := make([]*eventsv1.StockLine, len(lines))
	for i, l := range lines {
		out[i] = &eventsv1.StockLine{Sku: l.SKU, Quantity: l.Quantity}
	}
	return out
}
