package stock_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/stock"
)

var (
	now     = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	expires = now.Add(time.Minute)
	at      = timestamppb.New(now)
)

// order returns the id of test order n; ids sort by n, as Updated does.
func order(n int) uuid.UUID { return uuid.MustParse(fmt.Sprintf("00000000-0000-7000-8000-%012d", n)) }

func oid(n int) string { return order(n).String() }

// levels are the products of every case's book unless it gives its own.
var levels = map[string]stock.Level{
	"A": {Stock: 10, Reserved: 2},
	"B": {Stock: 3, Reserved: 0},
}

func lines(ls ...stock.Line) []stock.Line { return ls }

func a(q int32) stock.Line { return stock.Line{SKU: "A", Quantity: q} }
func b(q int32) stock.Line { return stock.Line{SKU: "B", Quantity: q} }

func reserve(n int, expiresAt time.Time, ls ...stock.Line) stock.Step {
	return stock.Step{Kind: stock.StepReserve, OrderID: order(n), Lines: ls, ExpiresAt: expiresAt}
}

func commit(n int) stock.Step  { return stock.Step{Kind: stock.StepCommit, OrderID: order(n)} }
func release(n int) stock.Step { return stock.Step{Kind: stock.StepRelease, OrderID: order(n)} }

func held(n int, expiresAt time.Time, ls ...stock.Line) stock.Reservation {
	return stock.Reservation{OrderID: order(n), Status: stock.StatusReserved, Lines: ls, ExpiresAt: expiresAt}
}

func final(n int, s stock.Status, ls ...stock.Line) stock.Reservation {
	return stock.Reservation{OrderID: order(n), Status: s, Lines: ls}
}

func items(ls ...stock.Line) []*eventsv1.StockLine {
	out := make([]*eventsv1.StockLine, len(ls))
	for i, l := range ls {
		out[i] = &eventsv1.StockLine{Sku: l.SKU, Quantity: l.Quantity}
	}
	return out
}

// published is an event as the order service reads it.
type published struct {
	Aggregate string
	Msg       proto.Message
}

func decode(t *testing.T, evs []outbox.Event) []published {
	t.Helper()
	out := make([]published, len(evs))
	for i, ev := range evs {
		msg, err := eventsv1.Unmarshal(ev.Type, ev.Payload)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if r, ok := eventsv1.RouteOf(msg); !ok || r.Exchange != ev.Exchange || r.RoutingKey != ev.RoutingKey || ev.Exchange != eventsv1.ExchangeInventory {
			t.Errorf("event %d (%s) goes to %s %s, not by the route table", i, ev.Type, ev.Exchange, ev.RoutingKey)
		}
		out[i] = published{ev.AggregateID, msg}
	}
	return out
}

