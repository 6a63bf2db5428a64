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
	"github.com/orderly/orderly/pkg/boot/boottest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

const testSecret = "inventory-main-test-secret-0123456789"

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	// One worker by default: its batches lock the same product rows.
	cfg, err := loadConfig([]string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8081" || cfg.SweepInterval != 5*time.Second || cfg.ConsumerWorkers != 1 || cfg.Service != "inventory" {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig([]string{"ORDERLY_ENV=development", "RESERVATION_SWEEP_INTERVAL=1s", "CONSUMER_WORKERS=8", "HTTP_ADDR=127.0.0.1:0"})
	if err != nil || cfg.SweepInterval != time.Second || cfg.ConsumerWorkers != 8 || cfg.HTTPAddr != "127.0.0.1:0" {
		t.Errorf("loadConfig = %+v, %v", cfg, err)
	}
	for _, bad := range []string{"RESERVATION_SWEEP_INTERVAL=0s", "RESERVATION_SWEEP_INTERVAL=soon", "CONSUMER_WORKERS=257", "LOG_LEVEL=loud"} {
		name, _, _ := strings.Cut(bad, "=")
		_, err := loadConfig([]string{"ORDERLY_ENV=development", bad})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("loadConfig(%s) = %v, want an error naming %s", bad, err, name)
		}
	}
}

// TestServiceEndToEnd runs the wired service against a fresh database and
// vhost and drives it the way the order service and an admin do: through
// HTTP, and through messages on order.events, watching what it publishes on
// inventory.events.
func TestServiceEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	environ, amqpURL := boottest.Environ(t, testSecret, "SHUTDOWN_DELAY=50ms", "RESERVATION_SWEEP_INTERVAL=100ms")
	base := boottest.Serve(t, ctx, start, environ)

	// Watch inventory.events the way the order service would.
	conn := boottest.Dial(t, ctx, amqpURL)
	deliveries := boottest.Watch(t, ctx, conn, eventsv1.ExchangeInventory)
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()

	admin, err := authn.Issue([]byte(testSecret), authn.Claims{Subject: "ops", Role: authn.RoleAdmin, ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/products/LAMP-1",
		strings.NewReader(`{"name":"Lamp","price_cents":4500,"currency":"EUR","stock":2}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT product = %d", resp.StatusCode)
	}
	up := expect[*eventsv1.ProductUpserted](t, deliveries, "LAMP-1")
	if up.GetName() != "Lamp" || up.GetVersion() != 1 || up.GetPriceCents() != 4500 {
		t.Errorf("ProductUpserted = %v", up)
	}

	// Two units fit; the next order for one more is rejected.
	first, second := uuid.NewString(), uuid.NewString()
	boottest.Send(t, ctx, pub, &eventsv1.OrderPlaced{OrderId: first, Items: []*eventsv1.LineItem{{Sku: "LAMP-1", Quantity: 2}},
		ExpiresAt: timestamppb.New(time.Now().Add(time.Minute))}, first)
	if got := expect[*eventsv1.StockReserved](t, deliveries, first); len(got.GetItems()) != 1 || got.GetItems()[0].GetQuantity() != 2 {
		t.Errorf("StockReserved = %v", got)
	}
	boottest.Send(t, ctx, pub, &eventsv1.OrderPlaced{OrderId: second, Items: []*eventsv1.LineItem{{Sku: "LAMP-1", Quantity: 1}},
		ExpiresAt: timestamppb.New(time.Now().Add(time.Minute))}, second)
	if got := expect[*eventsv1.StockRejected](t, deliveries, second); len(got.GetShortages()) != 1 || got.GetShortages()[0].GetAvailable() != 0 {
		t.Errorf("StockRejected = %v", got)
	}
	if p := product(t, base, "LAMP-1"); p.Stock != 2 || p.Reserved != 2 {
		t.Errorf("product after reserve = %+v", p)
	}
	boottest.Send(t, ctx, pub, &eventsv1.CommitReservation{OrderId: first}, first)
	expect[*eventsv1.ReservationCommitted](t, deliveries, first)
	if p := product(t, base, "LAMP-1"); p.Stock != 0 || p.Reserved != 0 {
		t.Errorf("product after commit = %+v", p)
	}

	// A reservation whose order went silent is released by the sweeper.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPut, base+"/v1/products/LAMP-1",
		strings.NewReader(`{"name":"Lamp","price_cents":4500,"currency":"EUR","stock":5}`))
	req.Header.Set("Authorization", "Bearer "+admin)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("restock = %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}
	silent := uuid.NewString()
	boottest.Send(t, ctx, pub, &eventsv1.OrderPlaced{OrderId: silent, Items: []*eventsv1.LineItem{{Sku: "LAMP-1", Quantity: 3}},
		ExpiresAt: timestamppb.New(time.Now().Add(500 * time.Millisecond))}, silent)
	expect[*eventsv1.StockReserved](t, deliveries, silent)
	if got := expect[*eventsv1.ReservationReleased](t, deliveries, silent); len(got.GetItems()) != 1 || got.GetItems()[0].GetQuantity() != 3 {
		t.Errorf("ReservationReleased = %v", got)
	}
	if p := product(t, base, "LAMP-1"); p.Stock != 5 || p.Reserved != 0 {
		t.Errorf("product after expiry = %+v", p)
	}

	// A message inventory cannot understand is dead-lettered with the reason.
	err = pub.PublishOne(ctx, rabbit.Message{
		Exchange: eventsv1.ExchangeOrder, RoutingKey: eventsv1.RoutingKeyOrderPlaced, Type: "orderly.events.v1.Nonsense",
		MessageID: uuid.NewString(), ContentType: eventsv1.ContentType, Body: []byte("junk"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var dead amqp.Delivery
	poll.Until(t, 20*time.Second, "the poison message in inventory.orders.dlq", func() bool {
		d, ok, err := ch.Get(rabbit.DLQName("inventory.orders"), true)
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

// expect waits for a message of type T about aggregate on deliveries and
// returns it, skipping others; it checks the envelope the relay sets.
func expect[T proto.Message](tb testing.TB, deliveries <-chan amqp.Delivery, aggregate string) T {
	tb.Helper()
	var zero T
	want := string(zero.ProtoReflect().Descriptor().FullName())
	deadline := time.After(20 * time.Second)
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				tb.Fatalf("deliveries closed while waiting for %s", want)
			}
			if d.Type != want || d.Headers[rabbit.HeaderAggregateID] != aggregate {
				continue
			}
			if _, err := uuid.Parse(d.MessageId); err != nil || d.ContentType != eventsv1.ContentType {
				tb.Errorf("%s envelope: message_id %q, content_type %q", want, d.MessageId, d.ContentType)
			}
			msg, err := eventsv1.Unmarshal(d.Type, d.Body)
			if err != nil {
				tb.Fatal(err)
			}
			return msg.(T)
		case <-deadline:
			tb.Fatalf("no %s for %s within 20s", want, aggregate)
			return zero
		}
	}
}

type productBody struct {
	Stock    int64 `json:"stock"`
	Reserved int64 `json:"reserved"`
}

func product(tb testing.TB, base, sku string) productBody {
	tb.Helper()
	code, body := boottest.Call(tb, http.MethodGet, base+"/v1/products/"+sku, "", "")
	if code != http.StatusOK {
		tb.Fatalf("GET %s = %d %s", sku, code, body)
	}
	var p productBody
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		tb.Fatal(err)
	}
	return p
}
