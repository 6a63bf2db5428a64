package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/postgres"
	"github.com/orderly/orderly/services/inventory/stock"
)

// newTestStore returns a store on a fresh, migrated database.
func newTestStore(tb testing.TB) (*postgres.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	return postgres.New(pool), pool
}

// mustPut creates or replaces a product.
func mustPut(tb testing.TB, s *postgres.Store, sku string, stockUnits int64) stock.Product {
	tb.Helper()
	p, _, err := s.PutProduct(context.Background(), stock.Product{SKU: sku, Name: "Product " + sku, PriceCents: 100, Currency: "EUR", Stock: stockUnits})
	if err != nil {
		tb.Fatalf("PutProduct(%s): %v", sku, err)
	}
	return p
}

// mustLevels returns a product's stock and reserved units.
func mustLevels(tb testing.TB, s *postgres.Store, sku string) [2]int64 {
	tb.Helper()
	p, err := s.Product(context.Background(), sku)
	if err != nil {
		tb.Fatalf("Product(%s): %v", sku, err)
	}
	return [2]int64{p.Stock, p.Reserved}
}

func wantLevels(tb testing.TB, s *postgres.Store, sku string, stockUnits, reserved int64) {
	tb.Helper()
	if got, want := mustLevels(tb, s, sku), [2]int64{stockUnits, reserved}; got != want {
		tb.Errorf("%s (stock, reserved) = %v, want %v", sku, got, want)
	}
}

// inTx runs a saga step in its own transaction, as the consumer does.
func inTx[T any](tb testing.TB, pool *pgxpool.Pool, f func(pgx.Tx) (T, error)) (T, error) {
	tb.Helper()
	var out T
	err := pg.Transact(context.Background(), pool, func(tx pgx.Tx) error {
		var err error
		out, err = f(tx)
		return err
	})
	return out, err
}

// apply runs saga steps inside tx as the consumer does with a batch: the
// store locks their book, the book applies them in order, the store saves
// it.
func apply(ctx context.Context, s *postgres.Store, tx pgx.Tx, steps ...stock.Step) ([]stock.Change, error) {
	book, err := s.LockBook(ctx, tx, steps...)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	changes := make([]stock.Change, len(steps))
	for i, st := range steps {
		if changes[i], err = book.Apply(st, now); err != nil {
			return nil, err
		}
	}
	return changes, s.Save(ctx, tx, book)
}

// step applies one saga step in its own transaction, as the consumer does
// with a message that arrives alone.
func step(tb testing.TB, s *postgres.Store, pool *pgxpool.Pool, st stock.Step) (stock.Change, error) {
	tb.Helper()
	return inTx(tb, pool, func(tx pgx.Tx) (stock.Change, error) {
		changes, err := apply(context.Background(), s, tx, st)
		if err != nil {
			return stock.Change{}, err
		}
		return changes[0], nil
	})
}

func reserve(tb testing.TB, s *postgres.Store, pool *pgxpool.Pool, id uuid.UUID, expires time.Time, lines ...stock.Line) (stock.Change, error) {
	tb.Helper()
	return step(tb, s, pool, stock.Step{Kind: stock.StepReserve, OrderID: id, Lines: lines, ExpiresAt: expires})
}

func commit(tb testing.TB, s *postgres.Store, pool *pgxpool.Pool, id uuid.UUID) (stock.Change, error) {
	tb.Helper()
	return step(tb, s, pool, stock.Step{Kind: stock.StepCommit, OrderID: id})
}

func release(tb testing.TB, s *postgres.Store, pool *pgxpool.Pool, id uuid.UUID) (stock.Change, error) {
	tb.Helper()
	return step(tb, s, pool, stock.Step{Kind: stock.StepRelease, OrderID: id})
}

// event is an outbox row with its decoded payload.
type event struct {
	RoutingKey  string
	AggregateID string
	Msg         proto.Message
}

