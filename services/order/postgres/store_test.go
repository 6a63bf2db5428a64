package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/pg"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/internal/ordertest"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

var (
	widget = order.Product{SKU: "WIDGET", Name: "Widget", PriceCents: 1250, Currency: "EUR"}
	gadget = order.Product{SKU: "GADGET", Name: "Gadget", PriceCents: 499, Currency: "EUR"}
	dollar = order.Product{SKU: "DOLLAR", Name: "Dollar thing", PriceCents: 100, Currency: "USD"}
)

func newStore(t *testing.T, clock *ordertest.Clock) (*postgres.Store, func(q string, args ...any) int) {
	t.Helper()
	store, pool := ordertest.NewStore(t, clock)
	ordertest.SeedCatalog(t, pool, widget, gadget, dollar)
	return store, func(q string, args ...any) int { return ordertest.Count(t, pool, q, args...) }
}

func mustCreate(t *testing.T, store *postgres.Store, customer string) order.Order {
	t.Helper()
	o, err := store.Create(context.Background(), ordertest.Timeouts, order.Request{
		CustomerID:    customer,
		Lines:         []order.Line{{SKU: "WIDGET", Quantity: 2}, {SKU: "GADGET", Quantity: 1}},
		PaymentMethod: "pm_card_ok",
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return o
}

func TestCreateStoresOrderHistoryAndEvents(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, count := newStore(t, clock)
	o := mustCreate(t, store, "alice")

	if o.Status != order.StatusPending || o.Version != 1 || o.TotalCents != 2*1250+499 || o.Currency != "EUR" {
		t.Errorf("created order = %+v", o)
	}
	got, err := store.Get(context.Background(), o.ID, "alice")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	wantItems := []order.Item{{SKU: "WIDGET", Quantity: 2, UnitPriceCents: 1250}, {SKU: "GADGET", Quantity: 1, UnitPriceCents: 499}}
	if diff := cmp.Diff(wantItems, got.Items); diff != "" {
		t.Errorf("items (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(o, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "History" }, cmp.Ignore())); diff != "" {
		t.Errorf("Get differs from Create's result (-create +get):\n%s", diff)
	}
	wantHist := []order.HistoryEntry{{Seq: 1, Status: order.StatusPending, At: o.CreatedAt}}
	if diff := cmp.Diff(wantHist, got.History); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if want := o.CreatedAt.Add(30 * time.Second); got.DeadlineAt == nil || !got.DeadlineAt.Equal(want) {
		t.Errorf("deadline = %v, want %v", got.DeadlineAt, want)
	}

	evs := ordertest.Outbox(t, store.Pool(), o.ID)
	if diff := cmp.Diff([]string{"OrderPlaced", "OrderStatusChanged"}, ordertest.Types(evs)); diff != "" {
		t.Fatalf("outbox (-want +got):\n%s", diff)
	}
	placed := evs[0].Msg.(*eventsv1.OrderPlaced)
	if evs[0].Exchange != eventsv1.ExchangeOrder || evs[0].RoutingKey != "order.placed" || evs[0].Aggregate != o.ID {
		t.Errorf("OrderPlaced routed as %+v", evs[0])
	}
	if placed.GetCustomerId() != "alice" || placed.GetTotalCents() != 2999 || len(placed.GetItems()) != 2 || placed.GetPaymentMethod() != "pm_card_ok" {
		t.Errorf("OrderPlaced = %v", placed)
	}
	if want := o.CreatedAt.Add(30*time.Second + 30*time.Second + time.Minute); !placed.GetExpiresAt().AsTime().Equal(want) {
		t.Errorf("OrderPlaced.expires_at = %v, want %v", placed.GetExpiresAt().AsTime(), want)
	}
	changed := evs[1].Msg.(*eventsv1.OrderStatusChanged)
	if changed.GetSeq() != 1 || changed.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_PENDING || changed.GetCustomerId() != "alice" ||
		changed.GetReason() != eventsv1.CancelReason_CANCEL_REASON_UNSPECIFIED || !changed.GetAt().AsTime().Equal(o.CreatedAt) {
		t.Errorf("OrderStatusChanged = %v", changed)
	}
	if n := count(`SELECT count(*) FROM order_items WHERE order_id = $1`, o.ID); n != 2 {
		t.Errorf("order_items = %d, want 2", n)
	}
}

func TestCreateRefusesBadOrdersAndWritesNothing(t *testing.T) {
	t.Parallel()
	store, count := newStore(t, nil)
	tests := []struct {
		name  string
		lines []order.Line
		want  error
	}{
		{"unknown sku", []order.Line{{SKU: "WIDGET", Quantity: 1}, {SKU: "NOPE", Quantity: 1}}, order.ErrUnknownSKU},
		{"mixed currencies", []order.Line{{SKU: "WIDGET", Quantity: 1}, {SKU: "DOLLAR", Quantity: 1}}, order.ErrMixedCurrency},
		{"no lines", nil, order.ErrInvalidOrder},
		{"quantity", []order.Line{{SKU: "WIDGET", Quantity: 1001}}, order.ErrInvalidOrder},
	}
	for _, tt := range tests {
		_, err := store.Create(context.Background(), ordertest.Timeouts, order.Request{CustomerID: "bob", Lines: tt.lines, PaymentMethod: "pm_card_ok"})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
		var ve *order.ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%s: err %v is not a ValidationError", tt.name, err)
		}
	}
	for _, table := range []string{"orders", "order_items", "order_history", "outbox"} {
		if n := count(`SELECT count(*) FROM ` + table); n != 0 {
			t.Errorf("%s has %d rows after refused orders", table, n)
		}
	}
}

// createOnce places req with key k as the API does, in one transaction:
// LockKey, the response respond renders from the new order, SavePlacement.
func createOnce(ctx context.Context, store *postgres.Store, req order.Request, k postgres.IdempotencyKey, respond func(order.Order) ([]byte, error)) (postgres.StoredResponse, bool, error) {
	var (
		got      postgres.StoredResponse
		replayed bool
	)
	err := pg.Transact(ctx, store.Pool(), func(tx pgx.Tx) error {
		p, err := store.LockKey(ctx, tx, ordertest.Timeouts, req, k)
		if err != nil {
			return err
		}
		if replayed = p.Replay != nil; replayed {
			got = *p.Replay
			return nil
		}
		body, err := respond(p.Order)
		if err != nil {
			return err
		}
		got = postgres.StoredResponse{OrderID: p.Order.ID, Status: 201, Body: body}
		return store.SavePlacement(ctx, tx, p, body)
	})
	if err != nil {
		return postgres.StoredResponse{}, false, err
	}
	return got, replayed, nil
}

// A failing respond (the idempotent response could not be rendered) rolls
// the whole order back, key included.
func TestIdempotentRespondErrorRollsBack(t *testing.T) {
	t.Parallel()
	store, count := newStore(t, nil)
	boom := errors.New("boom")
	_, _, err := createOnce(context.Background(), store, order.Request{CustomerID: "c", Lines: []order.Line{{SKU: "WIDGET", Quantity: 1}}, PaymentMethod: "pm"},
		postgres.IdempotencyKey{CustomerID: "c", Key: "k", Hash: []byte("h")},
		func(order.Order) ([]byte, error) { return nil, boom })
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if n := count(`SELECT (SELECT count(*) FROM orders) + (SELECT count(*) FROM outbox) + (SELECT count(*) FROM idempotency_keys)`); n != 0 {
		t.Errorf("%d rows left after a failed respond", n)
	}
}

func TestTransitionAdminAndCustomer(t *testing.T) {
	t.Parallel()
	store, _ := newStore(t, nil)
	ctx := context.Background()
	o := mustCreate(t, store, "carol")

	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventShip}); !errors.Is(err, order.ErrInvalidTransition) {
		t.Errorf("ship a pending order: err = %v, want ErrInvalidTransition", err)
	}
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel, Owner: "mallory"}); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("cancel someone else's order: err = %v, want ErrNotFound", err)
	}
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: uuid.NewString(), Event: order.EventCancel}); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("cancel an unknown order: err = %v, want ErrNotFound", err)
	}
	got, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel, Owner: "carol"})
	if err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if got.Status != order.StatusCancelled || got.Reason != order.ReasonCustomerRequest || got.Version != 2 || len(got.Items) != 2 || got.DeadlineAt != nil {
		t.Errorf("cancelled order = %+v", got)
	}
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel, Owner: "carol"}); !errors.Is(err, order.ErrNotCancellable) {
		t.Errorf("cancel twice: err = %v, want ErrNotCancellable", err)
	}
	evs := ordertest.Outbox(t, store.Pool(), o.ID)
	if diff := cmp.Diff([]string{"OrderPlaced", "OrderStatusChanged", "OrderStatusChanged", "OrderCancelled", "ReleaseReservation", "RefundRequested"}, ordertest.Types(evs)); diff != "" {
		t.Fatalf("outbox (-want +got):\n%s", diff)
	}
	sc := evs[2].Msg.(*eventsv1.OrderStatusChanged)
	if sc.GetSeq() != 2 || sc.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_CANCELLED || sc.GetReason() != eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST {
		t.Errorf("OrderStatusChanged = %v", sc)
	}
	refund := evs[5].Msg.(*eventsv1.RefundRequested)
	if refund.GetAmountCents() != o.TotalCents || refund.GetIdempotencyKey() == "" || refund.GetReason() != eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST {
		t.Errorf("RefundRequested = %v", refund)
	}
}

