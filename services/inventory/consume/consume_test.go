package consume_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/consume"
	"github.com/orderly/orderly/services/inventory/postgres"
	"github.com/orderly/orderly/services/inventory/stock"
)

// harness is the queue's handler, wrapped in the inbox exactly as the
// service runs it, on a fresh database.
type harness struct {
	tb     testing.TB
	pool   *pgxpool.Pool
	store  *postgres.Store
	handle rabbit.Handler
	mark   int64 // outbox rows up to here were already looked at
}

func newHarness(tb testing.TB) *harness {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	store := postgres.New(pool)
	h := consume.New(store, slog.New(slog.DiscardHandler))
	return &harness{tb: tb, pool: pool, store: store, handle: rabbittest.One(h.Consumers()[0].Batch)}
}

func (h *harness) put(sku string, units int64) {
	h.tb.Helper()
	if _, _, err := h.store.PutProduct(context.Background(), stock.Product{SKU: sku, Name: sku, PriceCents: 100, Currency: "EUR", Stock: units}); err != nil {
		h.tb.Fatal(err)
	}
	h.drain()
}

// delivery builds the AMQP delivery the order service's relay would send
// for msg, with a fresh message id.
func delivery(tb testing.TB, msg proto.Message) *amqp.Delivery {
	tb.Helper()
	route, ok := eventsv1.RouteOf(msg)
	if !ok {
		tb.Fatalf("no route for %T", msg)
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		tb.Fatal(err)
	}
	return &amqp.Delivery{
		MessageId:   uuid.NewString(),
		Type:        route.Type,
		ContentType: eventsv1.ContentType,
		Exchange:    route.Exchange,
		RoutingKey:  route.RoutingKey,
		Body:        body,
	}
}

// drain returns the events written since the last call.
func (h *harness) drain() []proto.Message {
	h.tb.Helper()
	rows, err := h.pool.Query(context.Background(), `SELECT id, event_type, payload FROM outbox WHERE id > $1 ORDER BY id`, h.mark)
	if err != nil {
		h.tb.Fatal(err)
	}
	defer rows.Close()
	var out []proto.Message
	for rows.Next() {
		var (
			typ     string
			payload []byte
		)
		if err := rows.Scan(&h.mark, &typ, &payload); err != nil {
			h.tb.Fatal(err)
		}
		msg, err := eventsv1.Unmarshal(typ, payload)
		if err != nil {
			h.tb.Fatal(err)
		}
		out = append(out, msg)
	}
	if err := rows.Err(); err != nil {
		h.tb.Fatal(err)
	}
	return out
}

// sagaEvents drops timestamps, leaving what the order saga reads.
func sagaEvents(msgs []proto.Message) []proto.Message {
	var out []proto.Message
	for _, m := range msgs {
		m = proto.Clone(m)
		r := m.ProtoReflect()
		r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
			if fd.Message() != nil && fd.Message().FullName() == "google.protobuf.Timestamp" {
				r.Clear(fd)
			}
			return true
		})
		out = append(out, m)
	}
	return out
}

func (h *harness) wantEvents(want ...proto.Message) {
	h.tb.Helper()
	got := sagaEvents(h.drain())
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		h.tb.Errorf("events (-want +got):\n%s", diff)
	}
}

func (h *harness) levels(sku string) [2]int64 {
	h.tb.Helper()
	p, err := h.store.Product(context.Background(), sku)
	if err != nil {
		h.tb.Fatal(err)
	}
	return [2]int64{p.Stock, p.Reserved}
}

func placed(id uuid.UUID, items ...*eventsv1.LineItem) *eventsv1.OrderPlaced {
	return &eventsv1.OrderPlaced{
		OrderId:   id.String(),
		Items:     items,
		ExpiresAt: timestamppb.New(time.Now().Add(time.Minute)),
	}
}

func item(sku string, q int32) *eventsv1.LineItem {
	return &eventsv1.LineItem{Sku: sku, Quantity: q, UnitPriceCents: 100}
}

func line(sku string, q int32) *eventsv1.StockLine { return &eventsv1.StockLine{Sku: sku, Quantity: q} }