// outboxSince returns the outbox rows with an id above after, and the
// highest id seen.
func outboxSince(tb testing.TB, pool *pgxpool.Pool, after int64) ([]event, int64) {
	tb.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT id, exchange, routing_key, event_type, aggregate_id, payload FROM outbox WHERE id > $1 ORDER BY id`, after)
	if err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var events []event
	last := after
	for rows.Next() {
		var (
			id                 int64
			exchange, key, typ string
			agg                string
			payload            []byte
		)
		if err := rows.Scan(&id, &exchange, &key, &typ, &agg, &payload); err != nil {
			tb.Fatalf("scan outbox: %v", err)
		}
		if exchange != eventsv1.ExchangeInventory {
			tb.Errorf("event %d on exchange %q, want %q", id, exchange, eventsv1.ExchangeInventory)
		}
		if r, ok := eventsv1.RouteByType(typ); !ok || r.RoutingKey != key {
			tb.Errorf("event %d: type %s with routing key %s does not match names.go", id, typ, key)
		}
		msg, err := eventsv1.Unmarshal(typ, payload)
		if err != nil {
			tb.Fatalf("event %d: %v", id, err)
		}
		events = append(events, event{RoutingKey: key, AggregateID: agg, Msg: msg})
		last = id
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	return events, last
}

func keys(events []event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.RoutingKey + " " + e.AggregateID
	}
	return out
}

func reservationStatus(tb testing.TB, pool *pgxpool.Pool, id uuid.UUID) stock.Status {
	tb.Helper()
	var s stock.Status
	if err := pool.QueryRow(context.Background(), `SELECT status FROM reservations WHERE order_id = $1`, id).Scan(&s); err != nil {
		tb.Fatalf("reservation %s: %v", id, err)
	}
	return s
}

func TestPutProduct(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	ctx := context.Background()

	in := stock.Product{SKU: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Stock: 10}
	got, created, err := s.PutProduct(ctx, in)
	if err != nil || !created {
		t.Fatalf("PutProduct (new) = created %v, %v; want created", created, err)
	}
	if got.Version != 1 || got.Stock != 10 || got.Reserved != 0 || got.UpdatedAt.IsZero() {
		t.Errorf("created product = %+v", got)
	}
	in.Name, in.Stock = "Big mug", 12
	got, created, err = s.PutProduct(ctx, in)
	if err != nil || created {
		t.Fatalf("PutProduct (update) = created %v, %v; want updated", created, err)
	}
	if got.Version != 2 || got.Name != "Big mug" || got.Stock != 12 {
		t.Errorf("updated product = %+v", got)
	}

	events, _ := outboxSince(t, pool, 0)
	if diff := cmp.Diff([]string{"product.upserted MUG-1", "product.upserted MUG-1"}, keys(events)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	last := events[1].Msg.(*eventsv1.ProductUpserted)
	if last.GetVersion() != 2 || last.GetName() != "Big mug" || last.GetPriceCents() != 1299 || last.GetCurrency() != "EUR" {
		t.Errorf("ProductUpserted = %v", last)
	}

	// Stock below what orders hold is refused and changes nothing.
	if _, err := reserve(t, s, pool, uuid.New(), time.Time{}, stock.Line{SKU: "MUG-1", Quantity: 5}); err != nil {
		t.Fatal(err)
	}
	_, last2 := outboxSince(t, pool, 0)
	in.Stock = 4
	if _, _, err := s.PutProduct(ctx, in); !errors.Is(err, stock.ErrStockBelowReserved) {
		t.Errorf("PutProduct(stock 4, 5 reserved) = %v, want ErrStockBelowReserved", err)
	}
	wantLevels(t, s, "MUG-1", 12, 5)
	if events, _ := outboxSince(t, pool, last2); len(events) != 0 {
		t.Errorf("refused update wrote events %v", keys(events))
	}
	in.Stock = 5
	if _, _, err := s.PutProduct(ctx, in); err != nil {
		t.Errorf("PutProduct(stock 5, 5 reserved) = %v, want nil", err)
	}

	if _, _, err := s.PutProduct(ctx, stock.Product{SKU: "bad", Name: "x", Currency: "EUR"}); !errors.Is(err, stock.ErrInvalid) {
		t.Errorf("PutProduct(bad sku) = %v, want ErrInvalid", err)
	}
	if _, err := s.Product(ctx, "NOPE"); !errors.Is(err, stock.ErrNotFound) {
		t.Errorf("Product(NOPE) = %v, want ErrNotFound", err)
	}
}

func TestProductsPages(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	for _, sku := range []string{"C", "A", "E", "B", "D"} {
		mustPut(t, s, sku, 1)
	}
	var got []string
	after := ""
	for {
		page, err := s.Products(context.Background(), after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			got = append(got, p.SKU)
		}
		after = page[len(page)-1].SKU
	}
	if diff := cmp.Diff([]string{"A", "B", "C", "D", "E"}, got); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}
}

func TestReserveAllOrNone(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 5)
	mustPut(t, s, "B", 2)
	_, mark := outboxSince(t, pool, 0)

	// B is short: nothing is held, not even A, and the rejection is recorded.
	rejected := uuid.New()
	ch, err := reserve(t, s, pool, rejected, time.Time{},
		stock.Line{SKU: "B", Quantity: 3}, stock.Line{SKU: "A", Quantity: 3}, stock.Line{SKU: "GHOST", Quantity: 1})
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	wantShort := []stock.Shortage{{SKU: "B", Requested: 3, Available: 2}, {SKU: "GHOST", Requested: 1, Available: 0}}
	if ch.Status != stock.StatusRejected || !ch.Applied {
		t.Errorf("Reserve = %+v, want an applied rejection", ch)
	}
	if diff := cmp.Diff(wantShort, ch.Shortages); diff != "" {
		t.Errorf("shortages (-want +got):\n%s", diff)
	}
	wantLevels(t, s, "A", 5, 0)
	wantLevels(t, s, "B", 2, 0)
	if got := reservationStatus(t, pool, rejected); got != stock.StatusRejected {
		t.Errorf("reservation status = %s, want rejected", got)
	}
	events, mark := outboxSince(t, pool, mark)
	if diff := cmp.Diff([]string{"stock.rejected " + rejected.String()}, keys(events)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	rej := events[0].Msg.(*eventsv1.StockRejected)
	if len(rej.GetShortages()) != 2 || rej.GetShortages()[0].GetSku() != "B" || rej.GetShortages()[0].GetAvailable() != 2 || rej.GetRejectedAt() == nil {
		t.Errorf("StockRejected = %v", rej)
	}

	// Everything fits: all lines are held (duplicates merged).
	ok := uuid.New()
	ch, err = reserve(t, s, pool, ok, time.Now().Add(time.Minute),
		stock.Line{SKU: "B", Quantity: 1}, stock.Line{SKU: "A", Quantity: 3}, stock.Line{SKU: "B", Quantity: 1})
	if err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if diff := cmp.Diff(stock.Change{Status: stock.StatusReserved, Lines: []stock.Line{{SKU: "A", Quantity: 3}, {SKU: "B", Quantity: 2}}, Applied: true}, ch); diff != "" {
		t.Errorf("Reserve (-want +got):\n%s", diff)
	}
	wantLevels(t, s, "A", 5, 3)
	wantLevels(t, s, "B", 2, 2)
	events, _ = outboxSince(t, pool, mark)
	// Stock moved by orders publishes no product event: the catalog
	// replica needs names and prices only.
	if diff := cmp.Diff([]string{"stock.reserved " + ok.String()}, keys(events)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	res := events[0].Msg.(*eventsv1.StockReserved)
	if len(res.GetItems()) != 2 || res.GetItems()[1].GetSku() != "B" || res.GetItems()[1].GetQuantity() != 2 {
		t.Errorf("StockReserved = %v", res)
	}

	if _, err := reserve(t, s, pool, uuid.New(), time.Time{}, stock.Line{SKU: "A", Quantity: 0}); !errors.Is(err, stock.ErrInvalid) {
		t.Errorf("Reserve(quantity 0) = %v, want ErrInvalid", err)
	}
}

func TestReserveDuplicateOrderPlaced(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 5)
	id := uuid.New()
	if _, err := reserve(t, s, pool, id, time.Time{}, stock.Line{SKU: "A", Quantity: 2}); err != nil {
		t.Fatal(err)
	}
	_, mark := outboxSince(t, pool, 0)
	ch, err := reserve(t, s, pool, id, time.Time{}, stock.Line{SKU: "A", Quantity: 2})
	if err != nil || ch.Applied {
		t.Fatalf("second Reserve = %+v, %v; want not applied", ch, err)
	}
	wantLevels(t, s, "A", 5, 2)
	if events, _ := outboxSince(t, pool, mark); len(events) != 0 {
		t.Errorf("duplicate wrote events %v", keys(events))
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM reservation_lines WHERE order_id = $1`, id).Scan(&n); err != nil || n != 1 {
		t.Errorf("reservation lines = %d, %v; want 1", n, err)
	}
}

