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
	h := rabbittest.One(inbox.Handle(pool, "test", inbox.Each(record)))
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
	h := rabbittest.One(inbox.Handle(pool, "test", inbox.Each(func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
		if err := record(ctx, tx, d); err != nil {
			return err
		}
		if calls.Add(1) == 1 {
			return errors.New("transient")
		}
		return nil
	})))
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
	c := &rabbit.Consumer{Conn: conn, Queue: q, Batch: inbox.Handle(pool, q.Name, inbox.Each(record))}
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

func batchOf(ids ...string) []rabbit.Delivery {
	out := make([]rabbit.Delivery, len(ids))
	for i, id := range ids {
		out[i] = rabbit.Delivery{Ctx: context.Background(), Delivery: &amqp.Delivery{MessageId: id}}
	}
	return out
}

// A batch is applied in one transaction, in order, once per message id:
// a message already recorded and a copy of one in the same batch are
// acknowledged without effects, and a bad id is refused alone.
func TestBatchAppliesEachMessageOnceInOneTransaction(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	old := uuid.NewString()
	if err := rabbittest.One(inbox.Handle(pool, "test", inbox.Each(record)))(context.Background(), &amqp.Delivery{MessageId: old}); err != nil {
		t.Fatal(err)
	}
	var (
		txids = map[uint32]bool{}
		seen  int
	)
	h := inbox.Handle(pool, "test", func(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
		seen += len(batch)
		return inbox.Each(func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
			var xid uint32
			if err := tx.QueryRow(ctx, `SELECT txid_current()::int`).Scan(&xid); err != nil {
				return err
			}
			txids[xid] = true
			return record(ctx, tx, d)
		})(ctx, tx, batch)
	})
	a, b := uuid.NewString(), uuid.NewString()
	errs := h(context.Background(), batchOf(a, old, b, "not-a-uuid", a))
	if len(errs) != 5 {
		t.Fatalf("%d results for 5 messages", len(errs))
	}
	for i, err := range errs {
		if i == 3 {
			if !rabbit.IsPermanent(err) || !errors.Is(err, inbox.ErrBadMessageID) {
				t.Errorf("result of the bad id = %v, want a permanent ErrBadMessageID", err)
			}
			continue
		}
		if err != nil {
			t.Errorf("result %d = %v", i, err)
		}
	}
	if len(txids) != 1 || seen != 2 {
		t.Errorf("the handler ran in %d transactions and saw %d messages, want 1 and 2 (the new ones)", len(txids), seen)
	}
	rows, err := pool.Query(context.Background(), `SELECT message_id FROM effects ORDER BY ctid`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{old, a, b}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("effects = %v, want %v", got, want)
	}
}

// One message that fails does not fail the batch: the others are applied
// (each alone, after the shared transaction rolled back) and only the
// failing one gets its error, and leaves no inbox row to be retried.
func TestBatchIsolatesAFailingMessage(t *testing.T) {
	t.Parallel()
	pool := newPool(t)
	bad := uuid.NewString()
	boom := errors.New("boom")
	h := inbox.Handle(pool, "test", inbox.Each(func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
		if d.MessageId == bad {
			return rabbit.Permanent(boom)
		}
		return record(ctx, tx, d)
	}))
	a, b := uuid.NewString(), uuid.NewString()
	errs := h(context.Background(), batchOf(a, bad, b))
	if errs[0] != nil || errs[2] != nil || !errors.Is(errs[1], boom) || !rabbit.IsPermanent(errs[1]) {
		t.Fatalf("results = %v, want nil, permanent boom, nil", errs)
	}
	if n := count(t, pool, `SELECT count(*) FROM effects`); n != 2 {
		t.Errorf("effects = %d, want 2", n)
	}
	if n := count(t, pool, `SELECT count(*) FROM inbox WHERE message_id = '`+bad+`'`); n != 0 {
		t.Errorf("the failed message has %d inbox rows, want 0", n)
	}
}

// A handler whose statement waits too long for a lock fails with the lock
// timeout, which is not permanent: the consumer retries the message later,
// like any transient failure, and it takes effect once the lock is free.
func TestDatabaseTimeoutIsRetried(t *testing.T) {
	t.Parallel()
	holder, url := pgtest.NewDB(t, messaging)
	ctx := context.Background()
	if _, err := holder.Exec(ctx, `CREATE TABLE counter (n int); INSERT INTO counter VALUES (0)`); err != nil {
		t.Fatal(err)
	}
	pool, err := pg.Connect(ctx, url, pg.WithTimeouts(pg.Timeouts{Statement: 5 * time.Second, Lock: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	h := rabbittest.One(inbox.Handle(pool, "test", inbox.Each(func(ctx context.Context, tx pgx.Tx, _ *amqp.Delivery) error {
		_, err := tx.Exec(ctx, `UPDATE counter SET n = n + 1`)
		return err
	})))
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE counter`); err != nil {
		t.Fatal(err)
	}
	d := &amqp.Delivery{MessageId: uuid.NewString()}
	err = h(ctx, d)
	if !pg.IsTimeout(err) || rabbit.IsPermanent(err) {
		t.Fatalf("handle under a held lock = %v, want a lock timeout that is not permanent", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h(ctx, d); err != nil {
		t.Fatalf("the retry: %v", err)
	}
	if n := count(t, holder, `SELECT n FROM counter`); n != 1 {
		t.Errorf("counter = %d, want 1", n)
	}
}