func TestSagaThroughTheInbox(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	h.put("A", 5)
	h.put("B", 5)

	id := uuid.New()
	d := delivery(t, placed(id, item("B", 2), item("A", 1)))
	if err := h.handle(ctx, d); err != nil {
		t.Fatalf("OrderPlaced: %v", err)
	}
	h.wantEvents(&eventsv1.StockReserved{OrderId: id.String(), Items: []*eventsv1.StockLine{line("A", 1), line("B", 2)}})
	if got := h.levels("B"); got != [2]int64{5, 2} {
		t.Errorf("B after reserve = %v", got)
	}

	// The same message again (a redelivery) and the same event again (a
	// republished duplicate) change nothing.
	if err := h.handle(ctx, d); err != nil {
		t.Fatalf("redelivered OrderPlaced: %v", err)
	}
	if err := h.handle(ctx, delivery(t, placed(id, item("B", 2), item("A", 1)))); err != nil {
		t.Fatalf("duplicate OrderPlaced: %v", err)
	}
	h.wantEvents()
	if got := h.levels("B"); got != [2]int64{5, 2} {
		t.Errorf("B after duplicates = %v", got)
	}

	if err := h.handle(ctx, delivery(t, &eventsv1.CommitReservation{OrderId: id.String()})); err != nil {
		t.Fatalf("CommitReservation: %v", err)
	}
	h.wantEvents(&eventsv1.ReservationCommitted{OrderId: id.String(), Items: []*eventsv1.StockLine{line("A", 1), line("B", 2)}})
	if got := h.levels("B"); got != [2]int64{3, 0} {
		t.Errorf("B after commit = %v", got)
	}

	// A confirmed order cancelled before shipping returns its units.
	if err := h.handle(ctx, delivery(t, &eventsv1.ReleaseReservation{OrderId: id.String()})); err != nil {
		t.Fatalf("ReleaseReservation: %v", err)
	}
	h.wantEvents(&eventsv1.ReservationReleased{OrderId: id.String(), Items: []*eventsv1.StockLine{line("A", 1), line("B", 2)}})
	if got := h.levels("B"); got != [2]int64{5, 0} {
		t.Errorf("B after release = %v", got)
	}
}

func TestOutOfStockIsRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.put("A", 1)
	id := uuid.New()
	if err := h.handle(context.Background(), delivery(t, placed(id, item("A", 1), item("GONE", 1), item("A", 1)))); err != nil {
		t.Fatalf("OrderPlaced: %v", err)
	}
	h.wantEvents(&eventsv1.StockRejected{OrderId: id.String(), Shortages: []*eventsv1.StockShortage{
		{Sku: "A", Requested: 2, Available: 1},
		{Sku: "GONE", Requested: 1, Available: 0},
	}})
	if got := h.levels("A"); got != [2]int64{1, 0} {
		t.Errorf("A = %v, want nothing held", got)
	}
}

func TestReleaseOvertakingOrderPlaced(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.put("A", 3)
	id := uuid.New()
	if err := h.handle(context.Background(), delivery(t, &eventsv1.ReleaseReservation{OrderId: id.String()})); err != nil {
		t.Fatalf("ReleaseReservation: %v", err)
	}
	h.wantEvents(&eventsv1.ReservationReleased{OrderId: id.String()})
	if err := h.handle(context.Background(), delivery(t, placed(id, item("A", 1)))); err != nil {
		t.Fatalf("late OrderPlaced: %v", err)
	}
	h.wantEvents()
	if got := h.levels("A"); got != [2]int64{3, 0} {
		t.Errorf("A = %v, want nothing held", got)
	}
}