func TestSweepDeadlinesCancelsOverdueOrders(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, _ := newStore(t, clock)
	ctx := context.Background()

	pending := mustCreate(t, store, "dave")
	reserved := mustCreate(t, store, "dave")
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: reserved.ID, Event: order.EventStockReserved}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second)
	fresh := mustCreate(t, store, "dave")

	if n, err := store.SweepDeadlines(ctx, ordertest.Timeouts, 100); err != nil || n != 0 {
		t.Fatalf("sweep before any deadline = %d, %v; want 0", n, err)
	}
	clock.Advance(15 * time.Second)                            // pending is 35s old; reserved's payment deadline is 30s after reservation
	n, err := store.SweepDeadlines(ctx, ordertest.Timeouts, 1) // batches of one: the loop must go on
	if err != nil || n != 2 {
		t.Fatalf("sweep = %d, %v; want 2", n, err)
	}
	for _, id := range []string{pending.ID, reserved.ID} {
		o, err := store.Get(ctx, id, "")
		if err != nil {
			t.Fatal(err)
		}
		if o.Status != order.StatusCancelled || o.Reason != order.ReasonTimeout || o.DeadlineAt != nil {
			t.Errorf("order %s after sweep = %s/%s deadline %v", id, o.Status, o.Reason, o.DeadlineAt)
		}
		types := ordertest.Types(ordertest.Outbox(t, store.Pool(), id))
		if diff := cmp.Diff([]string{"OrderStatusChanged", "OrderCancelled", "ReleaseReservation", "RefundRequested"}, types[len(types)-4:]); diff != "" {
			t.Errorf("events of timed-out order (-want +got):\n%s", diff)
		}
	}
	if o, _ := store.Get(ctx, fresh.ID, ""); o.Status != order.StatusPending {
		t.Errorf("order within its deadline swept: %s", o.Status)
	}
	if n, err := store.SweepDeadlines(ctx, ordertest.Timeouts, 100); err != nil || n != 0 {
		t.Errorf("second sweep = %d, %v; want 0", n, err)
	}
}

