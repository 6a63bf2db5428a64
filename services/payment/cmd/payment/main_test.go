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
	"github.com/orderly/orderly/services/payment/consume"
	"github.com/orderly/orderly/services/payment/gateway"
)

const testSecret = "payment-main-test-secret-0123456789abcdef"

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("loadConfig in development with nothing else set: %v", err)
	}
	if cfg.Service != "payment" || cfg.HTTPAddr != "127.0.0.1:8082" || cfg.Gateway != gatewaySimulated || cfg.GatewayLatency != 0 ||
		cfg.ConsumerWorkers != 0 || !strings.Contains(cfg.DatabaseURL, "orderly_payment") {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig([]string{"ORDERLY_ENV=development", "PAYMENT_GATEWAY_LATENCY=250ms", "CONSUMER_WORKERS=8", "HTTP_ADDR=127.0.0.1:0"})
	if err != nil {
		t.Fatalf("loadConfig: %v", err)
	}
	if cfg.GatewayLatency != 250*time.Millisecond || cfg.ConsumerWorkers != 8 || cfg.HTTPAddr != "127.0.0.1:0" {
		t.Errorf("loadConfig = %+v, want latency 250ms, 8 workers, HTTP_ADDR 127.0.0.1:0", cfg)
	}
	for _, env := range []string{
		"PAYMENT_GATEWAY_LATENCY=slow", "PAYMENT_GATEWAY_LATENCY=-1s", "PAYMENT_GATEWAY_LATENCY=1m",
		"CONSUMER_WORKERS=-1", "HTTP_ADDR=8082", "PAYMENT_GATEWAY=stripe", "PAYMENT_ALLOW_SIMULATED=maybe",
	} {
		name, _, _ := strings.Cut(env, "=")
		_, err := loadConfig([]string{"ORDERLY_ENV=development", env})
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("loadConfig(%s) = %v, want one line naming %s", env, err, name)
		}
	}
}

// TestLoadConfigGatewayInProduction checks the production rules of the
// payment gateway: none by default, simulated only with the staging flag,
// nothing unknown.
func TestLoadConfigGatewayInProduction(t *testing.T) {
	t.Parallel()
	production := []string{
		"AUTH_JWT_SECRET=" + testSecret,
		"AMQP_URL=amqps://payment:pw@mq.example:5671/",
		"DATABASE_URL=postgres://payment:pw@db.example:5432/orderly_payment?sslmode=verify-full",
		"AUTH_JWT_ISSUER=https://id.example/",
		"AUTH_JWT_AUDIENCE=orderly-api",
	}
	tests := []struct {
		name    string
		env     []string
		wantErr string // "" when the configuration is accepted
	}{
		{"no gateway", nil, "PAYMENT_GATEWAY: no payment gateway is configured"},
		{"simulated", []string{"PAYMENT_GATEWAY=simulated"}, "PAYMENT_GATEWAY: simulated authorizes pm_card_ok whatever the card"},
		{"simulated, flag false", []string{"PAYMENT_GATEWAY=simulated", "PAYMENT_ALLOW_SIMULATED=false"}, "PAYMENT_ALLOW_SIMULATED=true"},
		{"staging flag without a gateway", []string{"PAYMENT_ALLOW_SIMULATED=true"}, "PAYMENT_GATEWAY: no payment gateway is configured"},
		{"unknown gateway", []string{"PAYMENT_GATEWAY=stripe", "PAYMENT_ALLOW_SIMULATED=true"}, `PAYMENT_GATEWAY: "stripe" is not a known payment gateway`},
		{"simulated for staging", []string{"PAYMENT_GATEWAY=simulated", "PAYMENT_ALLOW_SIMULATED=true"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, mode := range [][]string{nil, {"ORDERLY_ENV=production"}} {
				environ := append(append(mode, production...), tt.env...)
				cfg, err := loadConfig(environ)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Errorf("loadConfig(%v) = %v, want it accepted", environ, err)
				case tt.wantErr == "" && cfg.Gateway != gatewaySimulated:
					t.Errorf("loadConfig(%v) runs gateway %q, want simulated", environ, cfg.Gateway)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n")):
					t.Errorf("loadConfig(%v) = %v, want one line with %q", environ, err, tt.wantErr)
				}
			}
		})
	}
}

// testService is the payment service started by start on a fresh database
// and vhost, running until the test ends.
type testService struct {
	base    string // http://host:port
	amqpURL string
	pub     *rabbit.Publisher
	events  <-chan amqp.Delivery // everything published on payment.events
	ch      *amqp.Channel
}

func startTestService(tb testing.TB, extra ...string) *testService {
	tb.Helper()
	environ, amqpURL := boottest.Environ(tb, testSecret, append([]string{"SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=10s"}, extra...)...)
	base := boottest.Serve(tb, context.Background(), start, environ)

	// Run declared the topology before listening: the exchanges exist.
	conn := boottest.Dial(tb, context.Background(), amqpURL)
	events := boottest.Watch(tb, context.Background(), conn, eventsv1.ExchangePayment)
	ch, _, err := conn.Channel(context.Background())
	if err != nil {
		tb.Fatalf("channel: %v", err)
	}
	pub := conn.NewPublisher()
	tb.Cleanup(func() { _ = pub.Close() })
	return &testService{base: base, amqpURL: amqpURL, pub: pub, events: events, ch: ch}
}

