package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

func TestCommitIsPublishedRollbackIsNot(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	e.startRelay(t, e.conn.NewPublisher())

	boom := errors.New("abort")
	err := pg.Transact(context.Background(), e.pool, func(tx pgx.Tx) error {
		if err := outbox.Add(context.Background(), tx, event("rolled-back", 1)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	e.write(t, event("committed", 1))

	poll.Until(t, 10*time.Second, "committed event applied", func() bool { return e.effects(t) == 1 })
	if n := e.count(t, `SELECT count(*) FROM effects WHERE aggregate = 'rolled-back'`); n != 0 {
		t.Fatalf("rolled-back event applied %d times", n)
	}
	// The rolled-back event left no row: once the committed one is sent
	// and deleted, the table is empty.
	poll.Until(t, 5*time.Second, "sent event deleted", func() bool {
		return e.count(t, `SELECT count(*) FROM outbox`) == 0
	})
}

// crashingPublisher publishes for real, then "dies" before the relay can
// delete the events: exactly the window between publish and delete.
type crashingPublisher struct {
	outbox.Publisher
	crash   func()
	crashed atomic.Bool
}

func (c *crashingPublisher) Send(ctx context.Context, msgs []rabbit.Message) func(context.Context) []error {
	wait := c.Publisher.Send(ctx, msgs)
	return func(ctx context.Context) []error {
		errs := wait(ctx)
		if c.crashed.CompareAndSwap(false, true) {
			c.crash()
			for i := range errs {
				errs[i] = errors.New("relay killed before deleting the sent events")
			}
		}
		return errs
	}
}

func TestRelayKilledBetweenPublishAndDelete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	const n = 50
	var events []outbox.Event
	for i := range n {
		events = append(events, event(fmt.Sprintf("agg-%d", i%5), i))
	}
	e.write(t, events...)

	crashed := make(chan struct{})
	pub := &crashingPublisher{Publisher: e.conn.NewPublisher()}
	var stop func()
	pub.crash = func() { close(crashed) }
	stop = e.startRelay(t, pub)
	<-crashed
	stop()

	poll.Until(t, 10*time.Second, "first copies applied", func() bool { return e.effects(t) == n })
	if unsent := e.count(t, `SELECT count(*) FROM outbox`); unsent != n {
		t.Fatalf("outbox rows = %d, want %d: the killed relay must not have deleted anything", unsent, n)
	}

	// A new relay publishes the same events again; the inbox swallows them.
	e.startRelay(t, e.conn.NewPublisher())
	poll.Until(t, 10*time.Second, "all sent and deleted", func() bool {
		return e.count(t, `SELECT count(*) FROM outbox`) == 0
	})
	poll.Until(t, 10*time.Second, "duplicates delivered", func() bool { return handled.Load() >= 2*n })
	if got := e.effects(t); got != n {
		t.Fatalf("effects = %d, want %d (each once)", got, n)
	}
	if got := e.count(t, `SELECT count(*) FROM inbox`); got != n {
		t.Fatalf("inbox rows = %d, want %d", got, n)
	}
}

func TestTwoRelaysLoseNothingAndKeepPerAggregateOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	pubA := &countingPublisher{Publisher: e.conn.NewPublisher()}
	pubB := &countingPublisher{Publisher: e.conn.NewPublisher()}
	e.startRelay(t, pubA)
	e.startRelay(t, pubB)

	const aggregates, perAggregate, writers = 100, 100, 8
	var seq [aggregates]atomic.Int64
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			// Each writer owns a slice of the aggregates and writes their
			// events in seq order, a few per transaction.
			for round := range perAggregate / 4 {
				for a := w; a < aggregates; a += writers {
					var evs []outbox.Event
					for range 4 {
						evs = append(evs, event(fmt.Sprintf("agg-%03d", a), int(seq[a].Add(1))))
					}
					e.write(t, evs...)
				}
				_ = round
			}
		})
	}
	wg.Wait()
	const total = aggregates * perAggregate
	poll.Until(t, 60*time.Second, "all 10,000 applied", func() bool { return e.effects(t) == total })
	e.assertOrdered(t)
	if got := e.count(t, `SELECT count(DISTINCT (aggregate, seq)) FROM effects`); got != total {
		t.Fatalf("distinct effects = %d, want %d", got, total)
	}
	t.Logf("relay A published %d, relay B %d", pubA.n.Load(), pubB.n.Load())
	if pubA.n.Load() == 0 || pubB.n.Load() == 0 {
		t.Fatalf("one relay did all the work (A %d, B %d); partitions must be shared", pubA.n.Load(), pubB.n.Load())
	}
}

