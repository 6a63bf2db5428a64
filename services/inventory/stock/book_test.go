package stock_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/orderly/orderly/services/inventory/stock"
)

var (
	now     = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	expires = now.Add(time.Minute)
)

func newBook(reservations ...stock.Reservation) *stock.Book {
	return stock.NewBook(map[string]stock.Level{
		"A": {Stock: 10, Reserved: 2},
		"B": {Stock: 3, Reserved: 0},
	}, reservations)
}

func TestBookReserveAllOrNone(t *testing.T) {
	t.Parallel()
	b := newBook()
	ok, short, unknown := uuid.New(), uuid.New(), uuid.New()
	ch, err := b.Reserve(ok, []stock.Line{{SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 3}, {SKU: "B", Quantity: 2}}, expires, now)
	if err != nil {
		t.Fatal(err)
	}
	want := stock.Change{Status: stock.StatusReserved, Lines: []stock.Line{{SKU: "A", Quantity: 3}, {SKU: "B", Quantity: 3}}, Applied: true}
	if diff := cmp.Diff(want, ch); diff != "" {
		t.Errorf("Reserve (-want +got):\n%s", diff)
	}
	// B is now fully held: one more unit of it rejects the whole order.
	ch, err = b.Reserve(short, []stock.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 1}}, expires, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stock.Change{Status: stock.StatusRejected, Shortages: []stock.Shortage{{SKU: "B", Requested: 1, Available: 0}}, Applied: true}, ch); diff != "" {
		t.Errorf("Reserve short (-want +got):\n%s", diff)
	}
	ch, _ = b.Reserve(unknown, []stock.Line{{SKU: "NOPE", Quantity: 1}}, time.Time{}, now)
	if ch.Status != stock.StatusRejected || ch.Shortages[0].Available != 0 {
		t.Errorf("Reserve of an unknown SKU = %+v, want rejected with nothing available", ch)
	}
	// A second OrderPlaced for an order with a reservation does nothing.
	if ch, err := b.Reserve(ok, []stock.Line{{SKU: "A", Quantity: 1}}, expires, now); err != nil || ch.Applied {
		t.Errorf("duplicate Reserve = %+v, %v; want nothing done", ch, err)
	}
	if _, err := b.Reserve(uuid.New(), nil, expires, now); !errors.Is(err, stock.ErrInvalid) {
		t.Errorf("Reserve with no lines = %v, want ErrInvalid", err)
	}

	skus, moves := b.Moves()
	if diff := cmp.Diff([]string{"A", "B"}, skus); diff != "" {
		t.Errorf("moved SKUs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]stock.Level{{Reserved: 3}, {Reserved: 3}}, moves); diff != "" {
		t.Errorf("moves (-want +got):\n%s", diff)
	}
	created := b.Created()
	if len(created) != 3 || created[0].OrderID != ok || created[0].Status != stock.StatusReserved || !created[0].ExpiresAt.Equal(expires) ||
		created[1].Status != stock.StatusRejected || created[2].OrderID != unknown {
		t.Errorf("created = %+v", created)
	}
	if len(b.Updated()) != 0 {
		t.Errorf("updated = %+v, want none (nothing was loaded)", b.Updated())
	}
}

func TestBookCommitAndRelease(t *testing.T) {
	t.Parallel()
	held, committed, rejected := uuid.New(), uuid.New(), uuid.New()
	b := newBook(
		stock.Reservation{OrderID: held, Status: stock.StatusReserved, Lines: []stock.Line{{SKU: "A", Quantity: 2}}, ExpiresAt: expires},
		stock.Reservation{OrderID: committed, Status: stock.StatusCommitted, Lines: []stock.Line{{SKU: "B", Quantity: 1}}},
		stock.Reservation{OrderID: rejected, Status: stock.StatusRejected, Lines: []stock.Line{{SKU: "B", Quantity: 9}}},
	)
	if ch, err := b.Commit(held, now); err != nil || ch.Status != stock.StatusCommitted || !ch.Applied {
		t.Fatalf("Commit = %+v, %v", ch, err)
	}
	if ch, err := b.Commit(held, now); err != nil || ch.Applied {
		t.Errorf("second Commit = %+v, %v; want nothing done", ch, err)
	}
	if ch, err := b.Release(committed, now); err != nil || ch.Status != stock.StatusReleased || len(ch.Lines) != 1 {
		t.Errorf("Release of a committed reservation = %+v, %v", ch, err)
	}
	if ch, err := b.Release(rejected, now); err != nil || ch.Applied {
		t.Errorf("Release of a rejected reservation = %+v, %v; want nothing done", ch, err)
	}
	if _, err := b.Commit(rejected, now); !errors.Is(err, stock.ErrNotCommittable) {
		t.Errorf("Commit of a rejected reservation = %v, want ErrNotCommittable", err)
	}
	if _, err := b.Commit(uuid.New(), now); !errors.Is(err, stock.ErrNoReservation) {
		t.Errorf("Commit without a reservation = %v, want ErrNoReservation", err)
	}
	// A release overtaking its OrderPlaced leaves a tombstone: the late
	// OrderPlaced reserves nothing.
	late := uuid.New()
	if ch, err := b.Release(late, now); err != nil || ch.Status != stock.StatusReleased || !ch.Applied || len(ch.Lines) != 0 {
		t.Errorf("Release before OrderPlaced = %+v, %v; want a tombstone", ch, err)
	}
	if ch, _ := b.Reserve(late, []stock.Line{{SKU: "A", Quantity: 1}}, expires, now); ch.Applied {
		t.Errorf("OrderPlaced after its release = %+v, want nothing reserved", ch)
	}

	skus, moves := b.Moves()
	if diff := cmp.Diff([]string{"A", "B"}, skus); diff != "" {
		t.Errorf("moved SKUs (-want +got):\n%s", diff)
	}
	// A: committed 2 held units (off stock and reserved); B: 1 unit back.
	if diff := cmp.Diff([]stock.Level{{Stock: -2, Reserved: -2}, {Stock: 1}}, moves); diff != "" {
		t.Errorf("moves (-want +got):\n%s", diff)
	}
	updated := b.Updated()
	if len(updated) != 2 {
		t.Fatalf("updated = %+v, want the committed and the released reservation", updated)
	}
	for _, r := range updated {
		if (r.OrderID == held && r.Status != stock.StatusCommitted) || (r.OrderID == committed && r.Status != stock.StatusReleased) {
			t.Errorf("updated %+v", r)
		}
	}
	if c := b.Created(); len(c) != 1 || c[0].OrderID != late || c[0].Status != stock.StatusReleased {
		t.Errorf("created = %+v, want the tombstone", c)
	}
}

func TestBookStepsOnMissingProductsFail(t *testing.T) {
	t.Parallel()
	id := uuid.New()
	b := stock.NewBook(map[string]stock.Level{}, []stock.Reservation{{OrderID: id, Status: stock.StatusReserved, Lines: []stock.Line{{SKU: "GONE", Quantity: 1}}}})
	if _, err := b.Commit(id, now); !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("Commit = %v, want ErrUnknownProduct", err)
	}
	if _, err := b.Release(id, now); !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("Release = %v, want ErrUnknownProduct", err)
	}
	if skus, _ := b.Moves(); len(skus) != 0 {
		t.Errorf("a failed step moved %v", skus)
	}
}