// publish sends msg on order.events as the order service's relay would.
func (s *testService) publish(tb testing.TB, orderID string, msg proto.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	boottest.Send(tb, ctx, s.pub, msg, orderID)
}

func (s *testService) mustPublish(tb testing.TB, m rabbit.Message) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.pub.PublishOne(ctx, m); err != nil {
		tb.Fatalf("publish: %v", err)
	}
}

// next waits for the next event on payment.events.
func (s *testService) next(tb testing.TB) proto.Message {
	tb.Helper()
	select {
	case d := <-s.events:
		msg, err := eventsv1.Unmarshal(d.Type, d.Body)
		if err != nil {
			tb.Fatalf("decode %s: %v", d.Type, err)
		}
		if d.MessageId == "" || d.Headers[rabbit.HeaderAggregateID] == nil {
			tb.Errorf("%s lacks a message id or aggregate id: %+v", d.Type, d.Headers)
		}
		return msg
	case <-time.After(15 * time.Second):
		tb.Fatal("no event on payment.events within 15s")
		return nil
	}
}

// payments returns GET /v1/payments?order_id= as an admin.
func (s *testService) payments(tb testing.TB, orderID string) []map[string]any {
	tb.Helper()
	tok, err := authn.Issue([]byte(testSecret), authn.Claims{Subject: "operator", Role: authn.RoleAdmin, ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		tb.Fatal(err)
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.base+"/v1/payments?order_id="+orderID, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET /v1/payments: %v", err)
	}
	defer resp.Body.Close()
	var body struct {
		Payments []map[string]any `json:"payments"`
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET /v1/payments = %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		tb.Fatal(err)
	}
	return body.Payments
}

func TestServiceAuthorizesAndRefundsOverTheBroker(t *testing.T) {
	t.Parallel()
	s := startTestService(t)
	order := uuid.NewString()
	now := time.Now()
	s.publish(t, order, &eventsv1.PaymentRequested{
		OrderId: order, CustomerId: "c-1", AmountCents: 2599, Currency: "EUR", PaymentMethod: gateway.MethodFlaky,
		IdempotencyKey: order, RequestedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(30 * time.Second)),
	})
	authorized, ok := s.next(t).(*eventsv1.PaymentAuthorized)
	if !ok || authorized.GetOrderId() != order || authorized.GetAmountCents() != 2599 {
		t.Fatalf("first event = %v, want PaymentAuthorized of order %s for 2599", authorized, order)
	}
	got := s.payments(t, order)
	if len(got) != 1 || got[0]["status"] != "authorized" || got[0]["id"] != authorized.GetPaymentId() {
		t.Fatalf("payments = %v, want the authorized payment %s", got, authorized.GetPaymentId())
	}

	s.publish(t, order, &eventsv1.RefundRequested{OrderId: order, AmountCents: 2599, Currency: "EUR", RequestedAt: timestamppb.Now()})
	refunded, ok := s.next(t).(*eventsv1.PaymentRefunded)
	if !ok || refunded.GetPaymentId() != authorized.GetPaymentId() || refunded.GetAmountCents() != 2599 {
		t.Fatalf("second event = %v, want PaymentRefunded of payment %s", refunded, authorized.GetPaymentId())
	}
	if got := s.payments(t, order); len(got) != 1 || got[0]["status"] != "refunded" {
		t.Errorf("payments = %v, want one refunded", got)
	}
}

func TestServiceDeclinesAndDeadLettersGarbage(t *testing.T) {
	t.Parallel()
	s := startTestService(t)
	order := uuid.NewString()
	s.publish(t, order, &eventsv1.PaymentRequested{
		OrderId: order, AmountCents: 100, Currency: "EUR", PaymentMethod: gateway.MethodDeclined, IdempotencyKey: order,
	})
	declined, ok := s.next(t).(*eventsv1.PaymentDeclined)
	if !ok || declined.GetOrderId() != order || declined.GetReason() != gateway.ReasonCardDeclined {
		t.Fatalf("event = %v, want PaymentDeclined(card_declined) of order %s", declined, order)
	}

	// A message the service cannot read goes to the DLQ, not round and round.
	s.mustPublish(t, rabbit.Message{
		Exchange: eventsv1.ExchangeOrder, RoutingKey: eventsv1.RoutingKeyPaymentRequested, MessageID: uuid.NewString(),
		Type: eventsv1.TypePaymentRequested, ContentType: eventsv1.ContentType, Body: []byte{0xff, 0xff},
	})
	dlq := rabbit.DLQName(consume.QueueName)
	poll.Until(t, 15*time.Second, "the corrupt message in "+dlq, func() bool {
		q, err := s.ch.QueueDeclarePassive(dlq, true, false, false, false, nil)
		return err == nil && q.Messages == 1
	})
}
