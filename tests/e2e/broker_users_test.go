package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/tests/stack"
)

// brokerDefinitions is the part of deploy/rabbitmq/definitions.json (the
// broker users docker compose loads, and the Kubernetes objects repeat) that
// TestBrokerUsers applies to its own vhost.
type brokerDefinitions struct {
	Permissions []struct {
		User      string `json:"user"`
		Configure string `json:"configure"`
		Write     string `json:"write"`
		Read      string `json:"read"`
	} `json:"permissions"`
	Exchanges []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"exchanges"`
}

// TestBrokerUsers runs the four services, each logged in to RabbitMQ as a
// user of its own with the permissions of deploy/rabbitmq/definitions.json,
// and checks that the whole saga works with them (topology, publishing,
// consuming, dead-lettering), and that a service's user can neither write to
// another service's exchange or queues, nor read another's queue, nor
// reconfigure another's exchange: the broker closes the channel with 403
// ACCESS_REFUSED.
func TestBrokerUsers(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "rabbitmq", "definitions.json"))
	if err != nil {
		t.Fatal(err)
	}
	var defs brokerDefinitions
	if err := json.Unmarshal(raw, &defs); err != nil {
		t.Fatalf("definitions.json: %v", err)
	}

	// A vhost of the test's own, where guest (the test) may do anything,
	// and the exchanges the definitions declare before any service starts.
	adminURL := rabbittest.NewVhost(t)
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatal(err)
	}
	vhost := strings.TrimPrefix(u.Path, "/")
	admin := mustDial(t, adminURL)
	ch, err := admin.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range defs.Exchanges {
		if err := ch.ExchangeDeclare(ex.Name, ex.Type, true, false, false, false, nil); err != nil {
			t.Fatalf("declare %s: %v", ex.Name, err)
		}
	}

	// The services' users, named apart from other tests' (users are not
	// per vhost), with the definitions' permissions on this vhost.
	urls := map[string]string{}
	serviceEnv := map[string][]string{}
	for _, p := range defs.Permissions {
		if p.User == "guest" {
			continue
		}
		user, password := vhost+"-"+p.User, randomHex(16)
		rabbittest.Ctl(t, "add_user", user, password)
		t.Cleanup(func() { rabbittest.Ctl(t, "delete_user", user) })
		rabbittest.Ctl(t, "set_permissions", "-p", vhost, user, p.Configure, p.Write, p.Read)
		su := *u
		su.User = url.UserPassword(user, password)
		urls[p.User] = su.String()
		serviceEnv[p.User] = []string{"AMQP_URL=" + su.String()}
	}
	for _, name := range stack.Names() {
		if urls[name] == "" {
			t.Fatalf("definitions.json has no user for service %s", name)
		}
	}

	s := stack.New(t, stack.Options{AMQPURL: adminURL, Notification: true, ServiceEnv: serviceEnv})
	// Every service is connected, as its own user.
	conns := rabbittest.Ctl(t, "list_connections", "--no-table-headers", "user", "vhost")
	for _, name := range stack.Names() {
		if !strings.Contains(conns, vhost+"-"+name+"\t"+vhost) {
			t.Errorf("no connection of user %s-%s to the vhost:\n%s", vhost, name, conns)
		}
	}

	t.Run("the saga runs with the services' own users", func(t *testing.T) {
		widget := stack.Product{SKU: sku("users"), PriceCents: 500, Stock: 3}
		s.Seed(t, widget)
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: widget.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
		s.WaitStatus(t, token, o.ID, "confirmed", "", settle)
		// Notification read it from order.events with its own user.
		poll.Until(t, settle, "notification to record the confirmed order", func() bool {
			var status string
			err := s.Notification.DB.QueryRow(context.Background(), "SELECT status FROM order_status WHERE order_id = $1", o.ID).Scan(&status)
			return err == nil && status == "confirmed"
		})
	})

	t.Run("a message order cannot read is dead-lettered through its own exchange", func(t *testing.T) {
		// As inventory's relay would publish it, but unreadable: order's
		// user moves it to order.saga.dlq through order.saga.dlx.
		pub, err := admin.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		err = pub.PublishWithContext(context.Background(), "inventory.events", "stock.reserved", false, false, amqp.Publishing{
			MessageId: stack.NewUUID(), Type: "orderly.events.v1.StockReserved", ContentType: "application/x-protobuf",
			DeliveryMode: amqp.Persistent, Body: []byte{0xff, 0xff},
		})
		if err != nil {
			t.Fatal(err)
		}
		poll.Until(t, settle, "the unreadable message in order.saga.dlq", func() bool {
			return s.QueueMessages(t, "order.saga.dlq") == 1
		})
	})

	// Each refusal on a fresh connection as one service's user: the broker
	// closes the channel with 403.
	refusals := []struct {
		name string
		user string
		do   func(ch *amqp.Channel) error
	}{
		{"payment publishes to order.events", "payment", publishTo("order.events", "payment.requested")},
		{"inventory publishes to payment.events", "inventory", publishTo("payment.events", "payment.authorized")},
		{"notification publishes to order.events", "notification", publishTo("order.events", "order.status_changed")},
		{"order publishes to the default exchange (every queue)", "order", publishTo("", "payment.requests")},
		{"inventory publishes to order's dead-letter exchange", "inventory", publishTo("order.saga.dlx", "order.saga")},
		{"inventory redeclares order.events", "inventory", func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare("order.events", amqp.ExchangeTopic, true, false, false, false, nil)
		}},
		{"payment deletes inventory.events", "payment", func(ch *amqp.Channel) error {
			return ch.ExchangeDelete("inventory.events", false, false)
		}},
		{"payment consumes order.saga", "payment", func(ch *amqp.Channel) error {
			_, err := ch.Consume("order.saga", "", false, false, false, false, nil)
			return err
		}},
		{"notification binds its queue to payment.events", "notification", func(ch *amqp.Channel) error {
			return ch.QueueBind("notification.status", "#", "payment.events", false, nil)
		}},
		{"order binds payment's queue to order.events", "order", func(ch *amqp.Channel) error {
			return ch.QueueBind("payment.requests", "#", "order.events", false, nil)
		}},
	}
	for _, tt := range refusals {
		t.Run("refused: "+tt.name, func(t *testing.T) {
			conn := mustDial(t, urls[tt.user])
			ch, err := conn.Channel()
			if err != nil {
				t.Fatal(err)
			}
			closed := ch.NotifyClose(make(chan *amqp.Error, 1))
			err = tt.do(ch)
			var amqpErr *amqp.Error
			if !errors.As(err, &amqpErr) {
				// A publish is asynchronous: the refusal closes the channel.
				select {
				case amqpErr = <-closed:
				case <-time.After(10 * time.Second):
				}
			}
			if amqpErr == nil || amqpErr.Code != amqp.AccessRefused {
				t.Errorf("%s as %s: %v, want 403 ACCESS_REFUSED", tt.name, tt.user, err)
			}
		})
	}
}

// publishTo publishes an empty message to exchange with key.
func publishTo(exchange, key string) func(ch *amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		return ch.PublishWithContext(context.Background(), exchange, key, false, false, amqp.Publishing{Body: []byte("x")})
	}
}

// mustDial connects to amqpURL for the rest of the test.
func mustDial(tb testing.TB, amqpURL string) *amqp.Connection {
	tb.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		tb.Fatalf("dial broker: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
