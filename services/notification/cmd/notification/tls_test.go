package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot/boottest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// TestServiceOverTLS runs the service with TLS_CERT_FILE and TLS_KEY_FILE
// from a throwaway CA: the tracking stream works over WSS for a client
// trusting only that CA, and a client that does not trust it fails the
// handshake. The certificate is then renewed (same CA, new key and serial)
// while the WebSocket is open: new connections get the new certificate and
// the open WebSocket keeps delivering.
func TestServiceOverTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, dir)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	environ, amqpURL := boottest.Environ(t, testSecret, "SHUTDOWN_DELAY=0s", "SHUTDOWN_TIMEOUT=10s",
		"TLS_CERT_FILE="+certFile, "TLS_KEY_FILE="+keyFile, "TRACKING_SECRET="+testTrackingSecret)
	client := ca.Client()
	base := boottest.ServeWith(t, ctx, start, environ, client)
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("service URL = %s, want https://", base)
	}

	order := uuid.NewString()
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// coder/websocket refuses clients with a Timeout; the context bounds it.
	wsClient := &http.Client{Transport: client.Transport}
	c, _, err := websocket.Dial(wctx, "wss"+strings.TrimPrefix(base, "https")+"/v1/orders/"+order+"/ws?token="+authn.NewTrackingTokens([]byte(testTrackingSecret), nil, time.Hour).Token(order, time.Now()), //nolint:bodyclose // coder/websocket closes it
		&websocket.DialOptions{HTTPClient: wsClient})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()
	pub := boottest.Dial(t, wctx, amqpURL).NewPublisher()
	defer func() { _ = pub.Close() }()
	receive := func(seq int64) {
		t.Helper()
		boottest.Send(t, wctx, pub, &eventsv1.OrderStatusChanged{OrderId: order, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: seq, At: timestamppb.Now()}, order)
		_, b, err := c.Read(wctx)
		if err != nil {
			t.Fatalf("read seq %d: %v", seq, err)
		}
		var m struct{ Seq int64 }
		if err := json.Unmarshal(b, &m); err != nil || m.Seq != seq {
			t.Fatalf("message %s (%v), want seq %d", b, err, seq)
		}
	}
	receive(1)

	resp, err := http.Get(base + "/healthz") //nolint:gosec // test URL on localhost
	if err == nil {
		_ = resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("GET with the system's roots = %v, want an unknown-authority error", err)
	}

	renewed := ca.Issue(t, "127.0.0.1")
	renewed.WriteFiles(t, dir)
	poll.Until(t, 10*time.Second, "a new connection to get the renewed certificate", func() bool {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.TLS.PeerCertificates[0].SerialNumber.Cmp(renewed.Leaf.SerialNumber) == 0
	})
	receive(2)
}
