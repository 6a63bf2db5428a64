package consume_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/payment/consume"
	"github.com/orderly/orderly/services/payment/gateway"
	"github.com/orderly/orderly/services/payment/payment"
	"github.com/orderly/orderly/services/payment/postgres"
)

// countingGateway is the simulated gateway with its calls counted, and an
// optional hook run at the start of each Authorize.
type countingGateway struct {
	*gateway.Simulated
	authorizes atomic.Int32
	refunds    atomic.Int32
	onAuth     func()
}

func (g *countingGateway) Authorize(ctx context.Context, req gateway.AuthorizeRequest) (gateway.AuthorizeResult, error) {
	g.authorizes.Add(1)
	if g.onAuth != nil {
		g.onAuth()
	}
	return g.Simulated.Authorize(ctx, req)
}

func (g *countingGateway) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.RefundResult, error) {
	g.refunds.Add(1)
	return g.Simulated.Refund(ctx, req)
}

// failingGateway fails every call with err.
type failingGateway struct {
	err   error
	calls atomic.Int32
}

func (g *failingGateway) Authorize(context.Context, gateway.AuthorizeRequest) (gateway.AuthorizeResult, error) {
	g.calls.Add(1)
	return gateway.AuthorizeResult{}, g.err
}

func (g *failingGateway) Refund(context.Context, gateway.RefundRequest) (gateway.RefundResult, error) {
	g.calls.Add(1)
	return gateway.RefundResult{}, g.err
}

type harness struct {
	pool    *pgxpool.Pool
	store   *postgres.Store
	gw      *countingGateway
	handler *consume.Handler
	handle  rabbit.Handler
}

// newTestHarness returns a handler on a fresh payment database with a
// simulated gateway that answers at once.
func newTestHarness(tb testing.TB) *harness {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	store := postgres.New(pool)
	gw := &countingGateway{Simulated: gateway.NewSimulated(0)}
	h := consume.New(store, slog.Default(), gw)
	return &harness{pool: pool, store: store, gw: gw, handler: h, handle: handleOf(tb, h)}
}

// handleOf returns the handler of h's one consumer, that of
// payment.requests, for one message at a time.
func handleOf(tb testing.TB, h *consume.Handler) rabbit.Handler {
	tb.Helper()
	cs := h.Consumers()
	if len(cs) != 1 || cs[0].Queue.Name != consume.QueueName || cs[0].Batch == nil {
		tb.Fatalf("Consumers() = %+v, want the one batch consumer of %s", cs, consume.QueueName)
	}
	return rabbittest.One(cs[0].Batch)
}

// mustDelivery wraps msg in a delivery as the relay publishes it, with a
// fresh message id.
func mustDelivery(tb testing.TB, msg proto.Message) *amqp.Delivery {
	tb.Helper()
	body, err := proto.Marshal(msg)
	if err != nil {
		tb.Fatalf("marshal: %v", err)
	}
	return &amqp.Delivery{
		MessageId:   uuid.NewString(),
		Type:        string(msg.ProtoReflect().Descriptor().FullName()),
		ContentType: eventsv1.ContentType,
		Body:        body,
	}
}

func (h *harness) mustHandle(tb testing.TB, d *amqp.Delivery) {
	tb.Helper()
	if err := h.handle(context.Background(), d); err != nil {
		tb.Fatalf("handle %s: %v", d.Type, err)
	}
}

func paymentRequested(orderID uuid.UUID, method string, amount int64) *eventsv1.PaymentRequested {
	now := time.Now()
	return &eventsv1.PaymentRequested{
		OrderId:        orderID.String(),
		CustomerId:     "customer-1",
		AmountCents:    amount,
		Currency:       "EUR",
		PaymentMethod:  method,
		IdempotencyKey: orderID.String(),
		RequestedAt:    timestamppb.New(now),
		ExpiresAt:      timestamppb.New(now.Add(30 * time.Second)),
	}
}

func refundRequested(orderID uuid.UUID, amount int64) *eventsv1.RefundRequested {
	return &eventsv1.RefundRequested{
		OrderId:        orderID.String(),
		AmountCents:    amount,
		Currency:       "EUR",
		Reason:         eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST,
		IdempotencyKey: "refund:" + orderID.String(),
		RequestedAt:    timestamppb.Now(),
	}
}

