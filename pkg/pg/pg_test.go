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

// Concurrent serializable increments conflict; Transact must retry them so
// every one lands.
func TestTransactRetriesSerializationFailures(t *testing.T) {
	pool, _ := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, "CREATE TABLE c (n int); INSERT INTO c VALUES (0)"); err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 20
	var attempts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
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
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT n FROM c").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Fatalf("n = %d, want %d", n, workers*each)
	}
	t.Logf("%d attempts for %d transactions", attempts.Load(), workers*each)
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
