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

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
)

func TestRequestValidate(t *testing.T) {
	t.Parallel()
	ok := order.Request{Lines: []order.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 1000}}, PaymentMethod: "pm_card_ok"}
	many := make([]order.Line, order.MaxLines+1)
	for i := range many {
		many[i] = order.Line{SKU: fmt.Sprintf("sku-%03d", i), Quantity: 1}
	}
	tests := []struct {
		name    string
		mutate  func(*order.Request)
		wantErr bool
	}{
		{"valid", func(*order.Request) {}, false},
		{"100 lines", func(r *order.Request) { r.Lines = many[:order.MaxLines] }, false},
		{"no items", func(r *order.Request) { r.Lines = nil }, true},
		{"101 lines", func(r *order.Request) { r.Lines = many }, true},
		{"duplicate sku", func(r *order.Request) { r.Lines = []order.Line{{"A", 1}, {"A", 2}} }, true},
		{"empty sku", func(r *order.Request) { r.Lines = []order.Line{{"", 1}} }, true},
		{"long sku", func(r *order.Request) { r.Lines = []order.Line{{strings.Repeat("s", 65), 1}} }, true},
		{"quantity 0", func(r *order.Request) { r.Lines = []order.Line{{"A", 0}} }, true},
		{"quantity negative", func(r *order.Request) { r.Lines = []order.Line{{"A", -1}} }, true},
		{"quantity 1001", func(r *order.Request) { r.Lines = []order.Line{{"A", 1001}} }, true},
		{"no payment method", func(r *order.Request) { r.PaymentMethod = "" }, true},
		{"blank payment method", func(r *order.Request) { r.PaymentMethod = "  " }, true},
		{"payment method 64", func(r *order.Request) { r.PaymentMethod = strings.Repeat("p", 64) }, false},
		{"payment method 65", func(r *order.Request) { r.PaymentMethod = strings.Repeat("p", 65) }, true},
		{"payment method control char", func(r *order.Request) { r.PaymentMethod = "pm\x00" }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ok
			tt.mutate(&r)
			err := r.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, order.ErrInvalidOrder) {
				t.Errorf("error %v does not match ErrInvalidOrder", err)
			}
		})
	}
}

func TestPrice(t *testing.T) {
	t.Parallel()
	catalog := map[string]order.Product{
		"A": {SKU: "A", PriceCents: 250, Currency: "EUR"},
		"B": {SKU: "B", PriceCents: 1000, Currency: "EUR"},
		"U": {SKU: "U", PriceCents: 99, Currency: "USD"},
	}
	items, total, cur, err := order.Price([]order.Line{{"A", 2}, {"B", 3}}, catalog)
	if err != nil {
		t.Fatal(err)
	}
	want := []order.Item{{SKU: "A", Quantity: 2, UnitPriceCents: 250}, {SKU: "B", Quantity: 3, UnitPriceCents: 1000}}
	if diff := cmp.Diff(want, items); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	if total != 3500 || cur != "EUR" {
		t.Errorf("total, currency = %d, %s; want 3500, EUR", total, cur)
	}
	if _, _, _, err := order.Price([]order.Line{{"A", 1}, {"X", 1}, {"Y", 1}}, catalog); !errors.Is(err, order.ErrUnknownSKU) || !strings.Contains(err.Error(), `"X", "Y"`) {
		t.Errorf("unknown SKUs: err = %v, want ErrUnknownSKU naming X and Y", err)
	}
	if _, _, _, err := order.Price([]order.Line{{"A", 1}, {"U", 1}}, catalog); !errors.Is(err, order.ErrMixedCurrency) {
		t.Errorf("mixed currencies: err = %v, want ErrMixedCurrency", err)
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for _, s := range order.Statuses {
		if got, err := order.ParseStatus(string(s)); err != nil || got != s {
			t.Errorf("ParseStatus(%q) = %q, %v", s, got, err)
		}
	}
	for _, bad := range []string{"", "PENDING", "paid", "cancelled "} {
		if _, err := order.ParseStatus(bad); !errors.Is(err, order.ErrInvalidStatus) {
			t.Errorf("ParseStatus(%q) error = %v, want ErrInvalidStatus", bad, err)
		}
	}
}

func TestAdmission(t *testing.T) {
	t.Parallel()
	a := order.Admission{MaxLag: 4 * time.Second}
	for _, tt := range []struct {
		name       string
		a          order.Admission
		b          order.Backlog
		share      float64
		retryAfter time.Duration
	}{
		{"idle", a, order.Backlog{}, 1, 0},
		{"at the limit", a, order.Backlog{Reserve: 3 * time.Second, Payment: time.Second}, 1, 0},
		{"a quarter over", a, order.Backlog{Reserve: 3 * time.Second, Payment: 2 * time.Second}, 0.75, 5 * time.Second},
		{"half over", a, order.Backlog{Payment: 5500 * time.Millisecond, Reserve: 500 * time.Millisecond}, 0.5, 6 * time.Second},
		{"twice the limit", a, order.Backlog{Reserve: 8 * time.Second}, 0, 8 * time.Second},
		{"far behind: capped", a, order.Backlog{Reserve: 2 * time.Minute}, 0, 30 * time.Second},
		{"off", order.Admission{}, order.Backlog{Reserve: time.Hour}, 1, 0},
	} {
		share, retry := tt.a.Admit(tt.b)
		if share != tt.share || retry != tt.retryAfter {
			t.Errorf("%s: Admit(%+v) = %v, %v; want %v, %v", tt.name, tt.b, share, retry, tt.share, tt.retryAfter)
		}
	}
}

func TestTimeoutsBacklog(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 45 * time.Second}
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	for _, tt := range []struct {
		name             string
		reserve, payment *time.Time
		want             order.Backlog
	}{
		{"nothing waits", nil, nil, order.Backlog{}},
		{"a new order placed 8s ago", at(22 * time.Second), nil, order.Backlog{Reserve: 8 * time.Second}},
		{"a reservation 2s ago", nil, at(43 * time.Second), order.Backlog{Payment: 2 * time.Second}},
		{"both", at(20 * time.Second), at(40 * time.Second), order.Backlog{Reserve: 10 * time.Second, Payment: 5 * time.Second}},
		{"placed just now", at(30 * time.Second), nil, order.Backlog{}},
		{"a deadline beyond the timeout (the timeout was shortened) is no wait", at(time.Minute), nil, order.Backlog{}},
	} {
		if got := timeouts.Backlog(now, tt.reserve, tt.payment); got != tt.want {
			t.Errorf("%s: Backlog = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

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