// TestNoOversellUnderConcurrency has 200 orders race for 50 units, each in
// its own transaction; exactly 50 win, and available never goes negative.
func TestNoOversellUnderConcurrency(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDB(t,
		boot.Messaging,
		postgres.Migration)
	// Enough connections for many transactions to contend at once (the
	// default pool has as many as there are CPUs).
	pool, err := pg.Connect(context.Background(), dbURL+"&pool_max_conns=40")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s := postgres.New(pool)
	mustPut(t, s, "HOT", 50)
	mustPut(t, s, "AAA", 1000) // a second line, so transactions lock two rows

	ctx, cancel := context.WithCancel(context.Background())
	var negative atomic.Int64
	sampled := make(chan int)
	go func() {
		n := 0
		defer func() { sampled <- n }()
		for ctx.Err() == nil {
			var avail int64
			if err := pool.QueryRow(ctx, `SELECT min(stock - reserved) FROM products`).Scan(&avail); err == nil {
				n++
				if avail < 0 {
					negative.Add(1)
				}
			}
		}
	}()

	const orders = 200
	var (
		wg       sync.WaitGroup
		reserved atomic.Int64
		rejected atomic.Int64
		errs     = make(chan error, orders)
	)
	for i := range orders {
		wg.Go(func() {
			lines := []stock.Line{{SKU: "HOT", Quantity: 1}}
			if i%2 == 0 {
				lines = append(lines, stock.Line{SKU: "AAA", Quantity: 1})
			}
			// A lock wait past lock_timeout is what a busy machine gives
			// 200 reservations of one row; the consumer's answer is to
			// take the message again, so the test does the same.
			id := uuid.New()
			ch, err := reserve(t, s, pool, id, time.Time{}, lines...)
			for attempt := 0; attempt < 10 && pg.IsTimeout(err); attempt++ {
				ch, err = reserve(t, s, pool, id, time.Time{}, lines...)
			}
			switch {
			case err != nil:
				errs <- err
			case ch.Status == stock.StatusReserved:
				reserved.Add(1)
			case ch.Status == stock.StatusRejected:
				rejected.Add(1)
			}
		})
	}
	wg.Wait()
	cancel()
	samples := <-sampled
	close(errs)
	for err := range errs {
		t.Errorf("Reserve: %v", err)
	}
	if reserved.Load() != 50 || rejected.Load() != orders-50 {
		t.Errorf("reserved %d, rejected %d; want 50 and %d", reserved.Load(), rejected.Load(), orders-50)
	}
	wantLevels(t, s, "HOT", 50, 50)
	var held, heldAAA int64
	err = pool.QueryRow(context.Background(), `
SELECT coalesce(sum(l.quantity) FILTER (WHERE l.sku = 'HOT'), 0), coalesce(sum(l.quantity) FILTER (WHERE l.sku = 'AAA'), 0)
FROM reservations r JOIN reservation_lines l USING (order_id) WHERE r.status = 'reserved'`).Scan(&held, &heldAAA)
	if err != nil || held != 50 {
		t.Errorf("units of HOT held by reservations = %d, %v; want 50", held, err)
	}
	if got := mustLevels(t, s, "AAA"); got[1] != heldAAA {
		t.Errorf("AAA reserved %d, held by reservations %d", got[1], heldAAA)
	}
	if negative.Load() > 0 {
		t.Errorf("available went negative in %d of %d samples", negative.Load(), samples)
	}
}

