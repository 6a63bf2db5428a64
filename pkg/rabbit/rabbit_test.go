package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

func mustDial(tb testing.TB, url, name string) *rabbit.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := rabbit.Dial(ctx, url, rabbit.WithName(name))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// recorder is a handler that records what it saw, per aggregate.
type recorder struct {
	mu   sync.Mutex
	seen map[string][]string // aggregate -> bodies in arrival order
	n    int
	fail func(d *amqp.Delivery) error
}

func newRecorder() *recorder { return &recorder{seen: map[string][]string{}} }

func (r *recorder) handle(_ context.Context, d *amqp.Delivery) error {
	if r.fail != nil {
		if err := r.fail(d); err != nil {
			return err
		}
	}
	return r.record(d)
}

func (r *recorder) record(d *amqp.Delivery) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	agg, _ := d.Headers[rabbit.HeaderAggregateID].(string)
	r.seen[agg] = append(r.seen[agg], string(d.Body))
	r.n++
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

func msg(i int, agg string) rabbit.Message {
	return rabbit.Message{
		Exchange: "test.events", RoutingKey: "thing.happened",
		MessageID: fmt.Sprintf("m-%d", i), Type: "test.ThingHappened",
		ContentType: "text/plain", Timestamp: time.Now(),
		Headers: amqp.Table{rabbit.HeaderAggregateID: agg},
		Body:    []byte(fmt.Sprintf("%d", i)),
	}
}

func startConsumer(tb testing.TB, conn *rabbit.Conn, q rabbit.Queue, h rabbit.Handler) {
	tb.Helper()
	run(tb, conn, &rabbit.Consumer{Conn: conn, Queue: q, Handler: h, Workers: 4})
}

// run declares c's topology and runs c until tb ends.
func run(tb testing.TB, conn *rabbit.Conn, c *rabbit.Consumer) {
	tb.Helper()
	// Services declare their topology before they start consuming or
	// publishing, so nothing is published before its bindings exist.
	if err := conn.Declare(context.Background(), rabbit.Topology{Queues: []rabbit.Queue{c.Queue}}); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("consumer: %v", err)
		}
	})
}

func testQueue(name string) rabbit.Queue {
	return rabbit.Queue{
		Name:          name,
		Bindings:      []rabbit.Binding{{Exchange: "test.events", Key: "thing.#"}},
		DeliveryLimit: 3,
		RetryDelays:   []time.Duration{50 * time.Millisecond, 100 * time.Millisecond},
	}
}

func publishAll(tb testing.TB, pub *rabbit.Publisher, msgs []rabbit.Message) {
	tb.Helper()
	for i, err := range pub.Publish(context.Background(), msgs) {
		if err != nil {
			tb.Fatalf("message %d: %v", i, err)
		}
	}
}

