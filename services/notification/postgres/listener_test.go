package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

// mustListen opens a connection on url that listens on postgres.Channel.
func mustListen(tb testing.TB, url string) *pgx.Conn {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close(ctx) })
	if _, err := conn.Exec(ctx, "LISTEN "+postgres.Channel); err != nil {
		tb.Fatal(err)
	}
	return conn
}

// notifications returns the payloads that arrive on conn until none has
// for quiet.
func notifications(tb testing.TB, conn *pgx.Conn, quiet time.Duration) []string {
	tb.Helper()
	var out []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), quiet)
		n, err := conn.WaitForNotification(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, n.Payload)
	}
}

// TestApplyAnnouncesNewChangesOnCommit: the changes a transaction newly
// stores are announced once it commits, in (order, seq) order, and never
// before; a change already stored is not announced again, and nothing of a
// rolled-back transaction is.
func TestApplyAnnouncesNewChangesOnCommit(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewDB(t, postgres.Migration)
	listener := mustListen(t, url)
	ctx := context.Background()
	a, b := "0190a6b4-0000-7000-8000-00000000000a", "0190a6b4-0000-7000-8000-00000000000b"
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.FixedZone("CET", 3600))
	c := func(order string, seq int64, st, reason string) status.Change {
		return status.Change{OrderID: order, CustomerID: "alice", Status: st, Reason: reason, Seq: seq, At: at.Add(time.Duration(seq) * time.Second)}
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Out of order, and b's cancelled with a reason.
	// a's first change came with the trace of the consumer that stored it.
	traced := c(a, 1, "pending", "")
	traced.Traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := postgres.New(pool).Save(ctx, tx, c(b, 2, "cancelled", "out_of_stock"), c(a, 2, "reserved", ""), c(b, 1, "pending", ""), traced); err != nil {
		t.Fatal(err)
	}
	if got := notifications(t, listener, 200*time.Millisecond); len(got) != 0 {
		t.Fatalf("announced before the commit: %q", got)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	reason := "out_of_stock"
	ann := func(order string, seq int64, st string, reason *string) announced {
		return announced{Order: order, Seq: seq, Status: st, Reason: reason, At: at.Add(time.Duration(seq) * time.Second)}
	}
	got := notifications(t, listener, time.Second)
	first := ann(a, 1, "pending", nil)
	first.Trace = &traced.Traceparent
	want := []announced{first, ann(a, 2, "reserved", nil), ann(b, 1, "pending", nil), ann(b, 2, "cancelled", &reason)}
	if diff := cmp.Diff(want, decode(t, got)); diff != "" {
		t.Errorf("announced after the commit (-want +got):\n%s", diff)
	}
	for _, p := range got {
		if len(p) > 180 {
			t.Errorf("payload of %d bytes, want a compact one: %s", len(p), p)
		}
	}

	// Redelivered copies and one new change: only the new one.
	mustApply(t, pool, c(a, 1, "pending", ""), c(b, 2, "cancelled", "out_of_stock"), c(a, 3, "confirmed", ""), c(a, 2, "reserved", ""))
	want = []announced{ann(a, 3, "confirmed", nil)}
	if diff := cmp.Diff(want, decode(t, notifications(t, listener, time.Second))); diff != "" {
		t.Errorf("announced for a batch of copies and one new change (-want +got):\n%s", diff)
	}

	// Rolled back: nothing.
	err = pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		if _, err := postgres.New(pool).Save(ctx, tx, c(a, 4, "shipped", "")); err != nil {
			return err
		}
		return errors.New("roll back")
	})
	if err == nil {
		t.Fatal("the transaction did not roll back")
	}
	if got := notifications(t, listener, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("announced by a rolled-back transaction: %q", got)
	}
}

// fakeHub records what a Listener publishes and watches a fixed set of
// orders.
type fakeHub struct {
	orders []string
	mu     sync.Mutex
	got    []status.Change
}

func (h *fakeHub) Publish(c status.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, c)
}

func (h *fakeHub) Orders() []string { return slices.Clone(h.orders) }