func TestCommitAndRelease(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 10)
	mustPut(t, s, "B", 10)

	// reserve → commit → release (a confirmed order cancelled before shipping)
	o1 := uuid.New()
	if _, err := reserve(t, s, pool, o1, time.Time{}, stock.Line{SKU: "A", Quantity: 3}, stock.Line{SKU: "B", Quantity: 1}); err != nil {
		t.Fatal(err)
	}
	wantLevels(t, s, "A", 10, 3)
	_, mark := outboxSince(t, pool, 0)
	ch, err := commit(t, s, pool, o1)
	if err != nil || ch.Status != stock.StatusCommitted || !ch.Applied {
		t.Fatalf("Commit = %+v, %v", ch, err)
	}
	wantLevels(t, s, "A", 7, 0)
	wantLevels(t, s, "B", 9, 0)
	events, mark := outboxSince(t, pool, mark)
	if diff := cmp.Diff([]string{"reservation.committed " + o1.String()}, keys(events)); diff != "" {
		t.Errorf("commit events (-want +got):\n%s", diff)
	}
	if c := events[0].Msg.(*eventsv1.ReservationCommitted); len(c.GetItems()) != 2 || c.GetItems()[0].GetQuantity() != 3 {
		t.Errorf("ReservationCommitted = %v", c)
	}
	if ch, err := commit(t, s, pool, o1); err != nil || ch.Applied {
		t.Errorf("second Commit = %+v, %v; want a no-op", ch, err)
	}
	wantLevels(t, s, "A", 7, 0)

	ch, err = release(t, s, pool, o1)
	if err != nil || ch.Status != stock.StatusReleased || len(ch.Lines) != 2 {
		t.Fatalf("Release (committed) = %+v, %v", ch, err)
	}
	wantLevels(t, s, "A", 10, 0)
	wantLevels(t, s, "B", 10, 0)
	events, mark = outboxSince(t, pool, mark)
	if diff := cmp.Diff([]string{"reservation.released " + o1.String()}, keys(events)); diff != "" {
		t.Errorf("restock events (-want +got):\n%s", diff)
	}

	// reserve → release
	o2 := uuid.New()
	if _, err := reserve(t, s, pool, o2, time.Time{}, stock.Line{SKU: "A", Quantity: 4}); err != nil {
		t.Fatal(err)
	}
	wantLevels(t, s, "A", 10, 4)
	if ch, err := release(t, s, pool, o2); err != nil || !ch.Applied {
		t.Fatalf("Release (held) = %+v, %v", ch, err)
	}
	wantLevels(t, s, "A", 10, 0)
	_, mark = outboxSince(t, pool, mark)
	// Released is final: a second release and a commit change nothing.
	if ch, err := release(t, s, pool, o2); err != nil || ch.Applied {
		t.Errorf("second Release = %+v, %v; want a no-op", ch, err)
	}
	if _, err := commit(t, s, pool, o2); !errors.Is(err, stock.ErrNotCommittable) {
		t.Errorf("Commit (released) = %v, want ErrNotCommittable", err)
	}
	if _, err := commit(t, s, pool, uuid.New()); !errors.Is(err, stock.ErrNoReservation) {
		t.Errorf("Commit (unknown order) = %v, want ErrNoReservation", err)
	}
	wantLevels(t, s, "A", 10, 0)
	if events, _ := outboxSince(t, pool, mark); len(events) != 0 {
		t.Errorf("no-ops wrote events %v", keys(events))
	}

	// A rejected reservation has nothing to release.
	o3 := uuid.New()
	if ch, err := reserve(t, s, pool, o3, time.Time{}, stock.Line{SKU: "A", Quantity: 11}); err != nil || ch.Status != stock.StatusRejected {
		t.Fatalf("Reserve 11 of 10 = %+v, %v", ch, err)
	}
	if ch, err := release(t, s, pool, o3); err != nil || ch.Applied || ch.Status != stock.StatusRejected {
		t.Errorf("Release (rejected) = %+v, %v; want a no-op", ch, err)
	}
	wantLevels(t, s, "A", 10, 0)
}

