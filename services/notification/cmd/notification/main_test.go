package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/boot/boottest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

const (
	testSecret         = "notification-main-test-secret-0123456789"
	testTrackingSecret = "notification-main-test-tracking-secret-0123456789"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig([]string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if cfg.HTTPAddr != "127.0.0.1:8083" || cfg.Service != "notification" || cfg.MaxPerOrder != 20 || cfg.MaxPerCustomer != 50 ||
		cfg.MaxPerClient != 200 || cfg.MaxPerReplica != 19500 ||
		cfg.SendQueue != 32 || cfg.Heartbeat != 25*time.Second || cfg.SSEHeartbeat != 15*time.Second ||
		strings.Join(cfg.AllowedOrigins, ",") != "http://localhost:8083,http://127.0.0.1:8083" ||
		cfg.ConsumerWorkers != 16 {
		t.Errorf("defaults = %+v", cfg)
	}
	cfg, err = loadConfig([]string{"ORDERLY_ENV=development", "NOTIFICATION_ALLOWED_ORIGINS=https://shop.example, https://m.shop.example", "NOTIFICATION_SEND_QUEUE=8", "CONSUMER_WORKERS=8",
		"NOTIFICATION_MAX_PER_CLIENT=3", "NOTIFICATION_MAX_PER_REPLICA=4",
		"NOTIFICATION_DASHBOARD_SOURCES=order=http://order:9090/metrics, notification=https://127.0.0.1:8083/metrics"})
	if err != nil || len(cfg.DashboardSources) != 2 || cfg.SendQueue != 8 || cfg.MaxPerClient != 3 || cfg.MaxPerReplica != 4 || cfg.ConsumerWorkers != 8 || strings.Join(cfg.AllowedOrigins, " ") != "https://shop.example https://m.shop.example" {
		t.Errorf("loadConfig = %+v, %v", cfg, err)
	}
	for _, bad := range []string{
		"NOTIFICATION_ALLOWED_ORIGINS=shop.example", "NOTIFICATION_ALLOWED_ORIGINS=https://shop.example/path",
		"NOTIFICATION_MAX_PER_ORDER=0", "NOTIFICATION_MAX_PER_CUSTOMER=-1", "NOTIFICATION_SEND_QUEUE=none",
		"NOTIFICATION_MAX_PER_CLIENT=0", "NOTIFICATION_MAX_PER_REPLICA=-5", "NOTIFICATION_MAX_PER_REPLICA=lots",
		"NOTIFICATION_HEARTBEAT=0s", "NOTIFICATION_WRITE_TIMEOUT=-1s", "CONSUMER_WORKERS=257",
		"TRACKING_TOKEN_TTL=0s", "TRACKING_SECRET=" + boot.DevelopmentJWTSecret,
		"NOTIFICATION_DASHBOARD_SOURCES=order", "NOTIFICATION_DASHBOARD_SOURCES=order=ftp://order/metrics",
	} {
		name, _, _ := strings.Cut(bad, "=")
		_, err := loadConfig([]string{"ORDERLY_ENV=development", bad})
		if err == nil || !strings.Contains(err.Error(), name) || strings.Contains(err.Error(), "\n") {
			t.Errorf("loadConfig(%s) = %v, want one line naming %s", bad, err, name)
		}
	}
}

// TestServiceEndToEnd runs the wired service on a fresh database and vhost:
// an OrderStatusChanged published on order.events reaches a WebSocket
// opened with the order's tracking token (consumed, stored, announced by
// PostgreSQL and pushed by the listener), a replica at its cap (of one,
// here) refuses another stream with 503 replica-full, and a shutdown closes
// that WebSocket with 1012 and stops cleanly.
func TestServiceEndToEnd(t *testing.T) {
	t.Parallel()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	environ, amqpURL := boottest.Environ(t, testSecret, "SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=10s", "TRACKING_SECRET="+testTrackingSecret,
		"NOTIFICATION_MAX_PER_REPLICA=1")
	base := boottest.Serve(t, ctx, start, environ)

	order := uuid.NewString()
	token := authn.NewTrackingTokens([]byte(testTrackingSecret), nil, time.Hour).Token(order, time.Now())
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(wctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/orders/"+order+"/ws?token="+token, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()

	pub := boottest.Dial(t, wctx, amqpURL).NewPublisher()
	defer func() { _ = pub.Close() }()
	boottest.Send(t, wctx, pub, &eventsv1.OrderStatusChanged{OrderId: order, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: 1, At: timestamppb.Now()}, order)
	_, b, err := c.Read(wctx)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Status string
		Seq    int64
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Status != "pending" || m.Seq != 1 {
		t.Errorf("message %s (%v), want pending seq 1", b, err)
	}

	// The replica is full: the next stream is refused, and a load
	// balancer told to try another. (A stream taken by mistake would
	// never end: the timeout makes that a failure.)
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(base + "/v1/orders/" + order + "/events?token=" + token)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "5" || !strings.Contains(string(b), "replica-full") {
		t.Errorf("a stream over NOTIFICATION_MAX_PER_REPLICA: %d %v %s, want 503 replica-full with Retry-After: 5", resp.StatusCode, resp.Header, b)
	}

	// The page and the metrics are there too.
	for _, get := range []struct{ path, want string }{
		{"/track/" + order, "<!doctype html"},
		{"/metrics", "notification_connections_open"},
		{"/metrics", `reason="replica"`},
		{"/metrics", "notification_store_commits_total"},
		{"/metrics", "notification_listener_notifications_total"},
		{"/metrics", "notification_listener_resyncs_total"},
	} {
		path, want := get.path, get.want
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(strings.ToLower(string(b)), want) {
			t.Errorf("GET %s = %d, lacks %q", path, resp.StatusCode, want)
		}
	}

	// Serve's cleanup then checks that Run returns nil.
	stop()
	if _, _, err := c.Read(wctx); websocket.CloseStatus(err) != 1012 {
		t.Errorf("on shutdown the WebSocket got %v, want close 1012", err)
	}
}