func (h *fakeHub) published() []status.Change {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// TestListenerPublishesAnnouncementsAndResyncsAfterReconnecting: the
// listener publishes what is announced (and skips a payload that is not
// Apply's), and hands it to Heard; when its connection is terminated and changes are stored
// before it listens again, it publishes the latest status of the orders
// its hub watches once it is back; and it stops with nil.
func TestListenerPublishesAnnouncementsAndResyncsAfterReconnecting(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t, postgres.Migration)
	ctx := context.Background()
	order, other := uuid.NewString(), uuid.NewString()
	// The second order is unknown to the service, the third not even an
	// order id: neither must get in the way of the first.
	hub := &fakeHub{orders: []string{order, uuid.NewString(), "not-an-order"}}
	l := postgres.NewListener(pool, hub, slog.New(slog.DiscardHandler))
	l.Backoff = time.Second // the changes below commit long before it reconnects
	heard := &fakeHub{}
	l.Heard = heard.Publish
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- l.Run(runCtx) }()
	defer func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	}()
	poll.Until(t, 10*time.Second, "the listener to listen", func() bool { return l.Stats().Resyncs == 1 })

	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := pool.Exec(ctx, `SELECT pg_notify($1, 'not a change')`, postgres.Channel); err != nil {
		t.Fatal(err)
	}
	mustApply(t, pool, status.Change{OrderID: order, CustomerID: "alice", Status: "pending", Seq: 1, At: at})
	poll.Until(t, 10*time.Second, "seq 1 to be published", func() bool { return len(hub.published()) == 1 })
	want := []status.Change{{OrderID: order, Status: "pending", Seq: 1, At: at}}
	if diff := cmp.Diff(want, hub.published()); diff != "" {
		t.Errorf("published (-want +got):\n%s", diff)
	}

	err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		if err := terminateListener(ctx, tx); err != nil {
			return err
		}
		_, err := postgres.New(pool).Save(ctx, tx,
			status.Change{OrderID: order, CustomerID: "alice", Status: "reserved", Seq: 2, At: at.Add(time.Second)},
			status.Change{OrderID: order, CustomerID: "alice", Status: "cancelled", Reason: "timeout", Seq: 3, At: at.Add(2 * time.Second)},
			status.Change{OrderID: other, CustomerID: "bob", Status: "pending", Seq: 1, At: at})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 20*time.Second, "the listener to resync", func() bool { return l.Stats().Resyncs == 2 })
	// The latest status of the watched order, read from order_status (so
	// with its customer); nothing of the order no one watches here.
	want = append(want, status.Change{OrderID: order, CustomerID: "alice", Status: "cancelled", Reason: "timeout", Seq: 3, At: at.Add(2 * time.Second)})
	if diff := cmp.Diff(want, hub.published()); diff != "" {
		t.Errorf("published after the resync (-want +got):\n%s", diff)
	}
	// Heard gets what was announced, never what a resync publishes again.
	if diff := cmp.Diff(want[:1], heard.published()); diff != "" {
		t.Errorf("heard (-want +got):\n%s", diff)
	}
	if s := l.Stats(); s.Notifications != 2 {
		t.Errorf("%d notifications, want 2 (the bad one and seq 1)", s.Notifications)
	}
}

// terminateListener ends the backend of the Listener on tx's database and
// waits until it is gone.
func terminateListener(ctx context.Context, tx pgx.Tx) error {
	// pg_terminate_backend in the select list, not the WHERE clause, whose
	// conditions PostgreSQL may evaluate in any order.
	const q = `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1`
	rows, err := tx.Query(ctx, q, postgres.ListenerAppName)
	if err != nil {
		return err
	}
	killed, err := pgx.CollectRows(rows, pgx.RowTo[bool])
	if err != nil {
		return err
	}
	if len(killed) != 1 || !killed[0] {
		return errors.New("not exactly one listener backend terminated")
	}
	return nil
}

// announced is a payload on postgres.Channel, decoded.
type announced struct {
	Order  string
	Seq    int64
	Status string
	Reason *string
	At     time.Time
	Trace  *string
}

// decode reads payloads as the JSON arrays Apply announces.
func decode(tb testing.TB, payloads []string) []announced {
	tb.Helper()
	out := make([]announced, len(payloads))
	for i, p := range payloads {
		a := &out[i]
		fields := []any{&a.Order, &a.Seq, &a.Status, &a.Reason, &a.At, &a.Trace}
		if err := json.Unmarshal([]byte(p), &fields); err != nil || len(fields) != 6 {
			tb.Fatalf("payload %s: %v", p, err)
		}
	}
	return out
}
