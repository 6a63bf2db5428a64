package inbox_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

var messaging = pg.Migration{FS: migrations.Messaging, Table: "goose_messaging"}

func newPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, _ := pgtest.NewDB(t, messaging)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE effects (message_id text)`); err != nil {
		t.Fatal(err)
	}
	return pool
}

func count(t *testing.T, pool *pgxpool.Pool, q string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func record(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	_, err := tx.Exec(ctx, `INSERT INTO effects VALUES ($1)`, d.MessageId)
	return err
}

// Copies of one message handled at the same moment (a redelivery racing the
// original after a reconnect) still take effect once.
func TestConcurrentDuplicatesTakeEffectOnce(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	h := inbox.Handle(pool, "test", record)
	d := &amqp.Delivery{MessageId: uuid.NewString()}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if err := h(context.Background(), d); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := count(t, pool, `SELECT count(*) FROM effects`); n != 1 {
		t.Fatalf("effects = %d, want 1", n)
	}
}

// A failed handler leaves no inbox row, so the retry runs it again.
func TestFailedHandlerIsRetried(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	var calls atomic.Int64
	h := inbox.Handle(pool, "test", func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
		if err := record(ctx, tx, d); err != nil {
			return err
		}
		if calls.Add(1) == 1 {
			return errors.New("transient")
		}
		return nil
	})
	d := &amqp.Delivery{MessageId: uuid.NewString()}
	if err := h(context.Background(), d); err == nil {
		t.Fatal("first call should fail")
	}
	if err := h(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if n := count(t, pool, `SELECT count(*) FROM effects`); n != 1 {
		t.Fatalf("effects = %d, want 1 (the failed attempt must roll back)", n)
	}
}

// A message without a usable id cannot be deduplicated: it goes to the DLQ
// with the reason, and messages behind it are unaffected.
func TestMessageWithoutUUIDIsDeadLettered(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	conn, err := rabbit.Dial(ctx, rabbittest.NewVhost(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := rabbit.Queue{Name: "test.inbox", Bindings: []rabbit.Binding{{Exchange: "test.events", Key: "#"}}}
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{"test.events"}, Queues: []rabbit.Queue{q}}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	c := &rabbit.Consumer{Conn: conn, Queue: q, Handler: inbox.Handle(pool, q.Name, record)}
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()

	pub := conn.NewPublisher()
	defer pub.Close()
	good := uuid.NewString()
	for i, err := range pub.Publish(ctx, []rabbit.Message{
		{Exchange: "test.events", RoutingKey: "x", MessageID: "not-a-uuid", Body: []byte("a")},
		{Exchange: "test.events", RoutingKey: "x", MessageID: good, Body: []byte("b")},
	}) {
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		dls, err := conn.ListDeadLetters(ctx, q.Name, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) == 1 && count(t, pool, `SELECT count(*) FROM effects`) == 1 {
			if !strings.Contains(dls[0].Reason, "not a UUID") {
				t.Fatalf("reason = %q", dls[0].Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dead letters %v, effects %d", dls, count(t, pool, `SELECT count(*) FROM effects`))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPurgeKeepsRecentRecords(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO inbox (consumer, message_id, processed_at) VALUES
		('c', gen_random_uuid(), now() - interval '8 days'), ('c', gen_random_uuid(), now())`); err != nil {
		t.Fatal(err)
	}
	n, err := inbox.Purge(ctx, pool, 7*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want 1", n, err)
	}
	if left := count(t, pool, `SELECT count(*) FROM inbox`); left != 1 {
		t.Fatalf("left %d, want 1", left)
	}
}