func TestReleaseBeforeOrderPlacedLeavesTombstone(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 10)
	_, mark := outboxSince(t, pool, 0)

	id := uuid.New()
	ch, err := release(t, s, pool, id)
	if err != nil || !ch.Applied || ch.Status != stock.StatusReleased || len(ch.Lines) != 0 {
		t.Fatalf("Release (no reservation) = %+v, %v; want a tombstone", ch, err)
	}
	events, mark := outboxSince(t, pool, mark)
	if diff := cmp.Diff([]string{"reservation.released " + id.String()}, keys(events)); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
	if items := events[0].Msg.(*eventsv1.ReservationReleased).GetItems(); len(items) != 0 {
		t.Errorf("tombstone released items %v", items)
	}

	// The late OrderPlaced reserves nothing.
	ch, err = reserve(t, s, pool, id, time.Time{}, stock.Line{SKU: "A", Quantity: 2})
	if err != nil || ch.Applied {
		t.Fatalf("Reserve after tombstone = %+v, %v; want a no-op", ch, err)
	}
	wantLevels(t, s, "A", 10, 0)
	if events, _ := outboxSince(t, pool, mark); len(events) != 0 {
		t.Errorf("late OrderPlaced wrote events %v", keys(events))
	}
	if got := reservationStatus(t, pool, id); got != stock.StatusReleased {
		t.Errorf("status = %s, want released", got)
	}
}

