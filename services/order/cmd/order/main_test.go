package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

const testSecret = "order-main-test-secret-0123456789abcdef"

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(nil)
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.HTTPAddr != ":8080" || cfg.Service != "order" || cfg.ReserveTimeout != 30*time.Second ||
		cfg.PaymentTimeout != 30*time.Second || cfg.SweepInterval != time.Second || cfg.ConsumerWorkers != 0 {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig([]string{"ORDER_RESERVE_TIMEOUT=5s", "ORDER_PAYMENT_TIMEOUT=7s", "ORDER_SWEEP_INTERVAL=250ms"})
	if err != nil || cfg.ReserveTimeout != 5*time.Second || cfg.PaymentTimeout != 7*time.Second || cfg.SweepInterval != 250*time.Millisecond {
		t.Errorf("loadConfig = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"ORDER_RESERVE_TIMEOUT=0s", "ORDER_PAYMENT_TIMEOUT=-1s", "ORDER_SWEEP_INTERVAL=often", "CONSUMER_WORKERS=257", "LOG_LEVEL=loud"} {
		name, _, _ := strings.Cut(bad, "=")
		_, err := loadConfig([]string{bad})
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("loadConfig(%s) = %v, want one line naming %s", bad, err, name)
		}
	}
}

// TestServiceEndToEnd runs the wired service against a fresh database and
// vhost and drives it the way a client, inventory and payment do: through
// HTTP and messages on inventory.events and payment.events, watching what
// it publishes on order.events.
func TestServiceEndToEnd(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDB(t)
	amqpURL := rabbittest.NewVhost(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	svc, err := start(ctx, []string{
		"DATABASE_URL=" + dbURL,
		"AMQP_URL=" + amqpURL,
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + testSecret,
		"LOG_LEVEL=warn",
		"SHUTDOWN_DELAY=50ms",
		"ORDER_RESERVE_TIMEOUT=5s",
		"ORDER_PAYMENT_TIMEOUT=5s",
		"ORDER_SWEEP_INTERVAL=100ms",
	})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	eventually(t, 20*time.Second, "the service to be ready", func() bool {
		if svc.Addr() == "" {
			return false
		}
		code, _ := call(t, http.MethodGet, "http://"+svc.Addr()+"/readyz", "", "")
		return code == http.StatusOK
	})
	base := "http://" + svc.Addr()

	conn, err := rabbit.Dial(ctx, amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(q.Name, "#", eventsv1.ExchangeOrder, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	send := func(msg proto.Message, aggregate string) {
		t.Helper()
		route, _ := eventsv1.RouteOf(msg)
		body, err := proto.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		err = pub.PublishOne(ctx, rabbit.Message{
			Exchange: route.Exchange, RoutingKey: route.RoutingKey, Type: route.Type,
			MessageID: uuid.NewString(), ContentType: eventsv1.ContentType, Timestamp: time.Now(),
			Headers: amqp.Table{rabbit.HeaderAggregateID: aggregate}, Body: body,
		})
		if err != nil {
			t.Fatalf("publish %s: %v", route.Type, err)
		}
	}
	alice, err := authn.Issue([]byte(testSecret), authn.Claims{Subject: "alice", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		t.Fatal(err)
	}

	// The catalog replica is fed by inventory's product events.
	send(&eventsv1.ProductUpserted{Sku: "LAMP-1", Name: "Lamp", PriceCents: 4500, Currency: "EUR", Stock: 3, Version: 1, UpdatedAt: timestamppb.Now()}, "LAMP-1")
	var created struct {
		ID      string `json:"id"`
		Status  string `json:"status"`
		Version int64  `json:"version"`
	}
	eventually(t, 10*time.Second, "an order for the replicated product to be accepted", func() bool {
		code, body := call(t, http.MethodPost, base+"/v1/orders", alice, `{"items":[{"sku":"LAMP-1","quantity":2}],"payment_method":"pm_card_ok"}`)
		if code == http.StatusUnprocessableEntity {
			return false // not replicated yet
		}
		if code != http.StatusCreated {
			t.Fatalf("POST /v1/orders = %d %s", code, body)
		}
		return json.Unmarshal([]byte(body), &created) == nil
	})
	id := created.ID
	if placed := expect[*eventsv1.OrderPlaced](t, deliveries, id); placed.GetTotalCents() != 9000 || placed.GetExpiresAt() == nil {
		t.Errorf("OrderPlaced = %v", placed)
	}
	if sc := expect[*eventsv1.OrderStatusChanged](t, deliveries, id); sc.GetSeq() != 1 || sc.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Errorf("OrderStatusChanged = %v", sc)
	}

	send(&eventsv1.StockReserved{OrderId: id, ReservedAt: timestamppb.Now()}, id)
	expect[*eventsv1.OrderStatusChanged](t, deliveries, id)
	if pr := expect[*eventsv1.PaymentRequested](t, deliveries, id); pr.GetAmountCents() != 9000 || pr.GetIdempotencyKey() != id {
		t.Errorf("PaymentRequested = %v", pr)
	}
	send(&eventsv1.PaymentAuthorized{OrderId: id, PaymentId: "pay-1", AmountCents: 9000, Currency: "EUR", AuthorizedAt: timestamppb.Now()}, id)
	if sc := expect[*eventsv1.OrderStatusChanged](t, deliveries, id); sc.GetSeq() != 3 || sc.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Errorf("OrderStatusChanged = %v", sc)
	}
	expect[*eventsv1.CommitReservation](t, deliveries, id)
	code, body := call(t, http.MethodGet, base+"/v1/orders/"+id, alice, "")
	if code != http.StatusOK || !strings.Contains(body, `"status":"confirmed"`) || !strings.Contains(body, `"version":3`) {
		t.Errorf("GET order = %d %s", code, body)
	}

	// An order nobody answers times out and is compensated.
	code, body = call(t, http.MethodPost, base+"/v1/orders", alice, `{"items":[{"sku":"LAMP-1","quantity":1}],"payment_method":"pm_card_ok"}`)
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &created) != nil {
		t.Fatalf("POST = %d %s", code, body)
	}
	silent := created.ID
	expect[*eventsv1.OrderPlaced](t, deliveries, silent)
	expect[*eventsv1.OrderStatusChanged](t, deliveries, silent)
	if sc := expect[*eventsv1.OrderStatusChanged](t, deliveries, silent); sc.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_CANCELLED ||
		sc.GetReason() != eventsv1.CancelReason_CANCEL_REASON_TIMEOUT || sc.GetSeq() != 2 {
		t.Errorf("OrderStatusChanged = %v", sc)
	}
	expect[*eventsv1.OrderCancelled](t, deliveries, silent)
	expect[*eventsv1.ReleaseReservation](t, deliveries, silent)
	expect[*eventsv1.RefundRequested](t, deliveries, silent)
	// The sweeper counts the timeout after its transaction committed, so
	// the events can arrive here first.
	eventually(t, 10*time.Second, "order_timeouts_total to count the timeout", func() bool {
		_, metrics := call(t, http.MethodGet, base+"/metrics", "", "")
		for line := range strings.Lines(metrics) {
			if name, value, ok := strings.Cut(strings.TrimSpace(line), " "); ok && strings.HasPrefix(name, "order_timeouts_total") {
				return value == "1"
			}
		}
		return false
	})

	// A message order cannot understand is dead-lettered with the reason.
	err = pub.PublishOne(ctx, rabbit.Message{
		Exchange: eventsv1.ExchangeInventory, RoutingKey: eventsv1.RoutingKeyStockReserved, Type: "orderly.events.v1.Nonsense",
		MessageID: uuid.NewString(), ContentType: eventsv1.ContentType, Body: []byte("junk"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var dead amqp.Delivery
	eventually(t, 20*time.Second, "the poison message in order.saga.dlq", func() bool {
		d, ok, err := ch.Get(rabbit.DLQName("order.saga"), true)
		if err != nil {
			t.Fatalf("get from DLQ: %v", err)
		}
		dead = d
		return ok
	})
	if reason, _ := dead.Headers[rabbit.HeaderError].(string); !strings.Contains(reason, "unknown message type") {
		t.Errorf("dead letter reason = %q", reason)
	}

	stop()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run = %v, want a clean shutdown", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the context ended")
	}
}

// expect returns the next message about aggregate on deliveries, which must
// be a T; messages of other aggregates are skipped.
func expect[T proto.Message](t *testing.T, deliveries <-chan amqp.Delivery, aggregate string) T {
	t.Helper()
	var zero T
	timeout := time.After(20 * time.Second)
	for {
		select {
		case d := <-deliveries:
			if agg, _ := d.Headers[rabbit.HeaderAggregateID].(string); agg != aggregate {
				continue
			}
			msg, err := eventsv1.Unmarshal(d.Type, d.Body)
			if err != nil {
				t.Fatalf("decode %s: %v", d.Type, err)
			}
			m, ok := msg.(T)
			if !ok {
				t.Fatalf("next message about %s is %s, want %T", aggregate, d.Type, zero)
			}
			return m
		case <-timeout:
			t.Fatalf("no %T about %s within 20s", zero, aggregate)
			return zero
		}
	}
}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
