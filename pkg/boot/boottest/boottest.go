// Package boottest runs a boot.Service inside a test and talks to it the
// way its clients and peer services do: over HTTP and through the broker.
// It holds the scaffolding every service's end-to-end test needs, so that
// those tests contain only what the service is expected to do.
package boottest

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// Generous limits: a service under -race on a busy CI host can take long to
// migrate, connect and drain, and a slow pass is better than a flaky one.
const (
	readyTimeout = 30 * time.Second
	stopTimeout  = 30 * time.Second
)

// Environ gives a service under test a fresh database and vhost of its own,
// both dropped when the test ends, and returns the environment that points
// the service at them, runs it in development mode (the local servers have
// no TLS and the broker user is guest), listens on a free loopback port,
// signs with jwtSecret and logs only warnings, followed by extra. It also returns the broker URL,
// for the test to talk to the service as its peers do.
func Environ(tb testing.TB, jwtSecret string, extra ...string) (environ []string, amqpURL string) {
	tb.Helper()
	_, dbURL := pgtest.NewDB(tb)
	amqpURL = rabbittest.NewVhost(tb)
	environ = []string{
		"ORDERLY_ENV=development",
		"DATABASE_URL=" + dbURL,
		"AMQP_URL=" + amqpURL,
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + jwtSecret,
		"LOG_LEVEL=warn",
	}
	return append(environ, extra...), amqpURL
}

// Serve starts the service that start wires from environ, runs it until ctx
// ends or the test finishes, and returns its base URL (http://host:port)
// once /readyz answers 200. Cleanup stops the service and fails the test
// unless Run returns nil in time, so every test also checks that the
// service shuts down cleanly. Cancelling ctx stops the service early, for
// tests that look at what a shutdown does.
func Serve(tb testing.TB, ctx context.Context, start boot.StartFunc, environ []string) string {
	tb.Helper()
	return ServeWith(tb, ctx, start, environ, http.DefaultClient)
}

// ServeWith is Serve for a service that the test reaches through client:
// one trusting the test's CA, for a service serving HTTPS (TLS_CERT_FILE),
// whose URL is then https://host:port.
func ServeWith(tb testing.TB, ctx context.Context, start boot.StartFunc, environ []string, client *http.Client) string {
	tb.Helper()
	ctx, stop := context.WithCancel(ctx)
	svc, err := start(ctx, environ)
	if err != nil {
		stop()
		tb.Fatalf("start: %v", err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	tb.Cleanup(func() {
		stop()
		select {
		case err := <-runErr:
			if err != nil {
				tb.Errorf("Run = %v, want a clean shutdown", err)
			}
		case <-time.After(stopTimeout):
			tb.Errorf("Run did not return within %v after the context ended", stopTimeout)
		}
	})
	poll.Until(tb, readyTimeout, "the service to be ready", func() bool {
		if svc.ReadyURL() == "" {
			return false
		}
		// On the admin listener when ADMIN_ADDR is set: plain HTTP, which
		// client speaks too.
		resp, err := client.Get(svc.ReadyURL())
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return svc.URL()
}

// Dial connects to the broker at amqpURL as a peer service would; the
// connection is closed when the test ends.
func Dial(tb testing.TB, ctx context.Context, amqpURL string) *rabbit.Conn {
	tb.Helper()
	conn, err := rabbit.Dial(ctx, amqpURL)
	if err != nil {
		tb.Fatalf("dial broker: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Watch returns everything published on exchange from now on, the way a
// peer service sees it: through an exclusive, server-named queue bound with
// "#", so the test neither steals messages from the service's own queues nor
// leaves a queue behind.
func Watch(tb testing.TB, ctx context.Context, conn *rabbit.Conn, exchange string) <-chan amqp.Delivery {
	tb.Helper()
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		tb.Fatalf("open channel: %v", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		tb.Fatalf("declare watch queue: %v", err)
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		tb.Fatalf("bind watch queue to %s: %v", exchange, err)
	}
	deliveries, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		tb.Fatalf("consume watch queue: %v", err)
	}
	return deliveries
}

// Send publishes msg about aggregateID with the envelope the outbox relay
// gives it (route, message id, content type, timestamp, aggregate header),
// so the service under test consumes it as it would a peer's event.
func Send(tb testing.TB, ctx context.Context, pub *rabbit.Publisher, msg proto.Message, aggregateID string) {
	tb.Helper()
	route, ok := eventsv1.RouteOf(msg)
	if !ok {
		tb.Fatalf("no route for %T", msg)
	}
	body, err := proto.Marshal(msg)
	if err != nil {
		tb.Fatalf("marshal %s: %v", route.Type, err)
	}
	err = pub.PublishOne(ctx, rabbit.Message{
		Exchange: route.Exchange, RoutingKey: route.RoutingKey, Type: route.Type,
		MessageID: uuid.NewString(), ContentType: eventsv1.ContentType, Timestamp: time.Now(),
		Headers: amqp.Table{rabbit.HeaderAggregateID: aggregateID}, Body: body,
	})
	if err != nil {
		tb.Fatalf("publish %s: %v", route.Type, err)
	}
}

// Call sends a request built by apitest.NewRequest (a JSON body and a bearer
// token, each when not empty) and returns the status and body. A transport
// error comes back as status 0 with the error as body rather than failing
// the test, so Call can poll a service that is not listening yet.
func Call(tb testing.TB, method, url, token, body string) (int, string) {
	tb.Helper()
	resp, err := http.DefaultClient.Do(apitest.NewRequest(tb, method, url, token, body))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
