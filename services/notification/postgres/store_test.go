package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

func newTestStore(tb testing.TB) (*postgres.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, boot.Messaging, postgres.Migration)
	return postgres.New(pool), pool
}

func mustApply(tb testing.TB, pool *pgxpool.Pool, c status.Change) bool {
	tb.Helper()
	var latest bool
	err := pg.Transact(context.Background(), pool, func(tx pgx.Tx) error {
		var err error
		latest, err = postgres.Apply(context.Background(), tx, c)
		return err
	})
	if err != nil {
		tb.Fatalf("Apply(%+v): %v", c, err)
	}
	return latest
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
		c          status.Change
		wantLatest bool
	}{
		{change(1, "pending", ""), true},
		{change(1, "pending", ""), false},  // a redelivery
		{change(3, "confirmed", ""), true}, // 2 is late
		{change(2, "reserved", ""), false}, // older than what is held
		{change(3, "confirmed", ""), false},
	}
	for _, s := range steps {
		if got := mustApply(t, pool, s.c); got != s.wantLatest {
			t.Errorf("Apply(seq %d) latest = %v, want %v", s.c.Seq, got, s.wantLatest)
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
