package order_test

import (
	"errors"
	"fmt"
	"strings"
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

// TestNext spells out the expected outcome of every (status, event) pair,
// independently of the table in lifecycle.go: 6 statuses × 8 events.
func TestNext(t *testing.T) {
	t.Parallel()
	type want struct {
		to       order.Status
		reason   order.Reason
		commands []order.Command
		deadline order.Deadline
	}
	var (
		release = order.CommandReleaseReservation
		refund  = order.CommandRequestRefund
	)
	allowed := map[order.Status]map[order.Event]want{
		order.StatusPending: {
			order.EventStockReserved: {order.StatusReserved, "", []order.Command{order.CommandRequestPayment}, order.DeadlinePayment},
			order.EventStockRejected: {order.StatusCancelled, order.ReasonOutOfStock, nil, order.DeadlineClear},
			order.EventCancel:        {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventTimeout:       {order.StatusCancelled, order.ReasonTimeout, []order.Command{release, refund}, order.DeadlineClear},
		},
		order.StatusReserved: {
			order.EventPaymentAuthorized: {order.StatusConfirmed, "", []order.Command{order.CommandCommitReservation}, order.DeadlineClear},
			order.EventPaymentDeclined:   {order.StatusCancelled, order.ReasonPaymentDeclined, []order.Command{release}, order.DeadlineClear},
			order.EventCancel:            {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventTimeout:           {order.StatusCancelled, order.ReasonTimeout, []order.Command{release, refund}, order.DeadlineClear},
		},
		order.StatusConfirmed: {
			order.EventCancel: {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventShip:   {order.StatusShipped, "", nil, order.DeadlineClear},
		},
		order.StatusShipped: {
			order.EventDeliver: {order.StatusDelivered, "", nil, order.DeadlineClear},
		},
		order.StatusDelivered: {},
		order.StatusCancelled: {
			// Compensations: no status change, but the held stock or the
			// authorized payment is given back.
			order.EventStockReserved:     {order.StatusCancelled, "", []order.Command{release}, order.DeadlineKeep},
			order.EventPaymentAuthorized: {order.StatusCancelled, "", []order.Command{refund}, order.DeadlineKeep},
		},
	}
	if len(allowed) != len(order.Statuses) {
		t.Fatalf("test covers %d statuses, domain has %d", len(allowed), len(order.Statuses))
	}
	for _, from := range order.Statuses {
		for _, ev := range order.Events {
			t.Run(fmt.Sprintf("%s/%s", from, ev), func(t *testing.T) {
				t.Parallel()
				got, err := order.Next(from, ev)
				w, ok := allowed[from][ev]
				if !ok {
					if !errors.Is(err, order.ErrInvalidTransition) {
						t.Fatalf("Next(%s, %s) = %+v, %v; want ErrInvalidTransition", from, ev, got, err)
					}
					if ev == order.EventCancel && !errors.Is(err, order.ErrNotCancellable) {
						t.Errorf("refused cancel error %v does not match ErrNotCancellable", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Next(%s, %s) error = %v, want a transition", from, ev, err)
				}
				wantT := order.Transition{From: from, On: ev, To: w.to, Reason: w.reason, Commands: w.commands, Deadline: w.deadline}
				if diff := cmp.Diff(wantT, got, cmpEmptyNil); diff != "" {
					t.Errorf("Next(%s, %s) mismatch (-want +got):\n%s", from, ev, diff)
				}
			})
		}
	}
}

var cmpEmptyNil = cmp.FilterValues(func(a, b []order.Command) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(_, _ []order.Command) bool { return true }))

func TestOrderApply(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := created.Add(time.Second)
	deadline := created.Add(30 * time.Second)
	pending := order.Order{ID: "o", Status: order.StatusPending, Version: 1, DeadlineAt: &deadline, CreatedAt: created, UpdatedAt: created}

	reserved, tr, _, err := pending.Apply(order.EventStockReserved, "", now, order.Timeouts{Payment: time.Minute})
	if err != nil || tr.To != order.StatusReserved {
		t.Fatalf("StockReserved = %+v, %v", tr, err)
	}
	if reserved.Status != order.StatusReserved || reserved.Version != 2 || !reserved.UpdatedAt.Equal(now) ||
		reserved.DeadlineAt == nil || !reserved.DeadlineAt.Equal(now.Add(time.Minute)) {
		t.Errorf("reserved order = %+v, want version 2 with the payment deadline", reserved)
	}
	if pending.Status != order.StatusPending || pending.DeadlineAt != &deadline {
		t.Errorf("Apply changed the order it was called on: %+v", pending)
	}

	confirmed, _, _, err := reserved.Apply(order.EventPaymentAuthorized, "pay-1", now, order.Timeouts{Payment: time.Minute})
	if err != nil || confirmed.Status != order.StatusConfirmed || confirmed.PaymentID != "pay-1" || confirmed.DeadlineAt != nil || confirmed.Version != 3 {
		t.Errorf("confirmed order = %+v, %v; want version 3, the payment, no deadline", confirmed, err)
	}

	// A compensation keeps the status and version but records the payment.
	cancelled := pending
	cancelled.Status, cancelled.Reason, cancelled.DeadlineAt = order.StatusCancelled, order.ReasonTimeout, nil
	after, tr, _, err := cancelled.Apply(order.EventPaymentAuthorized, "pay-2", now, order.Timeouts{Payment: time.Minute})
	if err != nil || tr.Changes() || after.Version != cancelled.Version || after.PaymentID != "pay-2" ||
		len(tr.Commands) != 1 || tr.Commands[0] != order.CommandRequestRefund {
		t.Errorf("late authorization = %+v, %+v, %v; want a refund and the payment recorded", after, tr, err)
	}

	if same, _, _, err := confirmed.Apply(order.EventStockReserved, "", now, order.Timeouts{Payment: time.Minute}); !errors.Is(err, order.ErrInvalidTransition) || same.Version != confirmed.Version {
		t.Errorf("duplicate StockReserved = %+v, %v; want ErrInvalidTransition and no change", same, err)
	}
}

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
	// Into cancelled while payment may be in flight or done: both
	// compensations go out.
	compensated := func(r eventsv1.CancelReason, prev eventsv1.OrderStatus, seq int64, paymentID string) []proto.Message {
		return []proto.Message{changed(cancel, r, seq), cancelled(r, prev, seq), release(r), refund(paymentID, r)}
	}
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
		{"cancel while pending", in(order.StatusPending, "", 1, ""), order.EventCancel, "", compensated(customer, pending, 2, ""), nil},
		{"cancel while reserved", in(order.StatusReserved, "", 2, ""), order.EventCancel, "", compensated(customer, reserved, 3, ""), nil},
		{"cancel once confirmed refunds the payment", in(order.StatusConfirmed, "", 3, "pay-1"), order.EventCancel, "", compensated(customer, confirmed, 4, "pay-1"), nil},
		{"timeout while pending", in(order.StatusPending, "", 1, ""), order.EventTimeout, "", compensated(timeout, pending, 2, ""), nil},
		{"timeout while reserved", in(order.StatusReserved, "", 2, ""), order.EventTimeout, "", compensated(timeout, reserved, 3, ""), nil},
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

// TestApplySteps checks a run of steps on several orders at once, as a
// batch of saga answers or a sweep brings them: steps of one order see the
// steps before them, a step that does not apply is reported and the others
// go on, and the outcome says what to save.
func TestApplySteps(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := created.Add(time.Second)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 30 * time.Second}
	deadline := created.Add(timeouts.Reserve)
	orderIn := func(id string, s order.Status) order.Order {
		o := order.Order{ID: id, CustomerID: "alice", Status: s, Version: 1, TotalCents: 100, Currency: "EUR", CreatedAt: created, UpdatedAt: created}
		if s == order.StatusPending {
			o.DeadlineAt = &deadline
		} else {
			o.Reason = order.ReasonCustomerRequest
		}
		return o
	}
	orders := map[string]order.Order{
		"a": orderIn("a", order.StatusPending),
		"b": orderIn("b", order.StatusPending),
		"c": orderIn("c", order.StatusCancelled),
	}
	step := func(id string, ev order.Event) order.Step { return order.Step{OrderID: id, Event: ev} }
	tests := []struct {
		name                   string
		steps                  []order.Step
		results                []string // status and version, or why the step did nothing
		changed, entered, evts []string
	}{
		{
			name:    "one order, two steps at once",
			steps:   []order.Step{step("a", order.EventStockReserved), {OrderID: "a", Event: order.EventPaymentAuthorized, PaymentID: "pay-a"}},
			results: []string{"reserved v2", "confirmed v3"},
			changed: []string{"a confirmed v3 pay-a"},
			entered: []string{"a reserved v2", "a confirmed v3"},
			evts:    []string{"OrderStatusChanged", "PaymentRequested", "OrderStatusChanged", "CommitReservation"},
		},
		{
			name:    "a duplicate is reported, the others go on",
			steps:   []order.Step{step("a", order.EventStockReserved), step("a", order.EventStockReserved), step("b", order.EventStockRejected)},
			results: []string{"reserved v2", "transition not allowed in the order's current status", "cancelled v2"},
			changed: []string{"a reserved v2 ", "b cancelled v2 "},
			entered: []string{"a reserved v2", "b cancelled v2"},
			evts:    []string{"OrderStatusChanged", "PaymentRequested", "OrderStatusChanged", "OrderCancelled"},
		},
		{
			name:    "an unknown order",
			steps:   []order.Step{step("x", order.EventStockReserved)},
			results: []string{"order not found"},
		},
		{
			name:    "another customer's order is not found",
			steps:   []order.Step{{OrderID: "a", Event: order.EventCancel, Owner: "mallory"}, {OrderID: "b", Event: order.EventCancel, Owner: "alice"}},
			results: []string{"order not found", "cancelled v2"},
			changed: []string{"b cancelled v2 "},
			entered: []string{"b cancelled v2"},
			evts:    []string{"OrderStatusChanged", "OrderCancelled", "ReleaseReservation", "RefundRequested"},
		},
		{
			name:    "a compensation records the payment it refunds, with no history entry",
			steps:   []order.Step{{OrderID: "c", Event: order.EventPaymentAuthorized, PaymentID: "pay-c"}},
			results: []string{"cancelled v1"},
			changed: []string{"c cancelled v1 pay-c"},
			evts:    []string{"RefundRequested"},
		},
		{
			name:    "a compensation that records nothing changes no row",
			steps:   []order.Step{step("c", order.EventStockReserved)},
			results: []string{"cancelled v1"},
			evts:    []string{"ReleaseReservation"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := order.ApplySteps(orders, tt.steps, now, timeouts)
			if err != nil {
				t.Fatal(err)
			}
			var results, changed, entered, evts []string
			for _, r := range out.Results {
				results = append(results, describe(r))
			}
			for _, o := range out.Changed {
				changed = append(changed, fmt.Sprintf("%s %s v%d %s", o.ID, o.Status, o.Version, o.PaymentID))
			}
			for _, o := range out.Entered {
				entered = append(entered, fmt.Sprintf("%s %s v%d", o.ID, o.Status, o.Version))
			}
			for _, e := range out.Events {
				evts = append(evts, e.Type[strings.LastIndex(e.Type, ".")+1:])
			}
			for name, d := range map[string]string{
				"results": cmp.Diff(tt.results, results), "changed": cmp.Diff(tt.changed, changed),
				"entered": cmp.Diff(tt.entered, entered), "events": cmp.Diff(tt.evts, evts),
			} {
				if d != "" {
					t.Errorf("%s (-want +got):\n%s", name, d)
				}
			}
			if orders["a"].Status != order.StatusPending || orders["c"].PaymentID != "" {
				t.Error("ApplySteps changed the orders it was given")
			}
		})
	}
}

// describe is a step's result in a word: the sentinel it failed with, or the
// status and version it left the order in.
func describe(r order.Result) string {
	for _, sentinel := range []error{order.ErrNotFound, order.ErrInvalidTransition} {
		if errors.Is(r.Err, sentinel) {
			return sentinel.Error()
		}
	}
	return fmt.Sprintf("%s v%d", r.Order.Status, r.Order.Version)
}