// row is what the payments table holds for an order.
type row struct {
	Status, Reason, Currency, Reference string
	Amount                              int64
}

func (h *harness) payments(tb testing.TB, orderID uuid.UUID) []row {
	tb.Helper()
	rows, err := h.pool.Query(context.Background(),
		`SELECT status, decline_reason, currency, gateway_reference, amount_cents FROM payments WHERE order_id = $1`, orderID)
	if err != nil {
		tb.Fatalf("query payments: %v", err)
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.Status, &r.Reason, &r.Currency, &r.Reference, &r.Amount); err != nil {
			tb.Fatalf("scan payment: %v", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("payments: %v", err)
	}
	return out
}

func (h *harness) mustPaymentID(tb testing.TB, orderID uuid.UUID) string {
	tb.Helper()
	var id string
	if err := h.pool.QueryRow(context.Background(), `SELECT id::text FROM payments WHERE order_id = $1`, orderID).Scan(&id); err != nil {
		tb.Fatalf("payment id of order %s: %v", orderID, err)
	}
	return id
}

// events returns the outbox events about orderID, decoded, in write order.
func (h *harness) events(tb testing.TB, orderID uuid.UUID) []proto.Message {
	tb.Helper()
	rows, err := h.pool.Query(context.Background(),
		`SELECT exchange, routing_key, event_type, payload FROM outbox WHERE aggregate_id = $1 ORDER BY id`, orderID.String())
	if err != nil {
		tb.Fatalf("query outbox: %v", err)
	}
	defer rows.Close()
	var out []proto.Message
	for rows.Next() {
		var exchange, key, typ string
		var payload []byte
		if err := rows.Scan(&exchange, &key, &typ, &payload); err != nil {
			tb.Fatalf("scan outbox: %v", err)
		}
		route, ok := eventsv1.RouteByType(typ)
		if !ok || route.Exchange != exchange || route.RoutingKey != key || exchange != eventsv1.ExchangePayment {
			tb.Errorf("outbox event %s went to %s/%s, want %+v on %s", typ, exchange, key, route, eventsv1.ExchangePayment)
		}
		msg, err := eventsv1.Unmarshal(typ, payload)
		if err != nil {
			tb.Fatalf("decode outbox event: %v", err)
		}
		out = append(out, msg)
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("outbox: %v", err)
	}
	return out
}

// ignoreTimes leaves the event timestamps, set by the database, out of
// comparisons.
var ignoreTimes = cmp.Options{
	protocmp.Transform(),
	protocmp.IgnoreFields(&eventsv1.PaymentAuthorized{}, "authorized_at"),
	protocmp.IgnoreFields(&eventsv1.PaymentDeclined{}, "declined_at"),
	protocmp.IgnoreFields(&eventsv1.PaymentRefunded{}, "refunded_at", "refund_id"),
}

func TestPaymentRequestedAuthorizes(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodOK, 4200)))

	got := h.payments(t, order)
	if len(got) != 1 || got[0].Status != "authorized" || got[0].Amount != 4200 || got[0].Currency != "EUR" || got[0].Reference == "" || got[0].Reason != "" {
		t.Fatalf("payments = %+v, want one authorized row of 4200 EUR with a gateway reference", got)
	}
	want := []proto.Message{&eventsv1.PaymentAuthorized{
		OrderId: order.String(), PaymentId: h.mustPaymentID(t, order), AmountCents: 4200, Currency: "EUR",
	}}
	events := h.events(t, order)
	if diff := cmp.Diff(want, events, ignoreTimes); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if at := events[0].(*eventsv1.PaymentAuthorized).GetAuthorizedAt(); at == nil || time.Since(at.AsTime()) > time.Minute {
		t.Errorf("authorized_at = %v, want about now", at)
	}
	if n := h.gw.Authorizations(); n != 1 {
		t.Errorf("gateway authorizations = %d, want 1", n)
	}
}