// TestBookApply is the table of the book's decisions: given the loaded
// reservations, the steps applied in order on one book -> each step's
// change, the first error, and what the store is to write: units moved,
// reservations created and updated, events published.
func TestBookApply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		given   []stock.Reservation
		steps   []stock.Step
		want    []stock.Change // of the steps up to the failing one
		wantErr error
		moves   map[string]stock.Level
		created []stock.Reservation
		updated []stock.Reservation
		events  []published
	}{
		{
			name:    "reserve holds the merged lines, sorted by SKU",
			steps:   []stock.Step{reserve(1, expires, b(1), a(3), b(2))},
			want:    []stock.Change{{Status: stock.StatusReserved, Lines: lines(a(3), b(3)), Applied: true}},
			moves:   map[string]stock.Level{"A": {Reserved: 3}, "B": {Reserved: 3}},
			created: []stock.Reservation{held(1, expires, a(3), b(3))},
			events:  []published{{oid(1), &eventsv1.StockReserved{OrderId: oid(1), Items: items(a(3), b(3)), ReservedAt: at}}},
		},
		{
			name:    "reserve without expiry is held for DefaultHold",
			steps:   []stock.Step{reserve(1, time.Time{}, a(8))},
			want:    []stock.Change{{Status: stock.StatusReserved, Lines: lines(a(8)), Applied: true}},
			moves:   map[string]stock.Level{"A": {Reserved: 8}},
			created: []stock.Reservation{held(1, now.Add(stock.DefaultHold), a(8))},
			events:  []published{{oid(1), &eventsv1.StockReserved{OrderId: oid(1), Items: items(a(8)), ReservedAt: at}}},
		},
		{
			name:  "reserve short holds nothing and names every shortage",
			steps: []stock.Step{reserve(1, expires, a(9), b(4), stock.Line{SKU: "NOPE", Quantity: 1})},
			want: []stock.Change{{Status: stock.StatusRejected, Applied: true, Shortages: []stock.Shortage{
				{SKU: "A", Requested: 9, Available: 8}, {SKU: "B", Requested: 4, Available: 3}, {SKU: "NOPE", Requested: 1, Available: 0},
			}}},
			created: []stock.Reservation{final(1, stock.StatusRejected, a(9), b(4), stock.Line{SKU: "NOPE", Quantity: 1})},
			events: []published{{oid(1), &eventsv1.StockRejected{OrderId: oid(1), RejectedAt: at, Shortages: []*eventsv1.StockShortage{
				{Sku: "A", Requested: 9, Available: 8}, {Sku: "B", Requested: 4, Available: 3}, {Sku: "NOPE", Requested: 1, Available: 0},
			}}}},
		},
		{
			name:  "units held by one step are gone for the next",
			steps: []stock.Step{reserve(1, expires, b(3)), reserve(2, expires, a(1), b(1)), reserve(3, expires, a(1))},
			want: []stock.Change{
				{Status: stock.StatusReserved, Lines: lines(b(3)), Applied: true},
				{Status: stock.StatusRejected, Shortages: []stock.Shortage{{SKU: "B", Requested: 1, Available: 0}}, Applied: true},
				{Status: stock.StatusReserved, Lines: lines(a(1)), Applied: true},
			},
			moves:   map[string]stock.Level{"A": {Reserved: 1}, "B": {Reserved: 3}},
			created: []stock.Reservation{held(1, expires, b(3)), final(2, stock.StatusRejected, a(1), b(1)), held(3, expires, a(1))},
			events: []published{
				{oid(1), &eventsv1.StockReserved{OrderId: oid(1), Items: items(b(3)), ReservedAt: at}},
				{oid(2), &eventsv1.StockRejected{OrderId: oid(2), RejectedAt: at, Shortages: []*eventsv1.StockShortage{{Sku: "B", Requested: 1, Available: 0}}}},
				{oid(3), &eventsv1.StockReserved{OrderId: oid(3), Items: items(a(1)), ReservedAt: at}},
			},
		},
		{
			name:    "reserve with no lines is invalid",
			steps:   []stock.Step{reserve(1, expires)},
			wantErr: stock.ErrInvalid,
		},
		{
			name:    "reserve with a bad line is invalid",
			steps:   []stock.Step{reserve(1, expires, stock.Line{SKU: "A", Quantity: 0})},
			wantErr: stock.ErrInvalid,
		},
		{
			name:  "duplicate OrderPlaced reserves nothing",
			given: []stock.Reservation{held(1, expires, a(2))},
			steps: []stock.Step{reserve(1, expires, a(1))},
			want:  []stock.Change{{}},
		},
		{
			name:    "duplicate OrderPlaced in the same batch reserves nothing",
			steps:   []stock.Step{reserve(1, expires, a(1)), reserve(1, expires, a(1))},
			want:    []stock.Change{{Status: stock.StatusReserved, Lines: lines(a(1)), Applied: true}, {}},
			moves:   map[string]stock.Level{"A": {Reserved: 1}},
			created: []stock.Reservation{held(1, expires, a(1))},
			events:  []published{{oid(1), &eventsv1.StockReserved{OrderId: oid(1), Items: items(a(1)), ReservedAt: at}}},
		},
		{
			// An expired reservation the sweep has not released yet is
			// still held.
			name:  "commit takes held units off stock and reserved, even past their expiry",
			given: []stock.Reservation{held(1, expires, a(2)), held(2, now.Add(-time.Second), b(1))},
			steps: []stock.Step{commit(1), commit(2)},
			want: []stock.Change{
				{Status: stock.StatusCommitted, Lines: lines(a(2)), Applied: true},
				{Status: stock.StatusCommitted, Lines: lines(b(1)), Applied: true},
			},
			moves:   map[string]stock.Level{"A": {Stock: -2, Reserved: -2}, "B": {Stock: -1, Reserved: -1}},
			updated: []stock.Reservation{final(1, stock.StatusCommitted, a(2)), final(2, stock.StatusCommitted, b(1))},
			events: []published{
				{oid(1), &eventsv1.ReservationCommitted{OrderId: oid(1), Items: items(a(2)), CommittedAt: at}},
				{oid(2), &eventsv1.ReservationCommitted{OrderId: oid(2), Items: items(b(1)), CommittedAt: at}},
			},
		},
		{
			name:  "commit of a committed reservation, release of a released or rejected one do nothing",
			given: []stock.Reservation{final(1, stock.StatusCommitted, a(2)), final(2, stock.StatusReleased, a(2)), final(3, stock.StatusRejected, b(9))},
			steps: []stock.Step{commit(1), release(2), release(3)},
			want:  []stock.Change{{Status: stock.StatusCommitted}, {Status: stock.StatusReleased}, {Status: stock.StatusRejected}},
		},
		{
			name:    "commit twice in the same batch commits once",
			given:   []stock.Reservation{held(1, expires, a(2))},
			steps:   []stock.Step{commit(1), commit(1)},
			want:    []stock.Change{{Status: stock.StatusCommitted, Lines: lines(a(2)), Applied: true}, {Status: stock.StatusCommitted}},
			moves:   map[string]stock.Level{"A": {Stock: -2, Reserved: -2}},
			updated: []stock.Reservation{final(1, stock.StatusCommitted, a(2))},
			events:  []published{{oid(1), &eventsv1.ReservationCommitted{OrderId: oid(1), Items: items(a(2)), CommittedAt: at}}},
		},
		{
			name:    "commit without a reservation breaks the saga",
			steps:   []stock.Step{commit(1)},
			wantErr: stock.ErrNoReservation,
		},
		{
			name:    "commit of a released reservation breaks the saga",
			given:   []stock.Reservation{final(1, stock.StatusReleased, a(2))},
			steps:   []stock.Step{commit(1)},
			wantErr: stock.ErrNotCommittable,
		},
		{
			name:    "commit of a rejected reservation breaks the saga",
			given:   []stock.Reservation{final(1, stock.StatusRejected, b(9))},
			steps:   []stock.Step{commit(1)},
			wantErr: stock.ErrNotCommittable,
		},
		{
			// Order 2's is past its expiry: the sweep releases it so.
			name:  "release gives held units back to available stock, as the sweep does with expired ones",
			given: []stock.Reservation{held(1, expires, a(2)), held(2, now.Add(-time.Second), b(1))},
			steps: []stock.Step{release(1), release(2)},
			want: []stock.Change{
				{Status: stock.StatusReleased, Lines: lines(a(2)), Applied: true},
				{Status: stock.StatusReleased, Lines: lines(b(1)), Applied: true},
			},
			moves:   map[string]stock.Level{"A": {Reserved: -2}, "B": {Reserved: -1}},
			updated: []stock.Reservation{final(1, stock.StatusReleased, a(2)), final(2, stock.StatusReleased, b(1))},
			events: []published{
				{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(a(2)), ReleasedAt: at}},
				{oid(2), &eventsv1.ReservationReleased{OrderId: oid(2), Items: items(b(1)), ReleasedAt: at}},
			},
		},
		{
			name:    "release after commit returns the units to stock",
			given:   []stock.Reservation{final(1, stock.StatusCommitted, b(1))},
			steps:   []stock.Step{release(1)},
			want:    []stock.Change{{Status: stock.StatusReleased, Lines: lines(b(1)), Applied: true}},
			moves:   map[string]stock.Level{"B": {Stock: 1}},
			updated: []stock.Reservation{final(1, stock.StatusReleased, b(1))},
			events:  []published{{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(b(1)), ReleasedAt: at}}},
		},
		{
			name:    "release before OrderPlaced leaves a tombstone",
			steps:   []stock.Step{release(1)},
			want:    []stock.Change{{Status: stock.StatusReleased, Applied: true}},
			created: []stock.Reservation{final(1, stock.StatusReleased)},
			events:  []published{{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(), ReleasedAt: at}}},
		},
		{
			name:  "late OrderPlaced after its release reserves nothing",
			given: []stock.Reservation{final(1, stock.StatusReleased)},
			steps: []stock.Step{reserve(1, expires, a(1))},
			want:  []stock.Change{{}},
		},
		{
			name:    "late OrderPlaced after its release in the same batch reserves nothing",
			steps:   []stock.Step{release(1), reserve(1, expires, a(1))},
			want:    []stock.Change{{Status: stock.StatusReleased, Applied: true}, {}},
			created: []stock.Reservation{final(1, stock.StatusReleased)},
			events:  []published{{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(), ReleasedAt: at}}},
		},
		{
			name:  "units released by one step are available to the next",
			given: []stock.Reservation{held(1, expires, b(3))},
			steps: []stock.Step{release(1), reserve(2, expires, b(2))},
			want: []stock.Change{
				{Status: stock.StatusReleased, Lines: lines(b(3)), Applied: true},
				{Status: stock.StatusReserved, Lines: lines(b(2)), Applied: true},
			},
			moves:   map[string]stock.Level{"B": {Reserved: -1}},
			created: []stock.Reservation{held(2, expires, b(2))},
			updated: []stock.Reservation{final(1, stock.StatusReleased, b(3))},
			events: []published{
				{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(b(3)), ReleasedAt: at}},
				{oid(2), &eventsv1.StockReserved{OrderId: oid(2), Items: items(b(2)), ReservedAt: at}},
			},
		},
		{
			name:  "loaded reservations that change are updated, by order id",
			given: []stock.Reservation{final(1, stock.StatusCommitted, b(1)), held(2, expires, a(2))},
			steps: []stock.Step{commit(2), release(1)},
			want: []stock.Change{
				{Status: stock.StatusCommitted, Lines: lines(a(2)), Applied: true},
				{Status: stock.StatusReleased, Lines: lines(b(1)), Applied: true},
			},
			moves:   map[string]stock.Level{"A": {Stock: -2, Reserved: -2}, "B": {Stock: 1}},
			updated: []stock.Reservation{final(1, stock.StatusReleased, b(1)), final(2, stock.StatusCommitted, a(2))},
			events: []published{
				{oid(2), &eventsv1.ReservationCommitted{OrderId: oid(2), Items: items(a(2)), CommittedAt: at}},
				{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(b(1)), ReleasedAt: at}},
			},
		},
		{
			name:    "a failing step leaves the book as the steps before it left it",
			given:   []stock.Reservation{held(1, expires, a(2))},
			steps:   []stock.Step{release(1), commit(1)},
			want:    []stock.Change{{Status: stock.StatusReleased, Lines: lines(a(2)), Applied: true}},
			wantErr: stock.ErrNotCommittable,
			moves:   map[string]stock.Level{"A": {Reserved: -2}},
			updated: []stock.Reservation{final(1, stock.StatusReleased, a(2))},
			events:  []published{{oid(1), &eventsv1.ReservationReleased{OrderId: oid(1), Items: items(a(2)), ReleasedAt: at}}},
		},
		{
			name:    "an unknown step is invalid",
			steps:   []stock.Step{{Kind: "restock", OrderID: order(1)}},
			wantErr: stock.ErrInvalid,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			book := stock.NewBook(levels, tt.given)
			var (
				got []stock.Change
				err error
			)
			for _, st := range tt.steps {
				var c stock.Change
				if c, err = book.Apply(st, now); err != nil {
					break
				}
				got = append(got, c)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			moves := map[string]stock.Level{}
			skus, lvls := book.Moves()
			for i, sku := range skus {
				moves[sku] = lvls[i]
			}
			if diff := cmp.Diff(tt.moves, moves, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("moves (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.created, book.Created(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("created (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.updated, book.Updated(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("updated (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.events, decode(t, book.Events()), protocmp.Transform(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBookStepsOnMissingProductsFail(t *testing.T) {
	t.Parallel()
	book := stock.NewBook(map[string]stock.Level{}, []stock.Reservation{held(1, expires, stock.Line{SKU: "GONE", Quantity: 1})})
	if _, err := book.Commit(order(1), now); !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("Commit = %v, want ErrUnknownProduct", err)
	}
	if _, err := book.Release(order(1), now); !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("Release = %v, want ErrUnknownProduct", err)
	}
	if skus, _ := book.Moves(); len(skus) != 0 || len(book.Events()) != 0 {
		t.Errorf("failed steps moved %v and published %d events", skus, len(book.Events()))
	}
}

func TestProductUpserted(t *testing.T) {
	t.Parallel()
	ev, err := stock.ProductUpserted(stock.Product{SKU: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Stock: 7, Reserved: 2, Version: 3, UpdatedAt: now})
	if err != nil {
		t.Fatal(err)
	}
	want := []published{{"MUG-1", &eventsv1.ProductUpserted{Sku: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Version: 3, UpdatedAt: at}}}
	if diff := cmp.Diff(want, decode(t, []outbox.Event{ev}), protocmp.Transform()); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}