func TestPublishConsumeKeepsPerAggregateOrder(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "order-test")
	rec := newRecorder()
	startConsumer(t, conn, testQueue("test.order"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()

	const n, aggs = 2000, 20
	var msgs []rabbit.Message
	for i := range n {
		msgs = append(msgs, msg(i, fmt.Sprintf("agg-%d", i%aggs)))
	}
	publishAll(t, pub, msgs)
	poll.Until(t, 30*time.Second, "all delivered", func() bool { return rec.count() == n })

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for agg, bodies := range rec.seen {
		prev := -1
		for _, b := range bodies {
			var i int
			if _, err := fmt.Sscan(b, &i); err != nil {
				t.Fatal(err)
			}
			if i <= prev {
				t.Fatalf("%s: %d after %d", agg, i, prev)
			}
			prev = i
		}
	}
}

// A batch consumer that finds a backlog takes it in batches, keeps each
// aggregate's order, and settles every message by its own result: a
// permanent failure is dead-lettered alone, and a batch that panics is
// handled again one message at a time so that only the poison message is
// returned to the queue (and dead-lettered at the delivery limit).
func TestBatchConsumerTakesBacklogInBatchesAndSettlesEachMessage(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "batch-test")
	q := testQueue("test.batch")
	if err := conn.Declare(context.Background(), rabbit.Topology{Exchanges: []string{"test.events"}, Queues: []rabbit.Queue{q}}); err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	const n, aggs = 1000, 10
	var msgs []rabbit.Message
	for i := range n {
		msgs = append(msgs, msg(i, fmt.Sprintf("agg-%d", i%aggs)))
	}
	publishAll(t, pub, msgs) // a backlog before the consumer starts

	rec := newRecorder()
	rec.fail = func(d *amqp.Delivery) error {
		switch string(d.Body) {
		case "7":
			return rabbit.Permanent(errors.New("cannot decode"))
		case "13":
			panic("poison")
		}
		return nil
	}
	var (
		mu      sync.Mutex
		biggest int
	)
	run(t, conn, &rabbit.Consumer{Conn: conn, Queue: q, Workers: 2, MaxBatch: 16,
		Batch: func(_ context.Context, batch []rabbit.Delivery) []error {
			mu.Lock()
			biggest = max(biggest, len(batch))
			mu.Unlock()
			// Like a transaction: nothing is recorded unless the
			// whole batch went through (a panic records nothing).
			errs := make([]error, len(batch))
			for i, d := range batch {
				errs[i] = rec.fail(d.Delivery)
			}
			for i, d := range batch {
				if errs[i] == nil {
					errs[i] = rec.record(d.Delivery)
				}
			}
			return errs
		}})

	poll.Until(t, 30*time.Second, "healthy messages delivered", func() bool { return rec.count() == n-2 })
	var dls []rabbit.DeadLetter
	poll.Until(t, 30*time.Second, "two dead letters", func() bool {
		var err error
		dls, err = conn.ListDeadLetters(context.Background(), q.Name, 10)
		return err == nil && len(dls) == 2
	})
	reasons := map[string]string{}
	for _, dl := range dls {
		reasons[string(dl.Body)] = dl.Reason
	}
	if !strings.HasPrefix(reasons["7"], "permanent: cannot decode") || !strings.HasPrefix(reasons["13"], "poison message: panic: poison") {
		t.Errorf("dead-letter reasons = %v", reasons)
	}
	mu.Lock()
	defer mu.Unlock()
	if biggest < 2 || biggest > 16 {
		t.Errorf("largest batch = %d, want between 2 and MaxBatch 16 for a backlog of %d", biggest, n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for agg, bodies := range rec.seen {
		prev := -1
		for _, b := range bodies {
			var i int
			if _, err := fmt.Sscan(b, &i); err != nil {
				t.Fatal(err)
			}
			if i <= prev {
				t.Fatalf("%s: %d after %d (or twice)", agg, i, prev)
			}
			prev = i
		}
	}
}

func TestTransientErrorsRetryWithBackoff(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "retry-test")
	var mu sync.Mutex
	attempts := map[string]int{}
	rec := newRecorder()
	rec.fail = func(d *amqp.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts[d.MessageId]++
		if attempts[d.MessageId] <= 2 {
			return errors.New("gateway timeout")
		}
		return nil
	}
	startConsumer(t, conn, testQueue("test.retry"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a")})
	poll.Until(t, 10*time.Second, "delivered after two retries", func() bool { return rec.count() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if attempts["m-1"] != 3 {
		t.Fatalf("attempts = %d, want 3", attempts["m-1"])
	}
	if dl, err := conn.ListDeadLetters(context.Background(), "test.retry", 10); err != nil || len(dl) != 0 {
		t.Fatalf("dead letters = %v, %v; want none", dl, err)
	}
}

func TestFailuresGoToDLQWithReasonAndReplay(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "dlq-test")
	var healed sync.Map
	rec := newRecorder()
	rec.fail = func(d *amqp.Delivery) error {
		if _, ok := healed.Load(d.MessageId); ok {
			return nil
		}
		switch string(d.Body) {
		case "1":
			return rabbit.Permanent(errors.New("cannot decode"))
		case "2":
			return errors.New("still down")
		case "3":
			panic("poison")
		}
		return nil
	}
	q := testQueue("test.dlq")
	startConsumer(t, conn, q, rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a"), msg(2, "b"), msg(3, "c"), msg(4, "d"), msg(5, "e")})

	poll.Until(t, 10*time.Second, "healthy messages delivered", func() bool { return rec.count() == 2 })
	var dls []rabbit.DeadLetter
	poll.Until(t, 15*time.Second, "three dead letters", func() bool {
		var err error
		dls, err = conn.ListDeadLetters(context.Background(), q.Name, 10)
		return err == nil && len(dls) == 3
	})
	reasons := map[string]string{}
	for _, dl := range dls {
		reasons[dl.MessageID] = dl.Reason
		if dl.Queue != q.Name {
			t.Errorf("%s: queue = %q, want %q", dl.MessageID, dl.Queue, q.Name)
		}
	}
	for id, want := range map[string]string{"m-1": "permanent: cannot decode", "m-2": "failed after 2 retries", "m-3": "poison message"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("%s: reason %q, want it to contain %q", id, reasons[id], want)
		}
	}

	// The operator fixes the cause and replays one message, then the rest.
	healed.Store("m-2", true)
	n, err := conn.ReplayDeadLetters(context.Background(), q.Name, func(dl rabbit.DeadLetter) bool { return dl.MessageID == "m-2" })
	if err != nil || n != 1 {
		t.Fatalf("replay = %d, %v; want 1", n, err)
	}
	poll.Until(t, 10*time.Second, "replayed message handled", func() bool { return rec.count() == 3 })
	healed.Store("m-1", true)
	healed.Store("m-3", true)
	if n, err := conn.ReplayDeadLetters(context.Background(), q.Name, nil); err != nil || n != 2 {
		t.Fatalf("replay all = %d, %v; want 2", n, err)
	}
	poll.Until(t, 10*time.Second, "all handled", func() bool { return rec.count() == 5 })
}

// Closing the client's connection on the broker side is what a network cut or
// a load balancer timeout does; publisher and consumer must come back alone.
func TestRecoversFromDroppedConnection(t *testing.T) {
	t.Parallel()
	name := "drop-test-" + fmt.Sprint(time.Now().UnixNano())
	conn := mustDial(t, rabbittest.NewVhost(t), name)
	rec := newRecorder()
	startConsumer(t, conn, testQueue("test.drop"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a")})
	poll.Until(t, 10*time.Second, "first delivered", func() bool { return rec.count() == 1 })

	gen := conn.Generation()
	closeConnection(t, name)
	poll.Until(t, 15*time.Second, "reconnected", func() bool { return conn.Generation() > gen && conn.Connected() })

	// The publisher may race the consumer's re-declare; publish until confirmed.
	poll.Until(t, 15*time.Second, "publish after reconnect", func() bool {
		return pub.PublishOne(context.Background(), msg(2, "a")) == nil
	})
	poll.Until(t, 15*time.Second, "delivered after reconnect", func() bool { return rec.count() >= 2 })
}

func closeConnection(tb testing.TB, name string) {
	tb.Helper()
	out := rabbittest.Ctl(tb, "list_connections", "pid", "client_properties")
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, name) {
			pid := strings.Fields(line)[0]
			rabbittest.Ctl(tb, "close_connection", pid, "test drops the link")
			return
		}
	}
	tb.Fatalf("connection %s not found in:\n%s", name, out)
}

// TestChaosBrokerRestart stops the whole broker, so it runs only in the
// serialized chaos step of `make test` (ORDERLY_CHAOS=1).
func TestChaosBrokerRestart(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") == "" {
		t.Skip("stops the broker: runs in the serialized chaos step (ORDERLY_CHAOS=1)")
	}
	conn := mustDial(t, rabbittest.NewVhost(t), "chaos-rabbit")
	rec := newRecorder()
	startConsumer(t, conn, testQueue("test.chaos"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()

	rabbittest.Ctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbittest.Ctl(t, "start_app")
		}
	})
	if conn.Connected() {
		poll.Until(t, 10*time.Second, "link down", func() bool { return !conn.Connected() })
	}
	rabbittest.Ctl(t, "start_app")
	restarted = true
	rabbittest.Ctl(t, "await_startup")

	poll.Until(t, 30*time.Second, "publish after restart", func() bool {
		return pub.PublishOne(context.Background(), msg(1, "a")) == nil
	})
	poll.Until(t, 30*time.Second, "delivered after restart", func() bool { return rec.count() >= 1 })
}

// Only an expiring queue expires, never its retry and dead-letter queues:
// those have no consumers, and a copy moved into a vanished queue is dropped.
func TestExpiringQueueKeepsItsCompanions(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "expires-test")
	q := testQueue("test.expires")
	q.Expires = time.Second
	rec := newRecorder()
	rec.fail = func(*amqp.Delivery) error { return rabbit.Permanent(errors.New("no")) }
	startConsumer(t, conn, q, rec.handle)
	ch, _, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	// Well past the expiry, the companions must still be there.
	time.Sleep(2500 * time.Millisecond)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a")})
	poll.Until(t, 10*time.Second, "message dead-lettered", func() bool {
		dls, err := conn.ListDeadLetters(context.Background(), q.Name, 10)
		return err == nil && len(dls) == 1
	})
}