func TestPaymentRequestedDeclines(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	tests := []struct {
		name   string
		method string
		amount int64
		reason string
	}{
		{"declined card", gateway.MethodDeclined, 4200, gateway.ReasonCardDeclined},
		{"over the amount limit", gateway.MethodOK, gateway.AmountLimitCents + 1, gateway.ReasonAmountLimit},
		{"unsupported method", "pm_paypal", 4200, gateway.ReasonUnsupportedMethod},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			order := uuid.New()
			h.mustHandle(t, mustDelivery(t, paymentRequested(order, tt.method, tt.amount)))
			want := []row{{Status: "declined", Reason: tt.reason, Currency: "EUR", Amount: tt.amount}}
			if diff := cmp.Diff(want, h.payments(t, order)); diff != "" {
				t.Errorf("payments (-want +got):\n%s", diff)
			}
			wantEvents := []proto.Message{&eventsv1.PaymentDeclined{
				OrderId: order.String(), PaymentId: h.mustPaymentID(t, order), Reason: tt.reason,
			}}
			if diff := cmp.Diff(wantEvents, h.events(t, order), ignoreTimes); diff != "" {
				t.Errorf("outbox (-want +got):\n%s", diff)
			}
		})
	}
	if n := h.gw.Authorizations(); n != 0 {
		t.Errorf("gateway authorizations = %d, want 0", n)
	}
}

func TestPaymentRequestedRetriesFlakyGatewayInHandler(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	start := time.Now()
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodFlaky, 1500)))
	took := time.Since(start)

	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorized" {
		t.Fatalf("payments = %+v, want one authorized", got)
	}
	if n := h.gw.authorizes.Load(); n != gateway.FlakyFailures+1 {
		t.Errorf("Authorize calls = %d, want %d (two transient failures, then success)", n, gateway.FlakyFailures+1)
	}
	if n := h.gw.Authorizations(); n != 1 {
		t.Errorf("gateway authorizations = %d, want 1", n)
	}
	// 100 ms, then 200 ms between the attempts.
	if took < 300*time.Millisecond {
		t.Errorf("handler took %v, want at least the 300ms of backoff", took)
	}
	if events := h.events(t, order); len(events) != 1 {
		t.Errorf("outbox has %d events, want one PaymentAuthorized", len(events))
	}
}

