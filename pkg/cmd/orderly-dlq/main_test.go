package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/cmd/internal/cli"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

const exchange = "test.events"

func mustDial(tb testing.TB, url string) *rabbit.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rabbit.Dial(ctx, url, rabbit.WithName("orderly-dlq-test"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// runCLI runs the command line args and returns what it printed.
func runCLI(tb testing.TB, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err = run(ctx, args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// mustRunCLI runs args and fails the test unless they succeed.
func mustRunCLI(tb testing.TB, args ...string) string {
	tb.Helper()
	out, errOut, err := runCLI(tb, args...)
	if err != nil {
		tb.Fatalf("orderly-dlq %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func mustDeclare(tb testing.TB, conn *rabbit.Conn, q rabbit.Queue) {
	tb.Helper()
	if err := conn.Declare(context.Background(), rabbit.Topology{Exchanges: []string{exchange}, Queues: []rabbit.Queue{q}}); err != nil {
		tb.Fatal(err)
	}
}

func mustPublish(tb testing.TB, conn *rabbit.Conn, msgs ...rabbit.Message) {
	tb.Helper()
	pub := conn.NewPublisher()
	defer func() { _ = pub.Close() }()
	for i, err := range pub.Publish(context.Background(), msgs) {
		if err != nil {
			tb.Fatalf("publish message %d: %v", i, err)
		}
	}
}

func deadLetterIDs(tb testing.TB, conn *rabbit.Conn, queue string) []string {
	tb.Helper()
	dls, err := conn.ListDeadLetters(context.Background(), queue, 100)
	if err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, dl := range dls {
		ids = append(ids, dl.MessageID)
	}
	return ids
}

// settled waits until n messages are ready in queue's DLQ. A reader's
// messages return to the DLQ a moment after its channel closed, and a reader
// in that moment would not see them all.
func settled(tb testing.TB, conn *rabbit.Conn, queue string, n int) {
	tb.Helper()
	poll.Until(tb, 5*time.Second, fmt.Sprintf("%d messages ready in %s", n, rabbit.DLQName(queue)), func() bool {
		ready, found, err := inspectQueue(context.Background(), conn, rabbit.DLQName(queue))
		return err == nil && found && ready == n
	})
}

// handled records which messages a consumer acknowledged; the ones not yet
// healed fail permanently, as a handler that cannot decode them would.
type handled struct {
	mu     sync.Mutex
	ok     map[string]int
	broken map[string]bool
}

func (h *handled) handle(_ context.Context, d *amqp.Delivery) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.broken[d.MessageId] {
		return rabbit.Permanent(errors.New("cannot decode"))
	}
	h.ok[d.MessageId]++
	return nil
}

func (h *handled) heal(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.broken, id)
}

func (h *handled) times(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ok[id]
}

func startConsumer(tb testing.TB, conn *rabbit.Conn, q rabbit.Queue, h rabbit.Handler) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &rabbit.Consumer{Conn: conn, Queue: q, Handler: h, Workers: 2,
		Log: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("consumer: %v", err)
		}
	})
}

func orderPlaced(tb testing.TB, id, orderID string) rabbit.Message {
	tb.Helper()
	body, err := proto.Marshal(&eventsv1.OrderPlaced{OrderId: orderID, CustomerId: "c-1", TotalCents: 1250, Currency: "EUR",
		Items: []*eventsv1.LineItem{{Sku: "SKU-1", Quantity: 2, UnitPriceCents: 625}}})
	if err != nil {
		tb.Fatal(err)
	}
	return rabbit.Message{Exchange: exchange, RoutingKey: eventsv1.RoutingKeyOrderPlaced, MessageID: id,
		Type: eventsv1.TypeOrderPlaced, ContentType: eventsv1.ContentType, Timestamp: time.Now(),
		Headers: amqp.Table{rabbit.HeaderAggregateID: orderID}, Body: body}
}

type jsonRecord struct {
	MessageID   string         `json:"message_id"`
	Type        string         `json:"type"`
	ContentType string         `json:"content_type"`
	Queue       string         `json:"queue"`
	Reason      string         `json:"reason"`
	Timestamp   time.Time      `json:"timestamp"`
	Size        int            `json:"size"`
	Headers     map[string]any `json:"headers"`
	Body        []byte         `json:"body"`
	Event       map[string]any `json:"event"`
}

func TestListShowAndReplayDeadLetters(t *testing.T) {
	t.Parallel()
	url := rabbittest.NewVhost(t)
	conn := mustDial(t, url)
	q := rabbit.Queue{
		Name:          "cli.orders",
		Bindings:      []rabbit.Binding{{Exchange: exchange, Key: "#"}},
		DeliveryLimit: 5,
		RetryDelays:   []time.Duration{50 * time.Millisecond},
	}
	mustDeclare(t, conn, q)
	h := &handled{ok: map[string]int{}, broken: map[string]bool{"m-bad": true, "m-raw": true}}
	startConsumer(t, conn, q, h.handle)

	bad := orderPlaced(t, "m-bad", "order-1")
	raw := rabbit.Message{Exchange: exchange, RoutingKey: "opaque.thing", MessageID: "m-raw", Type: "test.Opaque",
		ContentType: "application/octet-stream", Timestamp: time.Now(), Body: []byte{0xde, 0xad, 0xbe, 0xef, 'x'}}
	mustPublish(t, conn, orderPlaced(t, "m-ok", "order-2"), bad, raw)
	poll.Until(t, 10*time.Second, "the healthy message handled", func() bool { return h.times("m-ok") == 1 })
	poll.Until(t, 10*time.Second, "two dead letters", func() bool { return len(deadLetterIDs(t, conn, q.Name)) == 2 })

	amqpFlag := "-amqp=" + url
	// cli runs a command once all n dead letters are back in the DLQ.
	cli := func(t *testing.T, n int, args ...string) string {
		t.Helper()
		settled(t, conn, q.Name, n)
		return mustRunCLI(t, append([]string{amqpFlag}, args...)...)
	}

	t.Run("list", func(t *testing.T) {
		out := cli(t, 2, "list", "-queue", q.Name)
		for _, want := range []string{"MESSAGE ID", "m-bad", "m-raw", eventsv1.TypeOrderPlaced, "permanent: cannot decode",
			"cli.orders", "2 dead letter(s) in cli.orders.dlq"} {
			if !strings.Contains(out, want) {
				t.Errorf("list output lacks %q:\n%s", want, out)
			}
		}
		settled(t, conn, q.Name, 2)
		out = mustRunCLI(t, "list", amqpFlag, "-queue", q.Name, "-max", "1")
		if !strings.Contains(out, "showing 1 of 2 dead letters") {
			t.Errorf("list -max 1 does not say it shows 1 of 2:\n%s", out)
		}
	})

	t.Run("list -json", func(t *testing.T) {
		out := cli(t, 2, "list", "-queue", q.Name, "-json")
		got := map[string]jsonRecord{}
		sc := bufio.NewScanner(strings.NewReader(out))
		for sc.Scan() {
			var r jsonRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			got[r.MessageID] = r
		}
		if len(got) != 2 {
			t.Fatalf("got %d records, want 2:\n%s", len(got), out)
		}
		r := got["m-bad"]
		if r.Type != eventsv1.TypeOrderPlaced || r.ContentType != eventsv1.ContentType || r.Queue != q.Name ||
			r.Reason != "permanent: cannot decode" || r.Size != len(bad.Body) || !bytes.Equal(r.Body, bad.Body) ||
			r.Timestamp.IsZero() {
			t.Errorf("m-bad record = %+v", r)
		}
		if r.Headers[rabbit.HeaderAggregateID] != "order-1" || r.Headers[rabbit.HeaderError] != "permanent: cannot decode" {
			t.Errorf("m-bad headers = %v", r.Headers)
		}
		if !bytes.Equal(got["m-raw"].Body, raw.Body) {
			t.Errorf("m-raw body = %x, want %x", got["m-raw"].Body, raw.Body)
		}
	})

	t.Run("show", func(t *testing.T) {
		out := cli(t, 2, "show", "-queue", q.Name, "-id", "m-bad")
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`Message ID:\s+m-bad\n`),
			regexp.MustCompile(`Content type:\s+application/x-protobuf\n`),
			regexp.MustCompile(`Source queue:\s+cli\.orders\n`),
			regexp.MustCompile(`Reason:\s+permanent: cannot decode\n`),
			regexp.MustCompile(`  aggregate_id: "order-1"\n`),
			regexp.MustCompile(`  x-orderly-queue: "cli\.orders"\n`),
			regexp.MustCompile(`Body \(orderly\.events\.v1\.OrderPlaced, as protojson\):`),
			regexp.MustCompile(`"order_id":\s+"order-1"`),
			regexp.MustCompile(`"sku":\s+"SKU-1"`),
		} {
			if !want.MatchString(out) {
				t.Errorf("show output does not match %s:\n%s", want, out)
			}
		}

		out = cli(t, 2, "show", "-queue", q.Name, "-id", "m-raw")
		if !strings.Contains(out, "Body (hex):") || !strings.Contains(out, "de ad be ef 78") {
			t.Errorf("show of an opaque body is not a hex dump:\n%s", out)
		}

		out = cli(t, 2, "show", "-queue", q.Name, "-id", "m-bad", "-json")
		var r jsonRecord
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("show -json: %v\n%s", err, out)
		}
		if r.MessageID != "m-bad" || r.Event["order_id"] != "order-1" || r.Event["total_cents"] != "1250" {
			t.Errorf("show -json = %+v", r)
		}

		settled(t, conn, q.Name, 2)
		_, _, err := runCLI(t, amqpFlag, "show", "-queue", q.Name, "-id", "m-nope")
		if err == nil || !strings.Contains(err.Error(), `no dead letter with message id "m-nope" in cli.orders.dlq`) {
			t.Errorf("show of a missing id: err = %v", err)
		}
	})

	t.Run("replay", func(t *testing.T) {
		out := cli(t, 2, "replay", "-queue", q.Name, "-all", "-dry-run")
		if !strings.Contains(out, "would replay m-bad (orderly.events.v1.OrderPlaced) to cli.orders") ||
			!strings.Contains(out, "would replay 2 dead letter(s) from cli.orders.dlq; nothing was moved") {
			t.Errorf("dry run output:\n%s", out)
		}
		settled(t, conn, q.Name, 2)
		if ids := deadLetterIDs(t, conn, q.Name); len(ids) != 2 {
			t.Fatalf("DLQ after the dry run holds %v, want m-bad and m-raw", ids)
		}
		if n := h.times("m-bad"); n != 0 {
			t.Fatalf("dry run delivered m-bad %d times", n)
		}

		// The operator fixes the handler for one message and replays it alone.
		h.heal("m-bad")
		out = cli(t, 2, "replay", "-queue", q.Name, "-id", "m-bad")
		if !strings.Contains(out, "replayed 1 dead letter(s) from cli.orders.dlq") {
			t.Errorf("replay -id output:\n%s", out)
		}
		poll.Until(t, 10*time.Second, "m-bad handled after replay", func() bool { return h.times("m-bad") == 1 })
		poll.Until(t, 5*time.Second, "only m-raw left in the DLQ", func() bool {
			ids := deadLetterIDs(t, conn, q.Name)
			return len(ids) == 1 && ids[0] == "m-raw"
		})

		settled(t, conn, q.Name, 1)
		_, _, err := runCLI(t, amqpFlag, "replay", "-queue", q.Name, "-id", "m-bad")
		if err == nil || !strings.Contains(err.Error(), `no dead letter with message id "m-bad"`) {
			t.Errorf("second replay of m-bad: err = %v", err)
		}

		h.heal("m-raw")
		out = cli(t, 1, "replay", "-queue", q.Name, "-all")
		if !strings.Contains(out, "replayed 1 dead letter(s)") {
			t.Errorf("replay -all output:\n%s", out)
		}
		poll.Until(t, 10*time.Second, "m-raw handled after replay", func() bool { return h.times("m-raw") == 1 })
		if out := cli(t, 0, "list", "-queue", q.Name); !strings.Contains(out, "no dead letters in cli.orders.dlq") {
			t.Errorf("DLQ not empty after replaying everything:\n%s", out)
		}
		if n := h.times("m-ok"); n != 1 {
			t.Errorf("m-ok handled %d times, want 1", n)
		}
	})
}

