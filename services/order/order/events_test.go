package order_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
)

// decoded returns the messages of evs, checking that each is routed by the
// contract's table and belongs to aggregate.
func decoded(t *testing.T, evs []outbox.Event, aggregate string) []proto.Message {
	t.Helper()
	msgs := make([]proto.Message, len(evs))
	for i, e := range evs {
		m, err := eventsv1.Unmarshal(e.Type, e.Payload)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		r, ok := eventsv1.RouteOf(m)
		if !ok || e.Exchange != r.Exchange || e.RoutingKey != r.RoutingKey || e.AggregateID != aggregate {
			t.Errorf("event %d (%s) routed to %s/%s for %q, want %s/%s for %q", i, e.Type, e.Exchange, e.RoutingKey, e.AggregateID, r.Exchange, r.RoutingKey, aggregate)
		}
		msgs[i] = m
	}
	return msgs
}

// TestApplyEvents spells out the events of every transition of the state
// machine, compensations included: what the order service tells the rest
// of the saga.
func TestApplyEvents(t *testing.T) {
	t.Parallel()
	const id = "0190a6b4-0000-7000-8000-000000000001"
	created := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := created.Add(5 * time.Second)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 45 * time.Second}
	deadline := created.Add(timeouts.Reserve)
	at := timestamppb.New(now)
	in := func(s order.Status, r order.Reason, version int64, paymentID string) order.Order {
		o := order.Order{
			ID: id, CustomerID: "alice", Status: s, Reason: r, PaymentMethod: "pm_card_ok", PaymentID: paymentID,
			TotalCents: 2999, Currency: "EUR", Version: version, CreatedAt: created, UpdatedAt: created,
		}
		if s == order.StatusPending || s == order.StatusReserved {
			o.DeadlineAt = &deadline
		}
		return o
	}
	changed := func(s eventsv1.OrderStatus, r eventsv1.CancelReason, seq int64) *eventsv1.OrderStatusChanged {
		return &eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "alice", Status: s, Reason: r, Seq: seq, At: at}
	}
	cancelled := func(r eventsv1.CancelReason, prev eventsv1.OrderStatus, seq int64) *eventsv1.OrderCancelled {
		return &eventsv1.OrderCancelled{OrderId: id, CustomerId: "alice", Reason: r, PreviousStatus: prev, Seq: seq, CancelledAt: at}
	}
	release := func(r eventsv1.CancelReason) *eventsv1.ReleaseReservation {
		return &eventsv1.ReleaseReservation{OrderId: id, Reason: r, RequestedAt: at}
	}
	refund := func(paymentID string, r eventsv1.CancelReason) *eventsv1.RefundRequested {
		return &eventsv1.RefundRequested{OrderId: id, PaymentId: paymentID, AmountCents: 2999, Currency: "EUR", Reason: r,
			IdempotencyKey: "refund:" + id, RequestedAt: at}
	}
	const (
		pending   = eventsv1.OrderStatus_ORDER_STATUS_PENDING
		reserved  = eventsv1.OrderStatus_ORDER_STATUS_RESERVED
		confirmed = eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED
		shipped   = eventsv1.OrderStatus_ORDER_STATUS_SHIPPED
		delivered = eventsv1.OrderStatus_ORDER_STATUS_DELIVERED
		cancel    = eventsv1.OrderStatus_ORDER_STATUS_CANCELLED
		none      = eventsv1.CancelReason_CANCEL_REASON_UNSPECIFIED
		customer  = eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST
		timeout   = eventsv1.CancelReason_CANCEL_REASON_TIMEOUT
		stock     = eventsv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK
		declined  = eventsv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED
	)
	tests := []struct {
		name      string
		order     order.Order
		event     order.Event
		paymentID string
		want      []proto.Message
		wantErr   error
	}{
		{"stock reserved asks for payment until the payment deadline", in(order.StatusPending, "", 1, ""), order.EventStockReserved, "", []proto.Message{
			changed(reserved, none, 2),
			&eventsv1.PaymentRequested{OrderId: id, CustomerId: "alice", AmountCents: 2999, Currency: "EUR", PaymentMethod: "pm_card_ok",
				IdempotencyKey: id, RequestedAt: at, ExpiresAt: timestamppb.New(now.Add(timeouts.Payment))},
		}, nil},
		{"stock rejected cancels", in(order.StatusPending, "", 1, ""), order.EventStockRejected, "", []proto.Message{
			changed(cancel, stock, 2), cancelled(stock, pending, 2),
		}, nil},
		{"payment authorized commits the reservation", in(order.StatusReserved, "", 2, ""), order.EventPaymentAuthorized, "pay-1", []proto.Message{
			changed(confirmed, none, 3), &eventsv1.CommitReservation{OrderId: id, RequestedAt: at},
		}, nil},
		{"payment declined releases the stock", in(order.StatusReserved, "", 2, ""), order.EventPaymentDeclined, "", []proto.Message{
			changed(cancel, declined, 3), cancelled(declined, reserved, 3), release(declined),
		}, nil},
		{"cancel while pending", in(order.StatusPending, "", 1, ""), order.EventCancel, "", []proto.Message{
			changed(cancel, customer, 2), cancelled(customer, pending, 2), release(customer), refund("", customer),
		}, nil},
		{"cancel while reserved", in(order.StatusReserved, "", 2, ""), order.EventCancel, "", []proto.Message{
			changed(cancel, customer, 3), cancelled(customer, reserved, 3), release(customer), refund("", customer),
		}, nil},
		{"cancel once confirmed refunds the payment", in(order.StatusConfirmed, "", 3, "pay-1"), order.EventCancel, "", []proto.Message{
			changed(cancel, customer, 4), cancelled(customer, confirmed, 4), release(customer), refund("pay-1", customer),
		}, nil},
		{"timeout while pending", in(order.StatusPending, "", 1, ""), order.EventTimeout, "", []proto.Message{
			changed(cancel, timeout, 2), cancelled(timeout, pending, 2), release(timeout), refund("", timeout),
		}, nil},
		{"timeout while reserved", in(order.StatusReserved, "", 2, ""), order.EventTimeout, "", []proto.Message{
			changed(cancel, timeout, 3), cancelled(timeout, reserved, 3), release(timeout), refund("", timeout),
		}, nil},
		{"ship", in(order.StatusConfirmed, "", 3, "pay-1"), order.EventShip, "", []proto.Message{changed(shipped, none, 4)}, nil},
		{"deliver", in(order.StatusShipped, "", 4, "pay-1"), order.EventDeliver, "", []proto.Message{changed(delivered, none, 5)}, nil},
		{"stock reserved after a cancel is released", in(order.StatusCancelled, order.ReasonCustomerRequest, 2, ""), order.EventStockReserved, "", []proto.Message{
			release(customer),
		}, nil},
		{"payment authorized after a cancel is refunded, naming it", in(order.StatusCancelled, order.ReasonTimeout, 3, ""), order.EventPaymentAuthorized, "pay-9", []proto.Message{
			refund("pay-9", timeout),
		}, nil},
		{"a late message", in(order.StatusConfirmed, "", 3, "pay-1"), order.EventStockReserved, "", nil, order.ErrInvalidTransition},
		{"cancel once shipped", in(order.StatusShipped, "", 4, "pay-1"), order.EventCancel, "", nil, order.ErrNotCancellable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, evs, err := tt.order.Apply(tt.event, tt.paymentID, now, timeouts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, decoded(t, evs, id), protocmp.Transform(), cmpEmptyMsgs); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

var cmpEmptyMsgs = cmp.FilterValues(func(a, b []proto.Message) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(_, _ []proto.Message) bool { return true }))