func TestPaymentRequestedGivesUpToQueueRetryWhenGatewayStaysDown(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	gw := &failingGateway{err: fmt.Errorf("%w: 503 from provider", gateway.ErrTransient)}
	failing := consume.New(h.store, slog.Default(), gw)
	failing.Backoff = []time.Duration{time.Millisecond, time.Millisecond}
	order := uuid.New()
	d := mustDelivery(t, paymentRequested(order, gateway.MethodOK, 1500))

	err := handleOf(t, failing)(context.Background(), d)
	if err == nil || rabbit.IsPermanent(err) || !errors.Is(err, gateway.ErrTransient) {
		t.Fatalf("handle = %v, want a transient (retryable) error", err)
	}
	if n := gw.calls.Load(); n != 3 {
		t.Errorf("gateway calls = %d, want 3", n)
	}
	// Only the claim of the charge was recorded (it is not a payment the
	// API lists): no event, no inbox row. The queue's retry of the same
	// message runs the handler again, resumes the charge and now succeeds.
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorizing" {
		t.Errorf("payments = %+v, want the charge's claim, authorizing", got)
	}
	if n := len(h.events(t, order)); n != 0 {
		t.Errorf("outbox has %d events, want none", n)
	}
	var inboxRows int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM inbox`).Scan(&inboxRows); err != nil || inboxRows != 0 {
		t.Errorf("inbox rows = %d (%v), want none", inboxRows, err)
	}
	h.mustHandle(t, d)
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorized" {
		t.Errorf("after the retry: payments = %+v, want one authorized", got)
	}
}

func TestPaymentRequestedPermanentGatewayErrorDeadLetters(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	gw := &failingGateway{err: fmt.Errorf("%w: bad currency", gateway.ErrInvalidRequest)}
	order := uuid.New()
	err := handleOf(t, consume.New(h.store, slog.Default(), gw))(context.Background(), mustDelivery(t, paymentRequested(order, gateway.MethodOK, 1500)))
	if !rabbit.IsPermanent(err) {
		t.Fatalf("handle = %v, want a permanent error", err)
	}
	if n := gw.calls.Load(); n != 1 {
		t.Errorf("gateway calls = %d, want 1 (no retry of a permanent error)", n)
	}
	if got := h.payments(t, order); len(got) != 0 {
		t.Errorf("payments = %+v, want none", got)
	}
}

func TestPaymentRequestedExpiredDeclinesWithoutGateway(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	msg := paymentRequested(order, gateway.MethodOK, 1500)
	msg.ExpiresAt = timestamppb.New(time.Now().Add(-time.Second))
	h.mustHandle(t, mustDelivery(t, msg))

	want := []row{{Status: "declined", Reason: payment.ReasonExpired, Currency: "EUR", Amount: 1500}}
	if diff := cmp.Diff(want, h.payments(t, order)); diff != "" {
		t.Errorf("payments (-want +got):\n%s", diff)
	}
	wantEvents := []proto.Message{&eventsv1.PaymentDeclined{OrderId: order.String(), PaymentId: h.mustPaymentID(t, order), Reason: "expired"}}
	if diff := cmp.Diff(wantEvents, h.events(t, order), ignoreTimes); diff != "" {
		t.Errorf("outbox (-want +got):\n%s", diff)
	}
	if n := h.gw.authorizes.Load(); n != 0 {
		t.Errorf("Authorize calls = %d, want 0", n)
	}
}

func TestPaymentRequestedUsesHandlerClockForExpiry(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	msg := paymentRequested(order, gateway.MethodOK, 1500)
	h.handler.Now = func() time.Time { return msg.GetExpiresAt().AsTime() } // the deadline itself has passed
	h.mustHandle(t, mustDelivery(t, msg))
	if got := h.payments(t, order); len(got) != 1 || got[0].Reason != payment.ReasonExpired {
		t.Errorf("payments = %+v, want declined as expired", got)
	}

	// Without an expiry the request never expires.
	order2 := uuid.New()
	msg2 := paymentRequested(order2, gateway.MethodOK, 1500)
	msg2.ExpiresAt = nil
	h.mustHandle(t, mustDelivery(t, msg2))
	if got := h.payments(t, order2); len(got) != 1 || got[0].Status != "authorized" {
		t.Errorf("payments without expires_at = %+v, want authorized", got)
	}
}

func TestPaymentRequestedTwiceChargesOnce(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	msg := paymentRequested(order, gateway.MethodOK, 2500)
	// Two copies with different message ids: the inbox does not catch
	// them, the payment row does.
	h.mustHandle(t, mustDelivery(t, msg))
	h.mustHandle(t, mustDelivery(t, msg))

	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorized" {
		t.Fatalf("payments = %+v, want one authorized", got)
	}
	if n := h.gw.authorizes.Load(); n != 1 {
		t.Errorf("Authorize calls = %d, want 1", n)
	}
	if n := h.gw.Authorizations(); n != 1 {
		t.Errorf("gateway authorizations = %d, want 1", n)
	}
	if events := h.events(t, order); len(events) != 1 {
		t.Errorf("outbox has %d events, want one PaymentAuthorized", len(events))
	}
}

func TestPaymentRequestedConcurrentCopiesChargeOnce(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	h.gw.Simulated = gateway.NewSimulated(50 * time.Millisecond)
	order := uuid.New()
	msg := paymentRequested(order, gateway.MethodOK, 2500)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		d := mustDelivery(t, msg)
		wg.Go(func() { errs <- h.handle(context.Background(), d) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("handle: %v", err)
		}
	}
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorized" {
		t.Fatalf("payments = %+v, want one authorized", got)
	}
	if n := h.gw.Authorizations(); n != 1 {
		t.Errorf("gateway authorizations = %d, want 1", n)
	}
	if events := h.events(t, order); len(events) != 1 {
		t.Errorf("outbox has %d events, want 1", len(events))
	}
}

func TestRefundRequestedRefundsAuthorizedPayment(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodOK, 3100)))
	paymentID := h.mustPaymentID(t, order)
	h.mustHandle(t, mustDelivery(t, refundRequested(order, 3100)))
	// A second request (the sweeper and a customer cancel both asked)
	// refunds nothing more.
	h.mustHandle(t, mustDelivery(t, refundRequested(order, 3100)))

	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "refunded" {
		t.Fatalf("payments = %+v, want one refunded", got)
	}
	events := h.events(t, order)
	want := []proto.Message{
		&eventsv1.PaymentAuthorized{OrderId: order.String(), PaymentId: paymentID, AmountCents: 3100, Currency: "EUR"},
		&eventsv1.PaymentRefunded{OrderId: order.String(), PaymentId: paymentID, AmountCents: 3100, Currency: "EUR"},
	}
	if diff := cmp.Diff(want, events, ignoreTimes); diff != "" {
		t.Fatalf("outbox (-want +got):\n%s", diff)
	}
	var refundID, ref string
	var amount int64
	err := h.pool.QueryRow(context.Background(),
		`SELECT id::text, amount_cents, gateway_reference FROM refunds WHERE payment_id = $1`, paymentID).Scan(&refundID, &amount, &ref)
	if err != nil {
		t.Fatalf("refund row: %v", err)
	}
	if got := events[1].(*eventsv1.PaymentRefunded).GetRefundId(); got != refundID || amount != 3100 || ref == "" {
		t.Errorf("refund row %s (%d cents, ref %q), event refund_id %s; want matching ids, 3100 cents, a reference", refundID, amount, ref, got)
	}
	if n, r := h.gw.refunds.Load(), h.gw.Refunds(); n != 1 || r != 1 {
		t.Errorf("Refund calls = %d, gateway refunds = %d; want 1 and 1", n, r)
	}
}

func TestRefundRequestedBeforePaymentVoidsIt(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	h.mustHandle(t, mustDelivery(t, refundRequested(order, 3100)))
	want := []row{{Status: "voided", Currency: "EUR", Amount: 3100}}
	if diff := cmp.Diff(want, h.payments(t, order)); diff != "" {
		t.Fatalf("after RefundRequested: payments (-want +got):\n%s", diff)
	}

	// The late PaymentRequested charges nothing and says nothing: the
	// order is already cancelled.
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodOK, 3100)))
	if diff := cmp.Diff(want, h.payments(t, order)); diff != "" {
		t.Errorf("after PaymentRequested: payments (-want +got):\n%s", diff)
	}
	if n := h.gw.authorizes.Load(); n != 0 {
		t.Errorf("Authorize calls = %d, want 0", n)
	}
	if n := h.gw.refunds.Load(); n != 0 {
		t.Errorf("Refund calls = %d, want 0", n)
	}
	if events := h.events(t, order); len(events) != 0 {
		t.Errorf("outbox = %v, want nothing", events)
	}
}

func TestRefundRequestedIgnoresDeclinedPayment(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodDeclined, 3100)))
	h.mustHandle(t, mustDelivery(t, refundRequested(order, 3100)))
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "declined" {
		t.Errorf("payments = %+v, want one declined", got)
	}
	if n := h.gw.refunds.Load(); n != 0 {
		t.Errorf("Refund calls = %d, want 0", n)
	}
	if events := h.events(t, order); len(events) != 1 {
		t.Errorf("outbox has %d events, want only PaymentDeclined", len(events))
	}
}

func TestRefundRequestedRacingPaymentWaitsAndRefunds(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	h.gw.Simulated = gateway.NewSimulated(300 * time.Millisecond)
	authorizing := make(chan struct{})
	var once sync.Once
	h.gw.onAuth = func() { once.Do(func() { close(authorizing) }) }
	order := uuid.New()

	paid := make(chan error, 1)
	go func() {
		paid <- h.handle(context.Background(), mustDelivery(t, paymentRequested(order, gateway.MethodOK, 900)))
	}()
	<-authorizing
	// The refund arrives while the gateway is authorizing: it must wait
	// for the payment and refund it, not void the order under it.
	if err := h.handle(context.Background(), mustDelivery(t, refundRequested(order, 900))); err != nil {
		t.Fatalf("refund: %v", err)
	}
	if err := <-paid; err != nil {
		t.Fatalf("payment: %v", err)
	}
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "refunded" {
		t.Fatalf("payments = %+v, want one refunded", got)
	}
	if a, r := h.gw.Authorizations(), h.gw.Refunds(); a != 1 || r != 1 {
		t.Errorf("gateway authorizations = %d, refunds = %d; want 1 and 1", a, r)
	}
}

func TestUndecodableMessagesArePermanent(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	badID := paymentRequested(order, gateway.MethodOK, 100)
	badID.OrderId = "not-a-uuid"
	tests := []struct {
		name string
		d    *amqp.Delivery
	}{
		{"unknown type", &amqp.Delivery{MessageId: uuid.NewString(), Type: "orderly.events.v1.Nope", Body: []byte{}}},
		{"type this queue does not handle", mustDelivery(t, &eventsv1.OrderPlaced{OrderId: order.String()})},
		{"corrupt body", &amqp.Delivery{MessageId: uuid.NewString(), Type: eventsv1.TypePaymentRequested, Body: []byte{0xff, 0xff, 0xff}}},
		{"malformed order id", mustDelivery(t, badID)},
		{"malformed order id in refund", mustDelivery(t, &eventsv1.RefundRequested{OrderId: "42"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := h.handle(context.Background(), tt.d); !rabbit.IsPermanent(err) {
				t.Errorf("handle = %v, want a permanent error", err)
			}
		})
	}
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM payments) + (SELECT count(*) FROM outbox) + (SELECT count(*) FROM inbox)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows written for rejected messages, want 0", n)
	}
}

// A batch is decided message by message, in order, against the payments
// as they stand after the messages before it: a refund right behind its
// charge refunds it, a request behind a void charges nothing, and a
// duplicate in the same batch charges once.
func TestBatchDecidesInOrder(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	charged, voided, expired := uuid.New(), uuid.New(), uuid.New()
	old := paymentRequested(expired, gateway.MethodOK, 500)
	old.ExpiresAt = timestamppb.New(time.Now().Add(-time.Second))
	var batch []rabbit.Delivery
	for _, m := range []proto.Message{
		paymentRequested(charged, gateway.MethodOK, 1200),
		paymentRequested(charged, gateway.MethodOK, 1200), // a duplicate request
		refundRequested(charged, 1200),
		refundRequested(voided, 800),
		paymentRequested(voided, gateway.MethodOK, 800),
		old,
	} {
		batch = append(batch, rabbit.Delivery{Ctx: context.Background(), Delivery: mustDelivery(t, m)})
	}
	for i, err := range h.handler.Consumers()[0].Batch(context.Background(), batch) {
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	want := map[uuid.UUID]string{charged: "refunded", voided: "voided", expired: "declined"}
	for id, status := range want {
		if got := h.payments(t, id); len(got) != 1 || got[0].Status != status {
			t.Errorf("payments of %s = %+v, want one %s", id, got, status)
		}
	}
	if a, r := h.gw.authorizes.Load(), h.gw.refunds.Load(); a != 1 || r != 1 {
		t.Errorf("gateway calls: %d authorizations and %d refunds, want 1 and 1", a, r)
	}
	if evs := h.events(t, charged); len(evs) != 2 {
		t.Errorf("events of the charged order = %v, want PaymentAuthorized and PaymentRefunded", evs)
	}
}

// blockingGateway is the simulated gateway whose calls wait, once they
// have said so on entered, until release is closed.
type blockingGateway struct {
	*gateway.Simulated
	entered chan string
	release chan struct{}
}

func (g *blockingGateway) Authorize(ctx context.Context, req gateway.AuthorizeRequest) (gateway.AuthorizeResult, error) {
	g.entered <- "authorize"
	<-g.release
	return g.Simulated.Authorize(ctx, req)
}

func (g *blockingGateway) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.RefundResult, error) {
	g.entered <- "refund"
	<-g.release
	return g.Simulated.Refund(ctx, req)
}

// While the gateway is being asked, the payment service holds no
// transaction and no lock: the order's payment row can be locked at once by
// anyone (FOR UPDATE NOWAIT), so can the order's advisory lock, and no
// connection of its database is idle in a transaction.
func TestNoTransactionIsOpenAcrossAGatewayCall(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	h.mustHandle(t, mustDelivery(t, paymentRequested(order, gateway.MethodOK, 700))) // to refund below
	ctx := context.Background()

	for _, tt := range []struct {
		call  string
		order uuid.UUID
		msg   proto.Message
		want  string // the payment's status once the call is answered
	}{
		{"authorize", uuid.New(), nil, "authorized"},
		{"refund", order, refundRequested(order, 700), "refunded"},
	} {
		t.Run(tt.call, func(t *testing.T) {
			gw := &blockingGateway{Simulated: gateway.NewSimulated(0), entered: make(chan string, 1), release: make(chan struct{})}
			msg := tt.msg
			if msg == nil {
				msg = paymentRequested(tt.order, gateway.MethodOK, 700)
			}
			done := make(chan error, 1)
			go func() { done <- handleOf(t, consume.New(h.store, slog.Default(), gw))(ctx, mustDelivery(t, msg)) }()
			select {
			case got := <-gw.entered:
				if got != tt.call {
					t.Fatalf("the gateway was asked to %s, want %s", got, tt.call)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the gateway was not called")
			}

			var idle []string
			rows, err := h.pool.Query(ctx, `SELECT coalesce(application_name, '') || ': ' || coalesce(query, '') FROM pg_stat_activity