// A consumer that keeps crashing (or losing its link) leaves the broker to
// dead-letter the message at the delivery limit, with x-death headers and no
// reason of ours; the CLI must show that and replay it all the same.
func TestBrokerDeadLetteredMessage(t *testing.T) {
	t.Parallel()
	url := rabbittest.NewVhost(t)
	conn := mustDial(t, url)
	q := rabbit.Queue{Name: "cli.crash", Bindings: []rabbit.Binding{{Exchange: exchange, Key: "#"}}, DeliveryLimit: 1}
	mustDeclare(t, conn, q)
	mustPublish(t, conn, orderPlaced(t, "m-crash", "order-9"))

	ch, _, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.Close() }()
	poll.Until(t, 10*time.Second, "the broker dead-letters m-crash", func() bool {
		if d, ok, err := ch.Get(q.Name, false); err == nil && ok {
			_ = d.Nack(false, true)
		}
		return len(deadLetterIDs(t, conn, q.Name)) == 1
	})

	amqpFlag := "-amqp=" + url
	settled(t, conn, q.Name, 1)
	out := mustRunCLI(t, amqpFlag, "list", "-queue", q.Name)
	if !strings.Contains(out, "broker: delivery_limit") {
		t.Errorf("list does not give the broker's reason:\n%s", out)
	}
	settled(t, conn, q.Name, 1)
	out = mustRunCLI(t, amqpFlag, "show", "-queue", q.Name, "-id", "m-crash")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`Reason:\s+broker: delivery_limit\n`),
		regexp.MustCompile(`  x-first-death-reason: "delivery_limit"\n`),
		regexp.MustCompile(`  x-death:\n    - count: 1\n(      .*\n)*      reason: "delivery_limit"\n`),
		regexp.MustCompile(`      queue: "cli\.crash"\n`),
		regexp.MustCompile(`  x-delivery-count: \d+  # reads of this DLQ copy`),
		regexp.MustCompile(`"order_id":\s+"order-9"`),
	} {
		if !want.MatchString(out) {
			t.Errorf("show output does not match %s:\n%s", want, out)
		}
	}

	settled(t, conn, q.Name, 1)
	out = mustRunCLI(t, amqpFlag, "replay", "-queue", q.Name, "-id", "m-crash")
	if !strings.Contains(out, "replayed 1 dead letter(s)") {
		t.Errorf("replay output:\n%s", out)
	}
	poll.Until(t, 5*time.Second, "m-crash back in its queue", func() bool {
		d, ok, err := ch.Get(q.Name, true)
		return err == nil && ok && d.MessageId == "m-crash"
	})
}

