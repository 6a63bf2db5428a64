package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/boot/boottest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

const testSecret = "order-main-test-secret-0123456789abcdef"

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8080" || cfg.Service != "order" || cfg.ReserveTimeout != 30*time.Second ||
		cfg.PaymentTimeout != 30*time.Second || cfg.SweepInterval != time.Second || cfg.ConsumerWorkers != 0 {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig([]string{"ORDERLY_ENV=development", "ORDER_RESERVE_TIMEOUT=5s", "ORDER_PAYMENT_TIMEOUT=7s", "ORDER_SWEEP_INTERVAL=250ms"})
	if err != nil || cfg.ReserveTimeout != 5*time.Second || cfg.PaymentTimeout != 7*time.Second || cfg.SweepInterval != 250*time.Millisecond {
		t.Errorf("loadConfig = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"ORDER_RESERVE_TIMEOUT=0s", "ORDER_PAYMENT_TIMEOUT=-1s", "ORDER_SWEEP_INTERVAL=often", "CONSUMER_WORKERS=257", "LOG_LEVEL=loud",
		"TRACKING_TOKEN_TTL=-1h", "TRACKING_SECRET=" + boot.DevelopmentJWTSecret} {
		name, _, _ := strings.Cut(bad, "=")
		_, err := loadConfig([]string{"ORDERLY_ENV=development", bad})
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
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	environ, amqpURL := boottest.Environ(t, testSecret,
		"SHUTDOWN_DELAY=50ms",
		"ORDER_RESERVE_TIMEOUT=5s",
		"ORDER_PAYMENT_TIMEOUT=5s",
		"ORDER_SWEEP_INTERVAL=100ms",
	)
	base := boottest.Serve(t, ctx, start, environ)
	conn := boottest.Dial(t, ctx, amqpURL)
	deliveries := boottest.Watch(t, ctx, conn, eventsv1.ExchangeOrder)
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	alice, err := authn.Issue([]byte(testSecret), authn.Claims{Subject: "alice", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		t.Fatal(err)
	}

	// The catalog replica is fed by inventory's product events.
	boottest.Send(t, ctx, pub, &eventsv1.ProductUpserted{Sku: "LAMP-1", Name: "Lamp", PriceCents: 4500, Currency: "EUR", Version: 1, UpdatedAt: timestamppb.Now()}, "LAMP-1")
	var created struct {
		ID      string `json:"id"`
		Status  string `json:"status"`
		Version int64  `json:"version"`
	}
	poll.Until(t, 10*time.Second, "an order for the replicated product to be accepted", func() bool {
		code, body := boottest.Call(t, http.MethodPost, base+"/v1/orders", alice, `{"items":[{"sku":"LAMP-1","quantity":2}],"payment_method":"pm_card_ok"}`)
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

	boottest.Send(t, ctx, pub, &eventsv1.StockReserved{OrderId: id, ReservedAt: timestamppb.Now()}, id)
	expect[*eventsv1.OrderStatusChanged](t, deliveries, id)
	if pr := expect[*eventsv1.PaymentRequested](t, deliveries, id); pr.GetAmountCents() != 9000 || pr.GetIdempotencyKey() != id {
		t.Errorf("PaymentRequested = %v", pr)
	}
	boottest.Send(t, ctx, pub, &eventsv1.PaymentAuthorized{OrderId: id, PaymentId: "pay-1", AmountCents: 9000, Currency: "EUR", AuthorizedAt: timestamppb.Now()}, id)
	if sc := expect[*eventsv1.OrderStatusChanged](t, deliveries, id); sc.GetSeq() != 3 || sc.GetStatus() != eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED {
		t.Errorf("OrderStatusChanged = %v", sc)
	}
	expect[*eventsv1.CommitReservation](t, deliveries, id)
	code, body := boottest.Call(t, http.MethodGet, base+"/v1/orders/"+id, alice, "")
	if code != http.StatusOK || !strings.Contains(body, `"status":"confirmed"`) || !strings.Contains(body, `"version":3`) {
		t.Errorf("GET order = %d %s", code, body)
	}

	// An order nobody answers times out and is compensated.
	code, body = boottest.Call(t, http.MethodPost, base+"/v1/orders", alice, `{"items":[{"sku":"LAMP-1","quantity":1}],"payment_method":"pm_card_ok"}`)
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
	// The timeout is counted after its transaction committed, so the
	// events can arrive here first. The order waited for inventory.
	poll.Until(t, 10*time.Second, "order_timeouts_total to count the timeout", func() bool {
		_, metrics := boottest.Call(t, http.MethodGet, base+"/metrics", "", "")
		for line := range strings.Lines(metrics) {
			if name, value, ok := strings.Cut(strings.TrimSpace(line), " "); ok && strings.HasPrefix(name, "order_timeouts_total{") &&
				strings.Contains(name, `step="pending_to_reserved"`) {
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
	poll.Until(t, 20*time.Second, "the poison message in order.saga.dlq", func() bool {
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