func TestPoisonMessagesArePermanent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.put("A", 3)
	corrupt := delivery(t, placed(uuid.New(), item("A", 1)))
	corrupt.Body = []byte{0xff, 0xff, 0xff}
	unknownType := delivery(t, placed(uuid.New(), item("A", 1)))
	unknownType.Type = "orderly.events.v1.Nonsense"
	notOurs := delivery(t, &eventsv1.PaymentRequested{OrderId: uuid.NewString()})
	badID := delivery(t, placed(uuid.New(), item("A", 1)))
	badID.MessageId = "not-a-uuid"

	tests := []struct {
		name string
		d    *amqp.Delivery
	}{
		{"corrupt body", corrupt},
		{"unknown type", unknownType},
		{"type inventory does not handle", notOurs},
		{"message id not a UUID", badID},
		{"order id not a UUID", delivery(t, &eventsv1.OrderPlaced{OrderId: "order-1", Items: []*eventsv1.LineItem{item("A", 1)}})},
		{"no items", delivery(t, placed(uuid.New()))},
		{"zero quantity", delivery(t, placed(uuid.New(), item("A", 0)))},
		{"malformed sku", delivery(t, placed(uuid.New(), item("a b", 1)))},
		{"commit without reservation", delivery(t, &eventsv1.CommitReservation{OrderId: uuid.NewString()})},
		{"release with bad order id", delivery(t, &eventsv1.ReleaseReservation{OrderId: ""})},
	}
	for _, tt := range tests {
		err := h.handle(context.Background(), tt.d)
		if !rabbit.IsPermanent(err) {
			t.Errorf("%s: error %v, want a permanent one", tt.name, err)
		}
	}
	h.wantEvents()
	if got := h.levels("A"); got != [2]int64{3, 0} {
		t.Errorf("A = %v, want untouched", got)
	}
	var inbox int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM inbox`).Scan(&inbox); err != nil || inbox != 0 {
		t.Errorf("inbox rows = %d, %v; want none (dead letters are not applied)", inbox, err)
	}
}

func TestCommitOfReleasedReservationIsPermanent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.put("A", 3)
	id := uuid.New()
	for _, m := range []proto.Message{placed(id, item("A", 1)), &eventsv1.ReleaseReservation{OrderId: id.String()}} {
		if err := h.handle(context.Background(), delivery(t, m)); err != nil {
			t.Fatal(err)
		}
	}
	h.drain()
	err := h.handle(context.Background(), delivery(t, &eventsv1.CommitReservation{OrderId: id.String()}))
	if !rabbit.IsPermanent(err) || !errors.Is(err, stock.ErrNotCommittable) {
		t.Errorf("commit after release = %v, want permanent ErrNotCommittable", err)
	}
	h.wantEvents()
}

// Batches that reserve and commit overlapping products in opposite orders
// run at the same time without deadlocking (the database counts none) and
// move exactly the units their orders asked for.
func TestConcurrentBatchesDoNotDeadlock(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t,
		boot.Messaging,
		postgres.Migration)
	store := postgres.New(pool)
	skus := []string{"A", "B", "C", "D", "E", "F"}
	for _, sku := range skus {
		if _, _, err := store.PutProduct(context.Background(), stock.Product{SKU: sku, Name: sku, PriceCents: 100, Currency: "EUR", Stock: 1_000_000}); err != nil {
			t.Fatal(err)
		}
	}
	deadlocks := func() (n int64) {
		t.Helper()
		if err := pool.QueryRow(context.Background(), `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := deadlocks()
	handle := consume.New(store, slog.New(slog.DiscardHandler)).Consumers()[0].Batch
	batch := func(msgs ...proto.Message) []rabbit.Delivery {
		out := make([]rabbit.Delivery, len(msgs))
		for i, m := range msgs {
			out[i] = rabbit.Delivery{Ctx: context.Background(), Delivery: delivery(t, m)}
		}
		return out
	}
	const rounds = 40
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for r := range rounds {
				// Worker 0 goes up the SKUs, worker 1 down.
				a, b := skus[r%len(skus)], skus[len(skus)-1-r%len(skus)]
				if w == 1 {
					a, b = b, a
				}
				// Within a batch each order locks one product, a before
				// b in worker 0's batches and b before a in worker 1's.
				o1, o2 := uuid.New(), uuid.New()
				steps := [][]proto.Message{
					{placed(o1, item(a, 1)), placed(o2, item(b, 3)), placed(uuid.New(), item(a, 1))},
					{&eventsv1.CommitReservation{OrderId: o1.String()}, &eventsv1.CommitReservation{OrderId: o2.String()}},
				}
				for _, msgs := range steps {
					for i, err := range handle(context.Background(), batch(msgs...)) {
						if err != nil {
							t.Errorf("worker %d round %d message %d: %v", w, r, i, err)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if n := deadlocks() - before; n != 0 {
		t.Errorf("%d deadlocks between concurrent batches, want none", n)
	}
	var stockTaken, reserved int64
	if err := pool.QueryRow(context.Background(), `SELECT sum(1000000 - stock), sum(reserved) FROM products`).Scan(&stockTaken, &reserved); err != nil {
		t.Fatal(err)
	}
	// Per round and worker: 4 units committed (o1: 3, o2: 1), 1 held.
	if stockTaken != 2*rounds*4 || reserved != 2*rounds {
		t.Errorf("units taken %d and held %d, want %d and %d", stockTaken, reserved, 2*rounds*4, 2*rounds)
	}
}
