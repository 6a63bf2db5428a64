package pg_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

func TestTransactCommitsAndRollsBack(t *testing.T) {
	pool, _ := pgtest.NewDB(t, pg.Migration{FS: migrations.Messaging, Table: "goose_messaging"})
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE t (n int)"); err != nil {
		t.Fatal(err)
	}
	if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want boom", err)
	}
	var sum int
	if err := pool.QueryRow(ctx, "SELECT sum(n) FROM t").Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 1 {
		t.Fatalf("sum = %d, want 1 (the failed transaction must roll back)", sum)
	}
}

// Concurrent serializable increments conflict; Transact retries them, so
// that all but the unluckiest land, none is lost or applied twice, and a
// transaction that still fails after maxAttempts reports its serialization
// failure for the caller (a consumer's broker) to retry later. Eight
// workers on one row under -race make a worker lose twelve times in a row
// now and then, so the test counts what landed rather than asking all of
// it to.
func TestTransactRetriesSerializationFailures(t *testing.T) {
	pool, _ := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE c (n int); INSERT INTO c VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 20
	var attempts, landed atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				err := pg.TransactOpts(ctx, pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
					attempts.Add(1)
					var n int
					if err := tx.QueryRow(ctx, "SELECT n FROM c").Scan(&n); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, "UPDATE c SET n = $1", n+1)
					return err
				})
				if err != nil {
					errs <- err
					continue
				}
				landed.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !pg.Retryable(err) {
			t.Errorf("a transaction failed with %v, want only serialization failures past the retries", err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT n FROM c").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if int64(n) != landed.Load() {
		t.Fatalf("n = %d after %d transactions committed: an update was lost or applied twice", n, landed.Load())
	}
	if attempts.Load() <= workers*each {
		t.Errorf("%d attempts for %d transactions: nothing conflicted, so nothing was retried", attempts.Load(), workers*each)
	}
	if want := int64(workers * each * 95 / 100); landed.Load() < want {
		t.Errorf("%d of %d transactions landed, want at least %d: the retries do not resolve the conflicts", landed.Load(), workers*each, want)
	}
	t.Logf("%d attempts for %d transactions, %d landed", attempts.Load(), workers*each, landed.Load())
}

func TestMigrateIsIdempotentAndConcurrent(t *testing.T) {
	set := pg.Migration{FS: migrations.Messaging, Table: "goose_messaging"}
	pool, _ := pgtest.NewDB(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = pg.Migrate(ctx, pool, set) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n, err := pg.Pending(ctx, pool, set)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("pending = %d, want 0", n)
	}
}
