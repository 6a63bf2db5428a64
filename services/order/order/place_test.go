package order_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
)

func TestPlace(t *testing.T) {
	t.Parallel()
	const id = "0190a6b4-0000-7000-8000-000000000002"
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 45 * time.Second}
	catalog := map[string]order.Product{
		"WIDGET": {SKU: "WIDGET", Name: "Widget", PriceCents: 1250, Currency: "EUR"},
		"GADGET": {SKU: "GADGET", Name: "Gadget", PriceCents: 499, Currency: "EUR"},
		"DOLLAR": {SKU: "DOLLAR", Name: "Dollar thing", PriceCents: 100, Currency: "USD"},
	}
	req := func(lines ...order.Line) order.Request {
		return order.Request{CustomerID: "alice", Lines: lines, PaymentMethod: "pm_card_ok"}
	}
	deadline := now.Add(timeouts.Reserve)
	tests := []struct {
		name       string
		req        order.Request
		want       order.Order
		wantEvents []proto.Message
		wantErr    error
	}{
		{
			name: "priced, pending, waiting for inventory until the reserve deadline",
			req:  req(order.Line{SKU: "WIDGET", Quantity: 2}, order.Line{SKU: "GADGET", Quantity: 1}),
			want: order.Order{
				ID: id, CustomerID: "alice", Status: order.StatusPending, PaymentMethod: "pm_card_ok",
				Items:      []order.Item{{SKU: "WIDGET", Quantity: 2, UnitPriceCents: 1250}, {SKU: "GADGET", Quantity: 1, UnitPriceCents: 499}},
				TotalCents: 2999, Currency: "EUR", Version: 1, DeadlineAt: &deadline, CreatedAt: now, UpdatedAt: now,
				History: []order.HistoryEntry{{Seq: 1, Status: order.StatusPending, At: now}},
			},
			wantEvents: []proto.Message{
				&eventsv1.OrderPlaced{
					OrderId: id, CustomerId: "alice", TotalCents: 2999, Currency: "EUR", PaymentMethod: "pm_card_ok",
					Items: []*eventsv1.LineItem{
						{Sku: "WIDGET", Quantity: 2, UnitPriceCents: 1250},
						{Sku: "GADGET", Quantity: 1, UnitPriceCents: 499},
					},
					PlacedAt: timestamppb.New(now),
					// Both steps and a minute of slack.
					ExpiresAt: timestamppb.New(now.Add(30*time.Second + 45*time.Second + time.Minute)),
				},
				&eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: 1, At: timestamppb.New(now)},
			},
		},
		{name: "invalid", req: req(), wantErr: order.ErrInvalidOrder},
		{name: "unknown SKU", req: req(order.Line{SKU: "NOPE", Quantity: 1}), wantErr: order.ErrUnknownSKU},
		{name: "two currencies", req: req(order.Line{SKU: "WIDGET", Quantity: 1}, order.Line{SKU: "DOLLAR", Quantity: 1}), wantErr: order.ErrMixedCurrency},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, evs, err := order.Place(tt.req, catalog, id, now, timeouts)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Place error = %v, want %v", err, tt.wantErr)
			}
			var ve *order.ValidationError
			if err != nil && !errors.As(err, &ve) {
				t.Errorf("error %v is not a ValidationError", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantEvents, decoded(t, evs, id), protocmp.Transform(), cmpEmptyMsgs); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}