// The broker confirms and drops a message published to a queue that does not
// exist, so replaying into a deleted queue would lose it: the CLI refuses.
func TestReplayKeepsMessagesWhoseQueueIsGone(t *testing.T) {
	t.Parallel()
	url := rabbittest.NewVhost(t)
	conn := mustDial(t, url)
	q := rabbit.Queue{Name: "cli.gone"}
	mustDeclare(t, conn, q)
	mustPublish(t, conn, rabbit.Message{RoutingKey: rabbit.DLQName(q.Name), MessageID: "m-1", Type: "test.Thing",
		Headers: amqp.Table{rabbit.HeaderError: "permanent: broken", rabbit.HeaderQueue: q.Name}, Body: []byte("x")})
	ch, _, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDelete(q.Name, false, false, false); err != nil {
		t.Fatal(err)
	}
	_ = ch.Close()

	for _, args := range [][]string{{"-all", "-dry-run"}, {"-all"}, {"-id", "m-1"}} {
		settled(t, conn, q.Name, 1)
		out, _, err := runCLI(t, append([]string{"-amqp", url, "replay", "-queue", q.Name}, args...)...)
		if err == nil || !strings.Contains(err.Error(), `left 1 for "cli.gone" in cli.gone.dlq: the source queue does not exist`) {
			t.Errorf("replay %v: err = %v\n%s", args, err, out)
		}
	}
	poll.Until(t, 5*time.Second, "m-1 still in the DLQ", func() bool {
		ids := deadLetterIDs(t, conn, q.Name)
		return len(ids) == 1 && ids[0] == "m-1"
	})
}