WHERE datname = current_database() AND state LIKE 'idle in transaction%'`)
			if err == nil {
				idle, err = pgx.CollectRows(rows, pgx.RowTo[string])
			}
			if err != nil || len(idle) != 0 {
				t.Errorf("during the call, connections idle in a transaction: %q (%v), want none", idle, err)
			}
			err = pg.Transact(ctx, h.pool, func(tx pgx.Tx) error {
				var status string
				if err := tx.QueryRow(ctx, `SELECT status FROM payments WHERE order_id = $1 FOR UPDATE NOWAIT`, tt.order).Scan(&status); err != nil {
					return fmt.Errorf("lock the payment row: %w", err)
				}
				if want := map[string]string{"authorize": "authorizing", "refund": "refunding"}[tt.call]; status != want {
					t.Errorf("during the call the payment is %s, want %s (the claim)", status, want)
				}
				var got bool
				if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtextextended('payment:' || $1::uuid::text, 0))`, tt.order).Scan(&got); err != nil {
					return fmt.Errorf("try the order's advisory lock: %w", err)
				}
				if !got {
					return errors.New("the order's advisory lock is held")
				}
				return nil
			})
			if err != nil {
				t.Errorf("during the call: %v, want the payment free to lock", err)
			}

			close(gw.release)
			if err := <-done; err != nil {
				t.Fatalf("handle: %v", err)
			}
			if got := h.payments(t, tt.order); len(got) != 1 || got[0].Status != tt.want {
				t.Errorf("payments = %+v, want one %s", got, tt.want)
			}
		})
	}
}

