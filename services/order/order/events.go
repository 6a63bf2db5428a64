package order

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// transitionEvents are the events of transition t, which left order o (as
// it is after t) in status prev at now: OrderStatusChanged and, into
// cancelled, OrderCancelled when the status changes, then t's commands.
func transitionEvents(o Order, prev Status, t Transition, now time.Time) ([]outbox.Event, error) {
	var msgs []proto.Message
	if t.Changes() {
		msgs = append(msgs, statusChanged(o))
		if o.Status == StatusCancelled {
			msgs = append(msgs, &eventsv1.OrderCancelled{
				OrderId:        o.ID,
				CustomerId:     o.CustomerID,
				Reason:         protoReason(o.Reason),
				PreviousStatus: protoStatus(prev),
				Seq:            o.Version,
				CancelledAt:    timestamppb.New(now),
			})
		}
	}
	at := timestamppb.New(now)
	for _, c := range t.Commands {
		switch c {
		case CommandRequestPayment:
			msgs = append(msgs, &eventsv1.PaymentRequested{
				OrderId:        o.ID,
				CustomerId:     o.CustomerID,
				AmountCents:    o.TotalCents,
				Currency:       o.Currency,
				PaymentMethod:  o.PaymentMethod,
				IdempotencyKey: o.ID,
				RequestedAt:    at,
				ExpiresAt:      timestamppb.New(*o.DeadlineAt),
			})
		case CommandCommitReservation:
			msgs = append(msgs, &eventsv1.CommitReservation{OrderId: o.ID, RequestedAt: at})
		case CommandReleaseReservation:
			msgs = append(msgs, &eventsv1.ReleaseReservation{OrderId: o.ID, Reason: protoReason(o.Reason), RequestedAt: at})
		case CommandRequestRefund:
			msgs = append(msgs, &eventsv1.RefundRequested{
				OrderId:        o.ID,
				PaymentId:      o.PaymentID,
				AmountCents:    o.TotalCents,
				Currency:       o.Currency,
				Reason:         protoReason(o.Reason),
				IdempotencyKey: "refund:" + o.ID,
				RequestedAt:    at,
			})
		default:
			return nil, fmt.Errorf("order %s: unknown command %q", o.ID, c)
		}
	}
	return newEvents(o.ID, msgs...)
}

func statusChanged(o Order) *eventsv1.OrderStatusChanged {
	return &eventsv1.OrderStatusChanged{
		OrderId:    o.ID,
		CustomerId: o.CustomerID,
		Status:     protoStatus(o.Status),
		Reason:     protoReason(o.Reason),
		Seq:        o.Version,
		At:         timestamppb.New(o.UpdatedAt),
	}
}

// newEvents routes msgs (see eventsv1.Routes) with the order as aggregate.
func newEvents(orderID string, msgs ...proto.Message) ([]outbox.Event, error) {
	out := make([]outbox.Event, 0, len(msgs))
	for _, m := range msgs {
		e, err := outbox.NewEvent(orderID, m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func protoStatus(s Status) eventsv1.OrderStatus {
	v, _ := eventsv1.ParseOrderStatus(string(s))
	return v
}

func protoReason(r Reason) eventsv1.CancelReason {
	v, _ := eventsv1.ParseCancelReason(string(r))
	return v
}