// A transaction that took its outbox id first but committed last must not be
// skipped by a relay that already published a later id.
func TestLateCommitWithEarlierIDIsPublished(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	e.startRelay(t, e.conn.NewPublisher())
	ctx := context.Background()

	slow, err := e.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = slow.Rollback(ctx) }()
	if err := outbox.Add(ctx, slow, event("slow", 1)); err != nil {
		t.Fatal(err)
	}
	var slowID int64
	if err := slow.QueryRow(ctx, `SELECT id FROM outbox WHERE aggregate_id = 'slow'`).Scan(&slowID); err != nil {
		t.Fatal(err)
	}
	e.write(t, event("fast", 1))
	poll.Until(t, 10*time.Second, "later id published first", func() bool { return e.effects(t) == 1 })
	// The fast event took a later id from the sequence (and is deleted by now).
	if last := e.count(t, `SELECT last_value FROM outbox_id_seq`); int64(last) <= slowID {
		t.Fatalf("sequence at %d after the fast event, want above the slow event's id %d", last, slowID)
	}

	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, "earlier id published after its late commit", func() bool {
		return e.count(t, `SELECT count(*) FROM effects WHERE aggregate = 'slow'`) == 1
	})
}

func TestReportsPendingEventsAndTheirAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.write(t, event("pending", 1))
	if _, err := e.pool.Exec(ctx, `UPDATE outbox SET created_at = now() - interval '90 seconds' WHERE aggregate_id = 'pending'`); err != nil {
		t.Fatal(err)
	}

	reader := metric.NewManualReader()
	meter := metric.NewMeterProvider(metric.WithReader(reader)).Meter("test")
	// A publisher that never confirms keeps the pending event pending.
	down := publisherFunc(func(_ context.Context, msgs []rabbit.Message) func(context.Context) []error {
		errs := make([]error, len(msgs))
		for i := range errs {
			errs[i] = rabbit.ErrNotConfirmed
		}
		return func(context.Context) []error { return errs }
	})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &outbox.Relay{Pool: e.pool, Publisher: down, Meter: meter, PollInterval: 100 * time.Millisecond}
	go func() { _ = r.Run(rctx) }()

	var rm metricdata.ResourceMetrics
	poll.Until(t, 10*time.Second, "metrics report the pending event", func() bool {
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		pending, age, failures := gauge(rm, "outbox.pending"), gauge(rm, "outbox.oldest_pending_age"), sum(rm, "outbox.publish_failures")
		return pending == 1 && age >= 90 && failures >= 1
	})
	if n := e.count(t, `SELECT count(*) FROM outbox`); n != 1 {
		t.Fatalf("outbox rows = %d, want the unconfirmed event kept", n)
	}
}

type publisherFunc func(context.Context, []rabbit.Message) func(context.Context) []error

func (f publisherFunc) Send(ctx context.Context, m []rabbit.Message) func(context.Context) []error {
	return f(ctx, m)
}

func gauge(rm metricdata.ResourceMetrics, name string) float64 {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				return float64(d.DataPoints[0].Value)
			case metricdata.Gauge[float64]:
				return d.DataPoints[0].Value
			}
		}
	}
	return -1
}

