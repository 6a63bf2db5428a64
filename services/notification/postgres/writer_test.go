package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/services/notification/status"
)

func pending(order string, seq int64) status.Change {
	return status.Change{OrderID: order, CustomerID: "alice", Status: "pending", Seq: seq, At: time.Now()}
}

// waitQueued waits until a batch is in progress and n callers wait behind
// it.
func (w *Writer) waitQueued(tb testing.TB, n int) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		w.mu.Lock()
		got, writing := len(w.queue), w.writing
		w.mu.Unlock()
		if writing && got == n {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%d callers queued, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond) // polls the writer's queue
	}
}

// TestWriterGroupsWaitingCallers holds the first batch on a row lock so
// that the next callers queue up, and checks that they share the next
// transaction — and that one change the database refuses fails alone.
func TestWriterGroupsWaitingCallers(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t, Migration)
	ctx := context.Background()
	w := NewWriter(New(pool))
	first := uuid.NewString()
	if err := w.Save(ctx, pending(first, 1))[0]; err != nil {
		t.Fatal(err)
	}

	// Another transaction locks the first order's row: the writer's next
	// batch, which updates it, waits for it.
	lock, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `SELECT 1 FROM order_status WHERE order_id = $1 FOR UPDATE`, first); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	held := make(chan error, 1)
	wg.Go(func() { held <- w.Save(ctx, pending(first, 2))[0] })
	w.waitQueued(t, 0) // the caller leads: nothing queued, a batch in progress

	const n = 50
	errs := make([]error, n+1)
	orders := make([]string, n)
	for i := range n {
		orders[i] = uuid.NewString()
		wg.Go(func() { errs[i] = w.Save(ctx, pending(orders[i], 1))[0] })
	}
	bad := pending(uuid.NewString(), 1)
	bad.Status = "lost" // refused by the table's CHECK constraint
	wg.Go(func() { errs[n] = w.Save(ctx, bad)[0] })
	w.waitQueued(t, n+1)
	before := w.Stats()
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	if err := <-held; err != nil {
		t.Errorf("the held change: %v", err)
	}
	for i, err := range errs[:n] {
		if err != nil {
			t.Errorf("change %d: %v", i, err)
		}
	}
	if errs[n] == nil {
		t.Error("the refused change reported success")
	}
	after := w.Stats()
	// The held batch, the shared batch that failed (not counted), then
	// each of the 51 changes alone: 1 + 50 commits, 51 changes.
	if got := fmt.Sprint(after.Commits-before.Commits, after.Changes-before.Changes); got != "51 51" {
		t.Errorf("commits and changes after the lock = %s, want 51 51", got)
	}
	var stored int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM order_status WHERE order_id = ANY($1::uuid[])`, orders).Scan(&stored); err != nil || stored != n {
		t.Errorf("%d of %d queued orders stored (%v)", stored, n, err)
	}
}

// TestWriterBatchesUnderLoad: many concurrent callers, all stored, in far
// fewer transactions than changes.
func TestWriterBatchesUnderLoad(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t, Migration)
	ctx := context.Background()
	w := NewWriter(New(pool))
	const callers, each = 32, 50
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for range callers {
		order := uuid.NewString()
		wg.Go(func() {
			for seq := int64(1); seq <= each; seq++ {
				if err := w.Save(ctx, pending(order, seq))[0]; err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var feed int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM status_feed`).Scan(&feed); err != nil || feed != callers*each {
		t.Fatalf("feed has %d rows (%v), want %d", feed, err, callers*each)
	}
	s := w.Stats()
	t.Logf("%d changes in %d commits", s.Changes, s.Commits)
	if s.Changes != callers*each || s.Commits > s.Changes/2 {
		t.Errorf("%d changes in %d commits: want every change, at least two per commit on average", s.Changes, s.Commits)
	}
}

// TestWriterCallerWithSeveralChanges: a caller's changes are committed
// together, and when the database refuses one of them, only that one
// fails.
func TestWriterCallerWithSeveralChanges(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t, Migration)
	ctx := context.Background()
	w := NewWriter(New(pool))
	a, b := uuid.NewString(), uuid.NewString()
	if errs := w.Save(ctx, pending(a, 1), pending(a, 2), pending(b, 1)); fmt.Sprint(errs) != "[<nil> <nil> <nil>]" {
		t.Fatalf("Apply = %v", errs)
	}
	if s := w.Stats(); s != (Stats{Commits: 1, Changes: 3}) {
		t.Errorf("stats %+v, want the three changes in one commit", s)
	}
	bad := pending(uuid.NewString(), 1)
	bad.Status = "lost" // refused by order_status's CHECK constraint
	errs := w.Save(ctx, pending(a, 3), bad, pending(b, 2))
	if len(errs) != 3 || errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Errorf("Apply with a refused change = %v, want it alone to fail", errs)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM status_feed`).Scan(&n); err != nil || n != 5 {
		t.Errorf("feed has %d rows (%v), want 5", n, err)
	}
}