func TestErrors(t *testing.T) {
	t.Parallel()
	url := rabbittest.NewVhost(t)
	conn := mustDial(t, url)
	mustDeclare(t, conn, rabbit.Queue{Name: "cli.errors"})

	tests := []struct {
		args  []string
		usage bool
		want  string
	}{
		{nil, true, "missing command"},
		{[]string{"frobnicate"}, true, `unknown command "frobnicate"`},
		{[]string{"-bogus"}, true, "flag provided but not defined: -bogus"},
		{[]string{"list"}, true, "-queue is required"},
		{[]string{"list", "-queue", "q", "extra"}, true, `unexpected argument "extra"`},
		{[]string{"list", "-queue", "q", "-max", "0"}, true, "-max must be at least 1"},
		{[]string{"show", "-queue", "q"}, true, "-id is required"},
		{[]string{"replay", "-queue", "q"}, true, "exactly one of -id MESSAGE_ID and -all"},
		{[]string{"replay", "-queue", "q", "-id", "x", "-all"}, true, "exactly one of -id MESSAGE_ID and -all"},
		{[]string{"-amqp", "amqp://guest:guest@127.0.0.1:1/", "-timeout", "300ms", "list", "-queue", "q"}, false,
			"cannot connect to RabbitMQ"},
		{[]string{"-amqp", url, "list", "-queue", "nosuch"}, false,
			`dead-letter queue "nosuch.dlq" does not exist in vhost`},
		{[]string{"-amqp", url, "replay", "-queue", "nosuch", "-all"}, false,
			`dead-letter queue "nosuch.dlq" does not exist`},
		{[]string{"-amqp", url, "show", "-queue", "cli.errors.dlq", "-id", "x"}, false,
			"pass the consumer's queue, -queue cli.errors, not its DLQ"},
	}
	for _, tt := range tests {
		out, _, err := runCLI(t, tt.args...)
		var uerr cli.UsageError
		switch {
		case err == nil:
			t.Errorf("%v: no error; output:\n%s", tt.args, out)
		case !strings.Contains(err.Error(), tt.want):
			t.Errorf("%v: err = %q, want it to contain %q", tt.args, err, tt.want)
		case errors.As(err, &uerr) != tt.usage:
			t.Errorf("%v: usage error = %v, want %v", tt.args, !tt.usage, tt.usage)
		case strings.Contains(err.Error(), "\n"):
			t.Errorf("%v: error spans lines: %q", tt.args, err)
		}
	}

	out := mustRunCLI(t, "list", "-h")
	if !strings.Contains(out, "Usage: orderly-dlq list") || !strings.Contains(out, "-max N") {
		t.Errorf("list -h:\n%s", out)
	}
}

// AMQP_URL is the broker when -amqp is not given. Not parallel: it sets the
// environment.
func TestURLFromEnvironment(t *testing.T) {
	url := rabbittest.NewVhost(t)
	mustDeclare(t, mustDial(t, url), rabbit.Queue{Name: "cli.env"})
	t.Setenv("AMQP_URL", url)
	if out := mustRunCLI(t, "list", "-queue", "cli.env"); !strings.Contains(out, "no dead letters in cli.env.dlq") {
		t.Errorf("list with AMQP_URL:\n%s", out)
	}
}