func sum(rm metricdata.ResourceMetrics, name string) float64 {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if d, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == name && len(d.DataPoints) > 0 {
				return float64(d.DataPoints[0].Value)
			}
		}
	}
	return -1
}

// TestChaosBrokerStoppedWhileWriting stops the broker (every client on it
// notices), so it runs only in the serialized chaos step (ORDERLY_CHAOS=1).
func TestChaosBrokerStoppedWhileWriting(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") == "" {
		t.Skip("stops the broker: runs in the serialized chaos step (ORDERLY_CHAOS=1)")
	}
	e := newEnv(t)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	e.startRelay(t, e.conn.NewPublisher())

	const total = 600
	written := 0
	writeSome := func(n int) {
		for range n {
			written++
			e.write(t, event(fmt.Sprintf("agg-%d", written%10), written))
			time.Sleep(2 * time.Millisecond) // a steady trickle of orders, not a burst
		}
	}
	writeSome(200)
	rabbittest.Ctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbittest.Ctl(t, "start_app")
		}
	})
	writeSome(200) // the broker is down: these wait in the outbox
	rabbittest.Ctl(t, "start_app")
	restarted = true
	rabbittest.Ctl(t, "await_startup")
	writeSome(200)

	poll.Until(t, 60*time.Second, "every event applied after the restart", func() bool { return e.effects(t) == total })
	if got := e.count(t, `SELECT count(DISTINCT (aggregate, seq)) FROM effects`); got != total {
		t.Fatalf("distinct effects = %d, want %d", got, total)
	}
	e.assertOrdered(t)
	poll.Until(t, 10*time.Second, "outbox drained", func() bool {
		return e.count(t, `SELECT count(*) FROM outbox`) == 0
	})
}

// TestChaosDatabaseRestart restarts PostgreSQL under the relay and the
// consumer (every test using the server notices), so it runs only in the
// serialized chaos step (ORDERLY_CHAOS=1).
func TestChaosDatabaseRestart(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") == "" {
		t.Skip("restarts PostgreSQL: runs in the serialized chaos step (ORDERLY_CHAOS=1)")
	}
	// Retries long enough to outlast the restart: the consumer's transactions
	// fail while the database is down.
	e := newEnv(t, 200*time.Millisecond, time.Second, 3*time.Second, 5*time.Second)
	var handled atomic.Int64
	e.startConsumer(t, &handled)
	e.startRelay(t, e.conn.NewPublisher())

	const total = 200
	written := 0
	writeSome := func(n int) {
		for range n {
			written++
			ev := event(fmt.Sprintf("agg-%d", written%10), written)
			poll.Until(t, 60*time.Second, "write accepted", func() bool {
				return pg.Transact(context.Background(), e.pool, func(tx pgx.Tx) error {
					return outbox.Add(context.Background(), tx, ev)
				}) == nil
			})
		}
	}
	writeSome(100)
	restartPostgres(t)
	writeSome(100)

	poll.Until(t, 90*time.Second, "every event applied after the restart", func() bool {
		var n int
		return e.pool.QueryRow(context.Background(), `SELECT count(*) FROM effects`).Scan(&n) == nil && n == total
	})
	if got := e.count(t, `SELECT count(DISTINCT (aggregate, seq)) FROM effects`); got != total {
		t.Fatalf("distinct effects = %d, want %d", got, total)
	}
	poll.Until(t, 30*time.Second, "outbox drained", func() bool {
		return e.count(t, `SELECT count(*) FROM outbox`) == 0
	})
	if dls, err := e.conn.ListDeadLetters(context.Background(), queue, 10); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters %v, %v; want none", dls, err)
	}
}

func restartPostgres(tb testing.TB) {
	tb.Helper()
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(versions) != 1 {
		tb.Fatalf("cannot find the PostgreSQL cluster: %v", err)
	}
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", versions[0].Name(), "main", "restart").CombinedOutput()
	if err != nil {
		tb.Fatalf("restart postgres: %v\n%s", err, out)
	}
}