// A claim left by a handler that died during its call (the message was not
// acknowledged, so it comes again) is resumed with the same idempotency
// key, even past the request's deadline: the gateway may have authorized it.
func TestRedeliveryResumesAClaimedCharge(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	order := uuid.New()
	claim := &payment.Payment{ID: uuid.New(), OrderID: order, CustomerID: "customer-1", AmountCents: 1500, Currency: "EUR", Method: gateway.MethodOK, Status: payment.StatusAuthorizing}
	if err := pg.Transact(context.Background(), h.pool, func(tx pgx.Tx) error {
		return h.store.Save(context.Background(), tx, postgres.Changes{Payments: []*payment.Payment{claim}})
	}); err != nil {
		t.Fatal(err)
	}
	msg := paymentRequested(order, gateway.MethodOK, 1500)
	msg.ExpiresAt = timestamppb.New(time.Now().Add(-time.Minute))
	h.mustHandle(t, mustDelivery(t, msg))
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "authorized" {
		t.Fatalf("payments = %+v, want the claim authorized", got)
	}
	if id := h.mustPaymentID(t, order); id != claim.ID.String() {
		t.Errorf("payment id = %s, want the claim's %s", id, claim.ID)
	}
	if n := h.gw.authorizes.Load(); n != 1 {
		t.Errorf("Authorize calls = %d, want 1", n)
	}
}

// A charge the gateway refuses for good is released: nothing is left of
// it, and a refund request then voids the order.
func TestPermanentGatewayErrorReleasesTheClaim(t *testing.T) {
	t.Parallel()
	h := newTestHarness(t)
	gw := &failingGateway{err: fmt.Errorf("%w: bad currency", gateway.ErrInvalidRequest)}
	order := uuid.New()
	batch := []rabbit.Delivery{
		{Ctx: context.Background(), Delivery: mustDelivery(t, paymentRequested(order, gateway.MethodOK, 1500))},
		{Ctx: context.Background(), Delivery: mustDelivery(t, refundRequested(order, 1500))},
	}
	errs := consume.New(h.store, slog.Default(), gw).Consumers()[0].Batch(context.Background(), batch)
	if !rabbit.IsPermanent(errs[0]) || errs[1] != nil {
		t.Fatalf("results = %v, want the payment request dead-lettered and the refund request done", errs)
	}
	if got := h.payments(t, order); len(got) != 1 || got[0].Status != "voided" {
		t.Errorf("payments = %+v, want the order voided", got)
	}
}