func TestListPagesNewestFirst(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, _ := newStore(t, clock)
	ctx := context.Background()
	var want []string
	for i := range 25 {
		if i%5 == 0 {
			// Several orders share a created_at: the id breaks the tie.
			clock.Advance(time.Second)
		}
		want = append([]string{mustCreate(t, store, "erin").ID}, want...)
	}
	mustCreate(t, store, "frank")
	// Ties on created_at are broken by id DESC; ids are UUIDv7, which
	// increase within a process, so newest first is the reverse of
	// creation order.
	var got []string
	var cursor *order.Cursor
	pages := 0
	for {
		page, next, err := store.List(ctx, order.ListQuery{CustomerID: "erin", Limit: 10, After: cursor})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, o := range page {
			if o.CustomerID != "erin" || len(o.Items) != 2 {
				t.Errorf("listed order %+v", o)
			}
			got = append(got, o.ID)
		}
		if next == nil {
			break
		}
		c, err := order.ParseCursor(next.String())
		if err != nil {
			t.Fatalf("cursor round trip: %v", err)
		}
		cursor = &c
	}
	if pages != 3 {
		t.Errorf("pages = %d, want 3", pages)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("listed ids (-want +got):\n%s", diff)
	}

	// Status filter.
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: want[3], Event: order.EventCancel}); err != nil {
		t.Fatal(err)
	}
	page, next, err := store.List(ctx, order.ListQuery{CustomerID: "erin", Status: order.StatusCancelled, Limit: 10})
	if err != nil || len(page) != 1 || page[0].ID != want[3] || next != nil {
		t.Errorf("cancelled filter = %d orders, next %v, err %v", len(page), next, err)
	}
	// An exact page leaves no cursor.
	page, next, err = store.List(ctx, order.ListQuery{CustomerID: "frank", Limit: 1})
	if err != nil || len(page) != 1 || next != nil {
		t.Errorf("exact page = %d orders, next %v, err %v", len(page), next, err)
	}
}