func TestReleaseExpired(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 10)
	expired, fresh, committed := uuid.New(), uuid.New(), uuid.New()
	past := time.Now().Add(-time.Second)
	for _, r := range []struct {
		id      uuid.UUID
		expires time.Time
	}{{expired, past}, {fresh, time.Now().Add(time.Hour)}, {committed, past}} {
		if _, err := reserve(t, s, pool, r.id, r.expires, stock.Line{SKU: "A", Quantity: 2}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := commit(t, s, pool, committed); err != nil {
		t.Fatal(err)
	}
	wantLevels(t, s, "A", 8, 4)
	_, mark := outboxSince(t, pool, 0)

	n, err := s.ReleaseExpired(context.Background(), 100)
	if err != nil || n != 1 {
		t.Fatalf("ReleaseExpired = %d, %v; want 1", n, err)
	}
	wantLevels(t, s, "A", 8, 2)
	for id, want := range map[uuid.UUID]stock.Status{expired: stock.StatusReleased, fresh: stock.StatusReserved, committed: stock.StatusCommitted} {
		if got := reservationStatus(t, pool, id); got != want {
			t.Errorf("reservation %s = %s, want %s", id, got, want)
		}
	}
	events, _ := outboxSince(t, pool, mark)
	if diff := cmp.Diff([]string{"reservation.released " + expired.String()}, keys(events)); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if n, err := s.ReleaseExpired(context.Background(), 100); err != nil || n != 0 {
		t.Errorf("second ReleaseExpired = %d, %v; want 0", n, err)
	}
}

// Several steps in one book run in order on one view of the inventory:
// units released by one step are available to the next, a late OrderPlaced
// after its release reserves nothing, and what changed is written with one
// event per applied step.
func TestManyStepsAtOnce(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 3)
	held := uuid.New()
	if _, err := reserve(t, s, pool, held, time.Time{}, stock.Line{SKU: "A", Quantity: 3}); err != nil {
		t.Fatal(err)
	}
	_, mark := outboxSince(t, pool, 0)
	next, late := uuid.New(), uuid.New()
	changes, err := inTx(t, pool, func(tx pgx.Tx) ([]stock.Change, error) {
		return apply(context.Background(), s, tx,
			stock.Step{Kind: stock.StepReserve, OrderID: next, Lines: []stock.Line{{SKU: "A", Quantity: 2}}}, // nothing left: rejected
			stock.Step{Kind: stock.StepRelease, OrderID: held},                                               // gives 3 back
			stock.Step{Kind: stock.StepReserve, OrderID: uuid.New(), Lines: []stock.Line{{SKU: "A", Quantity: 2}}},
			stock.Step{Kind: stock.StepRelease, OrderID: late}, // a tombstone
			stock.Step{Kind: stock.StepReserve, OrderID: late, Lines: []stock.Line{{SKU: "A", Quantity: 1}}},
		)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range changes {
		got = append(got, fmt.Sprintf("%s/%v", c.Status, c.Applied))
	}
	if diff := cmp.Diff([]string{"rejected/true", "released/true", "reserved/true", "released/true", "/false"}, got); diff != "" {
		t.Errorf("changes (-want +got):\n%s", diff)
	}
	wantLevels(t, s, "A", 3, 2)
	events, _ := outboxSince(t, pool, mark)
	if n := len(events); n != 4 {
		t.Errorf("%d events, want one per applied step (4): %v", n, keys(events))
	}
	if st := reservationStatus(t, pool, late); st != stock.StatusReleased {
		t.Errorf("late order's reservation = %s, want the released tombstone", st)
	}
}

// A reservation created by another transaction after this one loaded the
// inventory (a copy of the OrderPlaced handled by another replica) makes
// the save fail rather than overwrite it; the retry then sees it.
func TestSaveRefusesAReservationMadeMeanwhile(t *testing.T) {
	t.Parallel()
	s, pool := newTestStore(t)
	mustPut(t, s, "A", 10)
	id := uuid.New()
	ctx := context.Background()
	first, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = first.Rollback(ctx) }()
	if _, err := apply(ctx, s, first, stock.Step{Kind: stock.StepReserve, OrderID: id, Lines: []stock.Line{{SKU: "B", Quantity: 1}}}); err != nil {
		t.Fatal(err) // rejected (no product B), which locks no product
	}
	done := make(chan error, 1)
	go func() {
		_, err := step(t, s, pool, stock.Step{Kind: stock.StepReserve, OrderID: id, Lines: []stock.Line{{SKU: "A", Quantity: 1}}})
		done <- err
	}()
	// The second transaction waits on the first's new row, then fails.
	poll.Until(t, 10*time.Second, "the second transaction to wait for the first", func() bool {
		var waiting int
		err := pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&waiting)
		return err == nil && waiting > 0
	})
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "concurrently") {
		t.Errorf("second reserve = %v, want a conflict error", err)
	}
	wantLevels(t, s, "A", 10, 0)
	if ch, err := reserve(t, s, pool, id, time.Time{}, stock.Line{SKU: "A", Quantity: 1}); err != nil || ch.Applied {
		t.Errorf("retry = %+v, %v; want nothing done (the order has its reservation)", ch, err)
	}
}
