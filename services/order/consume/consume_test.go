package consume_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/consume"
	"github.com/orderly/orderly/services/order/internal/ordertest"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

type fixture struct {
	t       *testing.T
	store   *postgres.Store
	saga    rabbit.Handler
	catalog rabbit.Handler
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, pool := ordertest.NewStore(t, nil)
	ordertest.SeedCatalog(t, pool, order.Product{SKU: "WIDGET", Name: "Widget", PriceCents: 1000, Currency: "EUR"})
	byQueue := map[string]rabbit.Handler{}
	for _, c := range newConsumers(store) {
		byQueue[c.Queue.Name] = rabbittest.One(c.Batch)
	}
	return &fixture{t: t, store: store, saga: byQueue[consume.QueueSaga], catalog: byQueue[consume.QueueCatalog]}
}

// newConsumers returns the consumers of the service's queues on store.
func newConsumers(store *postgres.Store) []*rabbit.Consumer {
	return consume.New(store, slog.New(slog.DiscardHandler), ordertest.Timeouts).Consumers()
}

func (f *fixture) create() order.Order {
	f.t.Helper()
	o, err := f.store.Create(context.Background(), ordertest.Timeouts, order.Request{
		CustomerID: "alice", Lines: []order.Line{{SKU: "WIDGET", Quantity: 3}}, PaymentMethod: "pm_card_ok",
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

// delivery wraps msg as the broker would hand it over.
func delivery(t *testing.T, msg proto.Message, aggregate string) *amqp.Delivery {
	t.Helper()
	body, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &amqp.Delivery{
		MessageId:   uuid.NewString(),
		Type:        string(msg.ProtoReflect().Descriptor().FullName()),
		ContentType: eventsv1.ContentType,
		Body:        body,
		Headers:     amqp.Table{rabbit.HeaderAggregateID: aggregate},
	}
}

func (f *fixture) send(h rabbit.Handler, msg proto.Message, aggregate string) {
	f.t.Helper()
	if err := h(context.Background(), delivery(f.t, msg, aggregate)); err != nil {
		f.t.Fatalf("handle %T: %v", msg, err)
	}
}

func (f *fixture) get(id string) order.Order {
	f.t.Helper()
	o, err := f.store.Get(context.Background(), id, "")
	if err != nil {
		f.t.Fatal(err)
	}
	return o
}

func (f *fixture) events(id string) []ordertest.Event {
	f.t.Helper()
	return ordertest.Outbox(f.t, f.store.Pool(), id)
}

func now() *timestamppb.Timestamp { return timestamppb.Now() }

// statusSeqs returns the (status, seq) of every OrderStatusChanged.
func statusSeqs(evs []ordertest.Event) []string {
	var out []string
	for _, e := range evs {
		if m, ok := e.Msg.(*eventsv1.OrderStatusChanged); ok {
			out = append(out, m.GetStatus().Label()+"/"+m.GetReason().Label())
			if m.GetSeq() != int64(len(out)) {
				out = append(out, "seq out of order")
			}
		}
	}
	return out
}

func historyOf(o order.Order) []string {
	var out []string
	for i, h := range o.History {
		if h.Seq != int64(i+1) {
			return append(out, "seq gap")
		}
		out = append(out, string(h.Status)+"/"+string(h.Reason))
	}
	return out
}

func TestHappyPathToDelivered(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()

	f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, Items: []*eventsv1.StockLine{{Sku: "WIDGET", Quantity: 3}}, ReservedAt: now()}, o.ID)
	got := f.get(o.ID)
	if got.Status != order.StatusReserved || got.Version != 2 || got.DeadlineAt == nil {
		t.Fatalf("after StockReserved: %+v", got)
	}
	evs := f.events(o.ID)
	pr, ok := evs[len(evs)-1].Msg.(*eventsv1.PaymentRequested)
	if !ok {
		t.Fatalf("last event after StockReserved = %T, want PaymentRequested", evs[len(evs)-1].Msg)
	}
	if pr.GetAmountCents() != 3000 || pr.GetCurrency() != "EUR" || pr.GetPaymentMethod() != "pm_card_ok" ||
		pr.GetIdempotencyKey() != o.ID || !pr.GetExpiresAt().AsTime().Equal(*got.DeadlineAt) {
		t.Errorf("PaymentRequested = %v (deadline %v)", pr, got.DeadlineAt)
	}
	if evs[len(evs)-1].RoutingKey != eventsv1.RoutingKeyPaymentRequested {
		t.Errorf("PaymentRequested routing key = %s", evs[len(evs)-1].RoutingKey)
	}

	f.send(f.saga, &eventsv1.PaymentAuthorized{OrderId: o.ID, PaymentId: "pay-1", AmountCents: 3000, Currency: "EUR", AuthorizedAt: now()}, o.ID)
	got = f.get(o.ID)
	if got.Status != order.StatusConfirmed || got.DeadlineAt != nil || got.PaymentID != "pay-1" {
		t.Fatalf("after PaymentAuthorized: %+v", got)
	}
	for _, ev := range []order.Event{order.EventShip, order.EventDeliver} {
		if _, err := f.store.Transition(context.Background(), ordertest.Timeouts, order.Step{OrderID: o.ID, Event: ev}); err != nil {
			t.Fatalf("%s: %v", ev, err)
		}
	}
	got = f.get(o.ID)
	want := []string{"pending/", "reserved/", "confirmed/", "shipped/", "delivered/"}
	if diff := cmp.Diff(want, historyOf(got)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	evs = f.events(o.ID)
	if diff := cmp.Diff(want, statusSeqs(evs)); diff != "" {
		t.Errorf("OrderStatusChanged (-want +got):\n%s", diff)
	}
	wantTypes := []string{"OrderPlaced", "OrderStatusChanged", "OrderStatusChanged", "PaymentRequested",
		"OrderStatusChanged", "CommitReservation", "OrderStatusChanged", "OrderStatusChanged"}
	if diff := cmp.Diff(wantTypes, ordertest.Types(evs)); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if got.Version != 5 {
		t.Errorf("version = %d, want 5", got.Version)
	}
}

// A redelivered message (same message id) is absorbed by the inbox; a
// second copy with another id finds no transition and changes nothing.
func TestDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	d := delivery(t, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	for range 3 {
		if err := f.saga(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	f.send(f.saga, &eventsv1.StockRejected{OrderId: o.ID, RejectedAt: now()}, o.ID)
	if got := f.get(o.ID); got.Status != order.StatusReserved || got.Version != 2 {
		t.Errorf("order = %s v%d, want reserved v2", got.Status, got.Version)
	}
	if n := len(f.events(o.ID)); n != 4 {
		t.Errorf("outbox has %d events, want 4 (placed, 2 status changes, payment request)", n)
	}
	// A message for an order this service never stored is acknowledged.
	f.send(f.saga, &eventsv1.StockReserved{OrderId: uuid.NewString(), ReservedAt: now()}, "x")
}

func TestStockRejectedCancelsOutOfStock(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	f.send(f.saga, &eventsv1.StockRejected{OrderId: o.ID, Shortages: []*eventsv1.StockShortage{{Sku: "WIDGET", Requested: 3}}, RejectedAt: now()}, o.ID)
	got := f.get(o.ID)
	if got.Status != order.StatusCancelled || got.Reason != order.ReasonOutOfStock || got.DeadlineAt != nil {
		t.Fatalf("order = %+v", got)
	}
	if diff := cmp.Diff([]string{"OrderPlaced", "OrderStatusChanged", "OrderStatusChanged", "OrderCancelled"}, ordertest.Types(f.events(o.ID))); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
}

func TestPaymentDeclinedCancelsAndReleases(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	f.send(f.saga, &eventsv1.PaymentDeclined{OrderId: o.ID, PaymentId: "p", Reason: "card_declined", DeclinedAt: now()}, o.ID)
	got := f.get(o.ID)
	if got.Status != order.StatusCancelled || got.Reason != order.ReasonPaymentDeclined {
		t.Fatalf("order = %s/%s", got.Status, got.Reason)
	}
	evs := f.events(o.ID)
	types := ordertest.Types(evs)
	if diff := cmp.Diff([]string{"OrderStatusChanged", "OrderCancelled", "ReleaseReservation"}, types[len(types)-3:]); diff != "" {
		t.Errorf("last events (-want +got):\n%s", diff)
	}
	rel := evs[len(evs)-1].Msg.(*eventsv1.ReleaseReservation)
	if rel.GetReason() != eventsv1.CancelReason_CANCEL_REASON_PAYMENT_DECLINED || evs[len(evs)-1].RoutingKey != eventsv1.RoutingKeyReleaseReservation {
		t.Errorf("ReleaseReservation = %v via %s", rel, evs[len(evs)-1].RoutingKey)
	}
	if diff := cmp.Diff([]string{"pending/", "reserved/", "cancelled/payment_declined"}, historyOf(got)); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
}

// Stock reserved for an order the customer cancelled meanwhile is released.
func TestStockReservedAfterCancelIsReleased(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	if _, err := f.store.Transition(context.Background(), ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel, Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	before := len(f.events(o.ID))
	f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	got := f.get(o.ID)
	if got.Status != order.StatusCancelled || got.Version != 2 || len(got.History) != 2 {
		t.Errorf("order changed by a compensation: %s v%d", got.Status, got.Version)
	}
	evs := f.events(o.ID)[before:]
	if diff := cmp.Diff([]string{"ReleaseReservation"}, ordertest.Types(evs)); diff != "" {
		t.Fatalf("compensation events (-want +got):\n%s", diff)
	}
}

// A payment authorized after the order was cancelled (the cancel raced it)
// is refunded, naming the payment.
func TestPaymentAuthorizedAfterCancelIsRefunded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	if _, err := f.store.Transition(context.Background(), ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel}); err != nil {
		t.Fatal(err)
	}
	before := len(f.events(o.ID))
	f.send(f.saga, &eventsv1.PaymentAuthorized{OrderId: o.ID, PaymentId: "pay-9", AmountCents: 3000, Currency: "EUR", AuthorizedAt: now()}, o.ID)
	evs := f.events(o.ID)[before:]
	if diff := cmp.Diff([]string{"RefundRequested"}, ordertest.Types(evs)); diff != "" {
		t.Fatalf("compensation events (-want +got):\n%s", diff)
	}
	r := evs[0].Msg.(*eventsv1.RefundRequested)
	if r.GetPaymentId() != "pay-9" || r.GetAmountCents() != 3000 || evs[0].RoutingKey != eventsv1.RoutingKeyRefundRequested {
		t.Errorf("RefundRequested = %v", r)
	}
	if got := f.get(o.ID); got.Status != order.StatusCancelled || got.Version != 3 {
		t.Errorf("order = %s v%d, want cancelled v3", got.Status, got.Version)
	}
	// PaymentRefunded is recorded, nothing else.
	f.send(f.saga, &eventsv1.PaymentRefunded{OrderId: o.ID, PaymentId: "pay-9", RefundId: "r", AmountCents: 3000, RefundedAt: now()}, o.ID)
	if n := ordertest.Count(t, f.store.Pool(), `SELECT count(*) FROM orders WHERE id = $1 AND refunded_at IS NOT NULL`, o.ID); n != 1 {
		t.Error("refund not recorded")
	}
	if n := len(f.events(o.ID)); n != before+1 {
		t.Errorf("PaymentRefunded wrote events")
	}
}

// A cancel racing PaymentAuthorized always ends cancelled with a refund
// requested, whichever commits first.
func TestCancelRacingPaymentEndsRefunded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for range 5 {
		o := f.create()
		f.send(f.saga, &eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
		done := make(chan error, 2)
		go func() {
			_, err := f.store.Transition(context.Background(), ordertest.Timeouts, order.Step{OrderID: o.ID, Event: order.EventCancel})
			done <- err
		}()
		go func() {
			done <- f.saga(context.Background(), delivery(t, &eventsv1.PaymentAuthorized{OrderId: o.ID, PaymentId: "p", AuthorizedAt: now()}, o.ID))
		}()
		for range 2 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
		got := f.get(o.ID)
		if got.Status != order.StatusCancelled {
			t.Fatalf("status = %s, want cancelled", got.Status)
		}
		refunds := 0
		for _, e := range f.events(o.ID) {
			if _, ok := e.Msg.(*eventsv1.RefundRequested); ok {
				refunds++
			}
		}
		if refunds == 0 {
			t.Errorf("order %s cancelled after a payment without a refund request", o.ID)
		}
	}
}

func TestPoisonMessagesArePermanent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	o := f.create()
	unknown := delivery(t, &eventsv1.StockReserved{OrderId: o.ID}, o.ID)
	unknown.Type = "orderly.events.v1.Nope"
	corrupt := delivery(t, &eventsv1.StockReserved{OrderId: o.ID}, o.ID)
	corrupt.Body = []byte{0xff, 0xff, 0xff}
	wrongQueue := delivery(t, &eventsv1.OrderPlaced{OrderId: o.ID}, o.ID)
	wrongCatalog := delivery(t, &eventsv1.StockReserved{OrderId: o.ID}, o.ID)
	// An order id that is no UUID can never name an order; it used to be
	// acknowledged as an unknown order's.
	notUUID := delivery(t, &eventsv1.PaymentDeclined{OrderId: "not-a-uuid", DeclinedAt: now()}, "x")
	noRefundTime := delivery(t, &eventsv1.PaymentRefunded{OrderId: o.ID}, o.ID)
	nul := delivery(t, &eventsv1.ProductUpserted{Sku: "LAMP\x00", Name: "Lamp", Currency: "EUR"}, "LAMP")
	for name, c := range map[string]struct {
		h rabbit.Handler
		d *amqp.Delivery
	}{
		"unknown type": {f.saga, unknown}, "corrupt body": {f.saga, corrupt},
		"saga gets OrderPlaced": {f.saga, wrongQueue}, "catalog gets StockReserved": {f.catalog, wrongCatalog},
		"catalog corrupt": {f.catalog, corrupt}, "order id not a UUID": {f.saga, notUUID},
		"refund without a time": {f.saga, noRefundTime}, "SKU with a NUL": {f.catalog, nul},
	} {
		if err := c.h(context.Background(), c.d); !rabbit.IsPermanent(err) {
			t.Errorf("%s: err = %v, want a permanent error", name, err)
		}
	}
	if got := f.get(o.ID); got.Status != order.StatusPending {
		t.Errorf("poison changed the order: %s", got.Status)
	}
}

func TestCatalogUpsertIgnoresOlderVersions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	send := func(version int64, price int64) {
		f.send(f.catalog, &eventsv1.ProductUpserted{Sku: "LAMP", Name: "Lamp", PriceCents: price, Currency: "EUR",
			Version: version, UpdatedAt: now()}, "LAMP")
	}
	send(3, 300)
	send(2, 200) // late
	send(3, 999) // same version again, another message id
	p, ok := ordertest.Product(t, f.store.Pool(), "LAMP")
	if !ok || p.PriceCents != 300 || p.Version != 3 {
		t.Errorf("product = %+v, %v; want version 3 at 300", p, ok)
	}
	send(4, 400)
	if p, _ := ordertest.Product(t, f.store.Pool(), "LAMP"); p.PriceCents != 400 {
		t.Errorf("newer version not applied: %+v", p)
	}
	// The replica prices new orders.
	o, err := f.store.Create(context.Background(), ordertest.Timeouts, order.Request{CustomerID: "c", Lines: []order.Line{{SKU: "LAMP", Quantity: 2}}, PaymentMethod: "pm"})
	if err != nil || o.TotalCents != 800 {
		t.Errorf("order from replica = %+v, %v", o, err)
	}
	bad := delivery(t, &eventsv1.ProductUpserted{Sku: "", Currency: "EUR", Version: 1}, "")
	if err := f.catalog(context.Background(), bad); !rabbit.IsPermanent(err) {
		t.Errorf("product without sku: err = %v, want permanent", err)
	}
}

// Over the real broker: messages published to inventory.events and
// payment.events reach order.saga and order.catalog through their bindings.
func TestConsumersOverRabbitMQ(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := rabbit.Dial(ctx, rabbittest.NewVhost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	exchanges := []string{eventsv1.ExchangeInventory, eventsv1.ExchangePayment}
	consumers := newConsumers(f.store)
	stopped := make(chan error, len(consumers))
	for _, c := range consumers {
		c.Conn = conn
		// Declare before publishing, as the service does at start.
		if err := conn.Declare(ctx, rabbit.Topology{Exchanges: exchanges, Queues: []rabbit.Queue{c.Queue}}); err != nil {
			t.Fatal(err)
		}
		go func() { stopped <- c.Run(ctx) }()
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	publish := func(msg proto.Message, aggregate string) {
		t.Helper()
		r, _ := eventsv1.RouteOf(msg)
		d := delivery(t, msg, aggregate)
		err := pub.PublishOne(ctx, rabbit.Message{Exchange: r.Exchange, RoutingKey: r.RoutingKey, MessageID: d.MessageId,
			Type: d.Type, ContentType: d.ContentType, Headers: d.Headers, Body: d.Body, Timestamp: time.Now()})
		if err != nil {
			t.Fatal(err)
		}
	}

	publish(&eventsv1.ProductUpserted{Sku: "BROKER", Name: "b", PriceCents: 50, Currency: "EUR", Version: 1}, "BROKER")
	poll.Until(t, 10*time.Second, "the product in the replica", func() bool {
		_, ok := ordertest.Product(t, f.store.Pool(), "BROKER")
		return ok
	})
	o := f.create()
	publish(&eventsv1.StockReserved{OrderId: o.ID, ReservedAt: now()}, o.ID)
	publish(&eventsv1.PaymentAuthorized{OrderId: o.ID, PaymentId: "p1", AuthorizedAt: now()}, o.ID)
	poll.Until(t, 10*time.Second, "the order to be confirmed", func() bool {
		return f.get(o.ID).Status == order.StatusConfirmed
	})
	cancel()
	for range consumers {
		if err := <-stopped; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}
}