func TestIdempotencyKeys(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, count := newStore(t, clock)
	ctx := context.Background()
	req := func(customer string) order.Request {
		return order.Request{CustomerID: customer, Lines: []order.Line{{SKU: "WIDGET", Quantity: 1}}, PaymentMethod: "pm_card_ok"}
	}
	respond := func(o order.Order) ([]byte, error) { return []byte(`{"id": "` + o.ID + `",   "b": 2}`), nil }
	k := postgres.IdempotencyKey{CustomerID: "gina", Key: "k1", Hash: []byte("h1")}

	first, replayed, err := createOnce(ctx, store, req("gina"), k, respond)
	if err != nil || replayed || first.Status != 201 || first.OrderID == "" {
		t.Fatalf("first = %+v, replayed %v, %v; want a new order", first, replayed, err)
	}
	again, replayed, err := createOnce(ctx, store, req("gina"), k, respond)
	if err != nil || !replayed || again.OrderID != first.OrderID || string(again.Body) != string(first.Body) {
		t.Fatalf("replay = %+v, replayed %v, %v; want the first response, byte for byte", again, replayed, err)
	}
	if _, _, err := createOnce(ctx, store, req("gina"), postgres.IdempotencyKey{CustomerID: "gina", Key: "k1", Hash: []byte("h2")}, respond); !errors.Is(err, order.ErrIdempotencyKeyReused) {
		t.Errorf("key with another body: err = %v, want ErrIdempotencyKeyReused", err)
	}
	// Another customer's identical key is a different key.
	if other, replayed, err := createOnce(ctx, store, req("hank"), postgres.IdempotencyKey{CustomerID: "hank", Key: "k1", Hash: []byte("h1")}, respond); err != nil || replayed || other.OrderID == first.OrderID {
		t.Errorf("other customer's key = %+v, replayed %v, %v; want a new order", other, replayed, err)
	}
	if n := count(`SELECT count(*) FROM orders`); n != 2 {
		t.Errorf("orders = %d, want 2", n)
	}

	// While a request holds the key, another with it is told it is in
	// flight; the key is free again once the first ends, even without
	// storing anything (it failed).
	hold, err := store.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('4:gina' || 'k2', 0))`); err != nil {
		t.Fatal(err)
	}
	k2 := postgres.IdempotencyKey{CustomerID: "gina", Key: "k2", Hash: []byte("h")}
	if _, _, err := createOnce(ctx, store, req("gina"), k2, respond); !errors.Is(err, order.ErrIdempotencyKeyInUse) {
		t.Errorf("key in flight: err = %v, want ErrIdempotencyKeyInUse", err)
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if _, replayed, err := createOnce(ctx, store, req("gina"), k2, respond); err != nil || replayed {
		t.Errorf("key after the first request ended = replayed %v, %v; want a new order", replayed, err)
	}

	// After the TTL a key starts afresh, and the purge removes the others.
	clock.Advance(postgres.IdempotencyTTL + time.Second)
	if fresh, replayed, err := createOnce(ctx, store, req("gina"), postgres.IdempotencyKey{CustomerID: "gina", Key: "k1", Hash: []byte("other")}, respond); err != nil || replayed || fresh.OrderID == first.OrderID {
		t.Errorf("key after expiry = %+v, replayed %v, %v; want a new order", fresh, replayed, err)
	}
	n, err := store.PurgeKeys(ctx)
	if err != nil || n != 2 { // hank/k1 and gina/k2 expired; gina/k1 was just renewed
		t.Errorf("purge = %d, %v; want 2", n, err)
	}
	if n := count(`SELECT count(*) FROM idempotency_keys`); n != 1 {
		t.Errorf("keys left = %d, want 1", n)
	}
}

func TestUpsertProductKeepsNewestVersion(t *testing.T) {
	t.Parallel()
	store, _ := newStore(t, nil)
	ctx := context.Background()
	upsert := func(p order.Product) bool {
		var wrote bool
		err := pg.Transact(ctx, store.Pool(), func(tx pgx.Tx) error {
			var err error
			wrote, err = store.UpsertProduct(ctx, tx, p)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return wrote
	}
	for i, step := range []struct {
		p     order.Product
		wrote bool
	}{
		{order.Product{SKU: "NEW", Name: "v2", PriceCents: 200, Currency: "EUR", Version: 2}, true},
		{order.Product{SKU: "NEW", Name: "v1", PriceCents: 100, Currency: "EUR", Version: 1}, false},
		{order.Product{SKU: "NEW", Name: "v2 again", PriceCents: 999, Currency: "EUR", Version: 2}, false},
		{order.Product{SKU: "NEW", Name: "v3", PriceCents: 300, Currency: "EUR", Version: 3}, true},
	} {
		if got := upsert(step.p); got != step.wrote {
			t.Errorf("step %d (%s): wrote = %v, want %v", i, step.p.Name, got, step.wrote)
		}
	}
	p, ok := ordertest.Product(t, store.Pool(), "NEW")
	if !ok || p.Name != "v3" || p.PriceCents != 300 || p.Version != 3 {
		t.Errorf("product = %+v, %v; want v3", p, ok)
	}
	if p, ok := ordertest.Product(t, store.Pool(), "ABSENT"); ok {
		t.Errorf("absent product = %+v", p)
	}
}

// The backlog is how long the orders waiting longest in each step have
// waited, after skipping the given number of the longest waiters.
func TestBacklog(t *testing.T) {
	t.Parallel()
	clock := ordertest.NewClock()
	store, _ := newStore(t, clock)
	ctx := context.Background()
	backlog := func(skip int) order.Backlog {
		t.Helper()
		b, err := store.Backlog(ctx, ordertest.Timeouts, skip)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := backlog(0); b != (order.Backlog{}) {
		t.Errorf("backlog of an empty store = %+v, want none", b)
	}
	var early []order.Order
	for range 3 {
		early = append(early, mustCreate(t, store, "ivy"))
	}
	clock.Advance(5 * time.Second)
	mustCreate(t, store, "ivy")
	clock.Advance(3 * time.Second)
	if b := backlog(0); b.Reserve != 8*time.Second || b.Payment != 0 {
		t.Errorf("backlog = %+v, want 8s waiting for inventory", b)
	}
	if b := backlog(3); b.Reserve != 3*time.Second {
		t.Errorf("backlog skipping the 3 longest = %+v, want the 4th order's 3s", b)
	}
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: early[0].ID, Event: order.EventStockReserved}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	if b := backlog(0); b.Reserve != 10*time.Second || b.Payment != 2*time.Second || b.Lag() != 12*time.Second {
		t.Errorf("backlog = %+v, want 10s for inventory and 2s for payment", b)
	}
}

// Many steps on the orders of one LockOrders run in order on one view of
// them and are written by one Save: an order can go two steps at once, a
// duplicate and an unknown order are reported without stopping the others,
// and a compensation records the payment it refunds. Every order's events
// come out in the order of its steps.
func TestSaveManyStepsAtOnce(t *testing.T) {
	t.Parallel()
	store, count := newStore(t, nil)
	ctx := context.Background()
	a, b, c := mustCreate(t, store, "kim"), mustCreate(t, store, "kim"), mustCreate(t, store, "kim")
	if _, err := store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: c.ID, Event: order.EventCancel}); err != nil {
		t.Fatal(err)
	}
	var results []order.Result
	err := pg.Transact(ctx, store.Pool(), func(tx pgx.Tx) error {
		steps := []order.Step{
			{OrderID: a.ID, Event: order.EventStockReserved},
			{OrderID: b.ID, Event: order.EventStockRejected},
			{OrderID: a.ID, Event: order.EventPaymentAuthorized, PaymentID: "pay-a"},
			{OrderID: a.ID, Event: order.EventStockReserved}, // a duplicate
			{OrderID: c.ID, Event: order.EventPaymentAuthorized, PaymentID: "pay-c"},
			{OrderID: "00000000-0000-0000-0000-000000000000", Event: order.EventStockReserved},
		}
		orders, err := store.LockOrders(ctx, tx, steps...)
		if err != nil {
			return err
		}
		out, err := order.ApplySteps(orders, steps, store.Now(), ordertest.Timeouts)
		if err != nil {
			return err
		}
		results = out.Results
		return store.Save(ctx, tx, out)
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range results {
		switch {
		case errors.Is(r.Err, order.ErrNotFound):
			got = append(got, "not found")
		case errors.Is(r.Err, order.ErrInvalidTransition):
			got = append(got, "invalid")
		default:
			got = append(got, fmt.Sprintf("%s v%d", r.Order.Status, r.Order.Version))
		}
	}
	if diff := cmp.Diff([]string{"reserved v2", "cancelled v2", "confirmed v3", "invalid", "cancelled v2", "not found"}, got); diff != "" {
		t.Errorf("results (-want +got):\n%s", diff)
	}
	after, err := store.Get(ctx, a.ID, "")
	if err != nil || after.Status != order.StatusConfirmed || after.Version != 3 || after.PaymentID != "pay-a" || len(after.History) != 3 || after.DeadlineAt != nil {
		t.Errorf("order a = %+v, %v; want confirmed at version 3 with three history entries", after, err)
	}
	if diff := cmp.Diff([]string{"OrderPlaced", "OrderStatusChanged", "OrderStatusChanged", "PaymentRequested", "OrderStatusChanged", "CommitReservation"},
		ordertest.Types(ordertest.Outbox(t, store.Pool(), a.ID))); diff != "" {
		t.Errorf("events of a (-want +got):\n%s", diff)
	}
	if p, _ := store.Get(ctx, c.ID, ""); p.PaymentID != "pay-c" {
		t.Errorf("cancelled order's payment id = %q, want the refunded pay-c", p.PaymentID)
	}
	if evs := ordertest.Types(ordertest.Outbox(t, store.Pool(), c.ID)); evs[len(evs)-1] != "RefundRequested" {
		t.Errorf("events of c = %v, want a refund last", evs)
	}
	if n := count(`SELECT count(*) FROM order_history`); n != 3+2+2 {
		t.Errorf("history rows = %d, want 7", n)
	}
}
