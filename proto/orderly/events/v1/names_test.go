package eventsv1_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

func TestRoutes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		msg      proto.Message
		exchange string
		key      string
	}{
		{&eventsv1.OrderPlaced{}, "order.events", "order.placed"},
		{&eventsv1.PaymentRequested{}, "order.events", "payment.requested"},
		{&eventsv1.CommitReservation{}, "order.events", "reservation.commit"},
		{&eventsv1.ReleaseReservation{}, "order.events", "reservation.release"},
		{&eventsv1.RefundRequested{}, "order.events", "refund.requested"},
		{&eventsv1.OrderStatusChanged{}, "order.events", "order.status_changed"},
		{&eventsv1.OrderCancelled{}, "order.events", "order.cancelled"},
		{&eventsv1.StockReserved{}, "inventory.events", "stock.reserved"},
		{&eventsv1.StockRejected{}, "inventory.events", "stock.rejected"},
		{&eventsv1.ReservationCommitted{}, "inventory.events", "reservation.committed"},
		{&eventsv1.ReservationReleased{}, "inventory.events", "reservation.released"},
		{&eventsv1.ProductUpserted{}, "inventory.events", "product.upserted"},
		{&eventsv1.PaymentAuthorized{}, "payment.events", "payment.authorized"},
		{&eventsv1.PaymentDeclined{}, "payment.events", "payment.declined"},
		{&eventsv1.PaymentRefunded{}, "payment.events", "payment.refunded"},
	}
	if got, want := len(eventsv1.Routes()), len(tests); got != want {
		t.Fatalf("len(Routes()) = %d, want %d", got, want)
	}
	for _, tt := range tests {
		name := string(tt.msg.ProtoReflect().Descriptor().FullName())
		got, ok := eventsv1.RouteOf(tt.msg)
		if !ok {
			t.Errorf("RouteOf(%s): no route", name)
			continue
		}
		want := eventsv1.Route{Exchange: tt.exchange, RoutingKey: tt.key, Type: name}
		if got != want {
			t.Errorf("RouteOf(%s) = %+v, want %+v", name, got, want)
		}
		if byType, ok := eventsv1.RouteByType(name); !ok || byType != want {
			t.Errorf("RouteByType(%q) = %+v, %v; want %+v, true", name, byType, ok, want)
		}
	}
}

// TestEveryMessageIsRouted catches a message added to events.proto without a
// route in names.go.
func TestEveryMessageIsRouted(t *testing.T) {
	t.Parallel()
	parts := map[string]bool{"LineItem": true, "StockLine": true, "StockShortage": true}
	msgs := eventsv1.File_orderly_events_v1_events_proto.Messages()
	routed := 0
	for i := range msgs.Len() {
		md := msgs.Get(i)
		if parts[string(md.Name())] {
			continue
		}
		routed++
		if _, ok := eventsv1.RouteByType(string(md.FullName())); !ok {
			t.Errorf("message %s has no route in names.go", md.FullName())
		}
	}
	if got := len(eventsv1.Routes()); got != routed {
		t.Errorf("names.go has %d routes, events.proto %d routed messages", got, routed)
	}
}

func TestRoutingKeysAreDottedLowerCase(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, r := range eventsv1.Routes() {
		if r.RoutingKey != strings.ToLower(r.RoutingKey) || strings.Count(r.RoutingKey, ".") != 1 {
			t.Errorf("routing key %q is not <subject>.<action> in lower case", r.RoutingKey)
		}
		if seen[r.RoutingKey] {
			t.Errorf("routing key %q used twice", r.RoutingKey)
		}
		seen[r.RoutingKey] = true
	}
}

func TestRouteOfNonEvent(t *testing.T) {
	t.Parallel()
	if r, ok := eventsv1.RouteOf(&eventsv1.LineItem{}); ok {
		t.Errorf("RouteOf(LineItem) = %+v, true; want false", r)
	}
	if r, ok := eventsv1.RouteOf(nil); ok {
		t.Errorf("RouteOf(nil) = %+v, true; want false", r)
	}
	if r, ok := eventsv1.RouteByType("orderly.events.v1.LineItem"); ok {
		t.Errorf("RouteByType(LineItem) = %+v, true; want false", r)
	}
}

