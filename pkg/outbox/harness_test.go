package outbox_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

const (
	exchange = "test.events"
	queue    = "test.consumer"
)

var messaging = pg.Migration{FS: migrations.Messaging, Table: "goose_messaging"}

// env is one test's database (the producer's outbox and the consumer's inbox
// and effects live side by side in it) and broker vhost.
type env struct {
	pool  *pgxpool.Pool
	conn  *rabbit.Conn
	queue rabbit.Queue
}

// newEnv makes the test's database and vhost and declares the consumer queue
// with the given retry delays (one short retry if none).
func newEnv(tb testing.TB, retryDelays ...time.Duration) *env {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, messaging)
	ctx := context.Background()
	const schema = `CREATE TABLE effects (n bigserial PRIMARY KEY, aggregate text NOT NULL, seq int NOT NULL, UNIQUE (aggregate, seq))`
	if _, err := pool.Exec(ctx, schema); err != nil {
		tb.Fatal(err)
	}
	conn, err := rabbit.Dial(ctx, rabbittest.NewVhost(tb), rabbit.WithName(tb.Name()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	if len(retryDelays) == 0 {
		retryDelays = []time.Duration{50 * time.Millisecond}
	}
	q := rabbit.Queue{Name: queue, Bindings: []rabbit.Binding{{Exchange: exchange, Key: "#"}}, RetryDelays: retryDelays}
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{exchange}, Queues: []rabbit.Queue{q}}); err != nil {
		tb.Fatal(err)
	}
	return &env{pool: pool, conn: conn, queue: q}
}

func event(agg string, seq int) outbox.Event {
	return outbox.Event{Exchange: exchange, RoutingKey: "thing.happened", Type: "test.Thing",
		AggregateID: agg, Payload: []byte(fmt.Sprintf("%s:%d", agg, seq))}
}

// write commits events in one transaction.
func (e *env) write(tb testing.TB, events ...outbox.Event) {
	tb.Helper()
	err := pg.Transact(context.Background(), e.pool, func(tx pgx.Tx) error {
		return outbox.Add(context.Background(), tx, events...)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// startRelay runs a relay until the test ends (or stop is called).
func (e *env) startRelay(tb testing.TB, pub outbox.Publisher) (stop func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &outbox.Relay{Pool: e.pool, Publisher: pub, PollInterval: 200 * time.Millisecond}
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("relay: %v", err)
			}
		})
	}
	tb.Cleanup(stop)
	return stop
}

// startConsumer applies each message once, through the inbox, as an effects row.
func (e *env) startConsumer(tb testing.TB, handled *atomic.Int64) {
	tb.Helper()
	h := inbox.Handle(e.pool, queue, inbox.Each(func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
		agg, seqText, ok := strings.Cut(string(d.Body), ":")
		seq, err := strconv.Atoi(seqText)
		if !ok || err != nil {
			return rabbit.Permanent(fmt.Errorf("bad body %q", d.Body))
		}
		_, err = tx.Exec(ctx, `INSERT INTO effects (aggregate, seq) VALUES ($1, $2)`, agg, seq)
		return err
	}))
	counted := func(ctx context.Context, batch []rabbit.Delivery) []error {
		handled.Add(int64(len(batch)))
		return h(ctx, batch)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &rabbit.Consumer{Conn: e.conn, Queue: e.queue, Batch: counted, Workers: 8}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("consumer: %v", err)
		}
	})
}

func (e *env) count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

func (e *env) effects(tb testing.TB) int { return e.count(tb, `SELECT count(*) FROM effects`) }

// assertOrdered fails if any aggregate's effects were applied out of seq order.
func (e *env) assertOrdered(tb testing.TB) {
	tb.Helper()
	const q = `
SELECT count(*) FROM (
  SELECT seq < lag(seq) OVER (PARTITION BY aggregate ORDER BY n) AS backwards FROM effects
) s WHERE backwards`
	if n := e.count(tb, q); n != 0 {
		tb.Fatalf("%d effects applied out of per-aggregate order", n)
	}
}

// countingPublisher counts what it published, to see relays share the work.
type countingPublisher struct {
	outbox.Publisher
	n atomic.Int64
}

func (c *countingPublisher) Send(ctx context.Context, msgs []rabbit.Message) func(context.Context) []error {
	c.n.Add(int64(len(msgs)))
	return c.Publisher.Send(ctx, msgs)
}
