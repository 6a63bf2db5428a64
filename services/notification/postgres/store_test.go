package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

func newTestStore(tb testing.TB) (*postgres.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, postgres.Migration)
	return postgres.New(pool), pool
}

// mustApply applies cs in one transaction and returns how many orders'
// latest status moved.
func mustApply(tb testing.TB, pool *pgxpool.Pool, cs ...status.Change) int64 {
	tb.Helper()
	var moved int64
	err := pg.Transact(context.Background(), pool, func(tx pgx.Tx) error {
		var err error
		moved, err = postgres.New(pool).Save(context.Background(), tx, cs...)
		return err
	})
	if err != nil {
		tb.Fatalf("Apply(%+v): %v", cs, err)
	}
	return moved
}

const order = "0190a6b4-0000-7000-8000-000000000001"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC)

func change(seq int64, st, reason string) status.Change {
	return status.Change{OrderID: order, CustomerID: "alice", Status: st, Reason: reason, Seq: seq, At: t0.Add(time.Duration(seq) * time.Second)}
}

func TestApplyIsIdempotentAndIgnoresOlderSeq(t *testing.T) {
	t.Parallel()
	store, pool := newTestStore(t)
	ctx := context.Background()

	if _, err := store.Current(ctx, order); !errors.Is(err, status.ErrUnknownOrder) {
		t.Fatalf("Current of an unknown order = %v, want ErrUnknownOrder", err)
	}
	steps := []struct {
		c         status.Change
		wantMoved int64
	}{
		{change(1, "pending", ""), 1},
		{change(1, "pending", ""), 0},   // a redelivery
		{change(3, "confirmed", ""), 1}, // 2 is late
		{change(2, "reserved", ""), 0},  // older than what is held
		{change(3, "confirmed", ""), 0},
	}
	for _, s := range steps {
		if got := mustApply(t, pool, s.c); got != s.wantMoved {
			t.Errorf("Apply(seq %d) moved %d orders, want %d", s.c.Seq, got, s.wantMoved)
		}
	}
	got, err := store.Current(ctx, order)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(change(3, "confirmed", ""), got); diff != "" {
		t.Errorf("Current (-want +got):\n%s", diff)
	}
	feed, err := store.Since(ctx, order, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []status.Change{change(1, "pending", ""), change(2, "reserved", ""), change(3, "confirmed", "")}
	for i := range want {
		want[i].CustomerID = "" // the feed does not repeat it
	}
	if diff := cmp.Diff(want, feed); diff != "" {
		t.Errorf("Since(0) (-want +got):\n%s", diff)
	}
	if feed, _ := store.Since(ctx, order, 2); len(feed) != 1 || feed[0].Seq != 3 {
		t.Errorf("Since(2) = %+v, want seq 3 only", feed)
	}
	if feed, _ := store.Since(ctx, order, 3); len(feed) != 0 {
		t.Errorf("Since(3) = %+v, want nothing", feed)
	}

	// A cancellation keeps its reason; the reason is NULL otherwise.
	mustApply(t, pool, change(4, "cancelled", "customer_request"))
	if got, _ := store.Current(ctx, order); got.Status != "cancelled" || got.Reason != "customer_request" {
		t.Errorf("Current = %+v, want cancelled/customer_request", got)
	}
	var nulls int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM status_feed WHERE reason IS NULL`).Scan(&nulls); err != nil || nulls != 3 {
		t.Errorf("feed rows with a NULL reason = %d (%v), want 3", nulls, err)
	}
}

// TestApplyBatch applies, in one statement, what the writer may gather:
// the same change twice (from both queues), an order's changes out of
// order, and an order already further on.
func TestApplyBatch(t *testing.T) {
	t.Parallel()
	store, pool := newTestStore(t)
	ctx := context.Background()
	other := func(seq int64, st string) status.Change {
		return status.Change{OrderID: "0190a6b4-0000-7000-8000-000000000002", CustomerID: "bob", Status: st, Seq: seq, At: t0}
	}
	mustApply(t, pool, other(4, "delivered"))
	moved := mustApply(t, pool,
		change(2, "reserved", ""), change(1, "pending", ""), change(3, "confirmed", ""),
		change(2, "reserved", ""), // the other queue's copy
		other(3, "shipped"),       // older than what is held
	)
	if moved != 1 {
		t.Errorf("moved %d orders, want 1", moved)
	}
	if got, _ := store.Current(ctx, order); got.Seq != 3 || got.Status != "confirmed" {
		t.Errorf("Current = %+v, want confirmed/3", got)
	}
	if got, _ := store.Current(ctx, other(0, "").OrderID); got.Seq != 4 || got.Status != "delivered" {
		t.Errorf("Current of the order further on = %+v, want delivered/4", got)
	}
	if feed, _ := store.Since(ctx, order, 0); len(feed) != 3 {
		t.Errorf("feed = %+v, want seqs 1, 2, 3", feed)
	}
	if n := mustApply(t, pool); n != 0 {
		t.Errorf("an empty batch moved %d orders", n)
	}
}

func TestPurgeFinishedKeepsOrdersInProgress(t *testing.T) {
	t.Parallel()
	store, pool := newTestStore(t)
	ctx := context.Background()
	mustApply(t, pool, change(1, "pending", ""))
	mustApply(t, pool, change(2, "cancelled", "timeout"))
	other := status.Change{OrderID: "0190a6b4-0000-7000-8000-000000000002", CustomerID: "bob", Status: "pending", Seq: 1, At: t0}
	mustApply(t, pool, other)
	if _, err := pool.Exec(ctx, `UPDATE order_status SET updated_at = now() - interval '40 days'`); err != nil {
		t.Fatal(err)
	}
	n, err := store.PurgeFinished(ctx, 30*24*time.Hour)
	if err != nil || n != 1 {
		t.Fatalf("PurgeFinished = %d, %v; want 1 order", n, err)
	}
	if _, err := store.Current(ctx, order); !errors.Is(err, status.ErrUnknownOrder) {
		t.Errorf("purged order still known: %v", err)
	}
	if feed, _ := store.Since(ctx, order, 0); len(feed) != 0 {
		t.Errorf("purged order's feed = %+v", feed)
	}
	if _, err := store.Current(ctx, other.OrderID); err != nil {
		t.Errorf("order in progress was purged: %v", err)
	}
}