func TestUnmarshal(t *testing.T) {
	t.Parallel()
	at := timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
	want := &eventsv1.OrderStatusChanged{
		OrderId:    "0b7f8e0e-8c1c-4f5e-9a57-3f2a8b1d2c3e",
		CustomerId: "c-1",
		Status:     eventsv1.OrderStatus_ORDER_STATUS_CANCELLED,
		Reason:     eventsv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK,
		Seq:        3,
		At:         at,
	}
	body, err := proto.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eventsv1.Unmarshal(eventsv1.TypeOrderStatusChanged, body)
	if err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("Unmarshal = %v, want %v", got, want)
	}

	if _, err := eventsv1.Unmarshal("orderly.events.v1.Nope", body); err == nil {
		t.Error("Unmarshal of an unknown type: want an error")
	}
	if _, err := eventsv1.Unmarshal(eventsv1.TypeOrderPlaced, []byte{0xff, 0xff}); err == nil {
		t.Error("Unmarshal of a corrupt body: want an error")
	}

	// A control character in any string, nested ones included, is
	// refused; a printable non-ASCII one is not.
	for _, tt := range []struct {
		msg   proto.Message
		field string // named in the error, "" when accepted
	}{
		{&eventsv1.OrderStatusChanged{OrderId: "o-1", CustomerId: "c\x00"}, "customer_id"},
		{&eventsv1.ProductUpserted{Sku: "MUG", Name: "Mug\x7f"}, "name"},
		{&eventsv1.OrderPlaced{OrderId: "o-1", Items: []*eventsv1.LineItem{{Sku: "A"}, {Sku: "B\n"}}}, "items.sku"},
		{&eventsv1.ProductUpserted{Sku: "MUG", Name: "Tasse à café"}, ""},
	} {
		body, err := proto.Marshal(tt.msg)
		if err != nil {
			t.Fatal(err)
		}
		typ := string(tt.msg.ProtoReflect().Descriptor().FullName())
		_, err = eventsv1.Unmarshal(typ, body)
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("Unmarshal(%v) = %v, want it accepted", tt.msg, err)
		case tt.field != "" && (err == nil || !strings.Contains(err.Error(), tt.field+" contains a control character")):
			t.Errorf("Unmarshal(%v) = %v, want an error naming %s", tt.msg, err, tt.field)
		}
	}
}

func TestOrderStatusLabels(t *testing.T) {
	t.Parallel()
	want := map[eventsv1.OrderStatus]string{
		eventsv1.OrderStatus_ORDER_STATUS_PENDING:   "pending",
		eventsv1.OrderStatus_ORDER_STATUS_RESERVED:  "reserved",
		eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED: "confirmed",
		eventsv1.OrderStatus_ORDER_STATUS_SHIPPED:   "shipped",
		eventsv1.OrderStatus_ORDER_STATUS_DELIVERED: "delivered",
		eventsv1.OrderStatus_ORDER_STATUS_CANCELLED: "cancelled",
	}
	if got := len(eventsv1.OrderStatus_name) - 1; got != len(want) {
		t.Fatalf("OrderStatus has %d specified values, test knows %d", got, len(want))
	}
	for s, label := range want {
		if got := s.Label(); got != label {
			t.Errorf("%v.Label() = %q, want %q", s, got, label)
		}
		if got, err := eventsv1.ParseOrderStatus(label); err != nil || got != s {
			t.Errorf("ParseOrderStatus(%q) = %v, %v; want %v", label, got, err, s)
		}
	}
	if got := eventsv1.OrderStatus_ORDER_STATUS_UNSPECIFIED.Label(); got != "" {
		t.Errorf("UNSPECIFIED.Label() = %q, want empty", got)
	}
	if got := eventsv1.OrderStatus(99).Label(); got != "" {
		t.Errorf("OrderStatus(99).Label() = %q, want empty", got)
	}
	for _, bad := range []string{"", "unspecified", "PENDING", "Pending", "lost"} {
		if _, err := eventsv1.ParseOrderStatus(bad); err == nil {
			t.Errorf("ParseOrderStatus(%q): want an error", bad)
		}
	}
}

func TestCancelReasonLabels(t *testing.T) {
	t.Parallel()
	want := map[eventsv1.CancelReason]string{
		eventsv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK:     "out_of_stock",
		eventsv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED: "payment_declined",
		eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST: "customer_request",
		eventsv1.CancelReason_CANCEL_REASON_TIMEOUT:          "timeout",
	}
	if got := len(eventsv1.CancelReason_name) - 1; got != len(want) {
		t.Fatalf("CancelReason has %d specified values, test knows %d", got, len(want))
	}
	for r, label := range want {
		if got := r.Label(); got != label {
			t.Errorf("%v.Label() = %q, want %q", r, got, label)
		}
		if got, err := eventsv1.ParseCancelReason(label); err != nil || got != r {
			t.Errorf("ParseCancelReason(%q) = %v, %v; want %v", label, got, err, r)
		}
	}
	if got, err := eventsv1.ParseCancelReason(""); err != nil || got != eventsv1.CancelReason_CANCEL_REASON_UNSPECIFIED {
		t.Errorf(`ParseCancelReason("") = %v, %v; want UNSPECIFIED, nil`, got, err)
	}
	for _, bad := range []string{"unspecified", "TIMEOUT", "fraud"} {
		if _, err := eventsv1.ParseCancelReason(bad); err == nil {
			t.Errorf("ParseCancelReason(%q): want an error", bad)
		}
	}
}
