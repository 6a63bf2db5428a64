package pg_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

// Whatever the first statement of a transaction is — Exec, Query, QueryRow
// or a batch, which carry the BEGIN along — the statements after it run in
// the same transaction, with the options asked for, and a failure rolls
// every one back.
func TestTransactBeginsWithTheFirstStatement(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `CREATE TABLE t (n int)`); err != nil {
		t.Fatal(err)
	}
	count := func() (n int) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	first := map[string]func(tx pgx.Tx) error{
		"exec": func(tx pgx.Tx) error { _, err := tx.Exec(ctx, `INSERT INTO t VALUES (1)`); return err },
		"query": func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `INSERT INTO t VALUES (1) RETURNING n`)
			if err != nil {
				return err
			}
			_, err = pgx.CollectRows(rows, pgx.RowTo[int])
			return err
		},
		"query row": func(tx pgx.Tx) error {
			var n int
			return tx.QueryRow(ctx, `INSERT INTO t VALUES (1) RETURNING n`).Scan(&n)
		},
		"batch": func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`INSERT INTO t VALUES (1)`)
			var n int
			b.Queue(`SELECT count(*) FROM t`).QueryRow(func(r pgx.Row) error { return r.Scan(&n) })
			return tx.SendBatch(ctx, b).Close()
		},
	}
	boom := errors.New("boom")
	for name, f := range first {
		before := count()
		err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			if err := f(tx); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO t VALUES (2)`); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) || count() != before {
			t.Errorf("%s first, then a failure: err %v, %d rows added; want boom and none", name, err, count()-before)
		}
		if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			if err := f(tx); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO t VALUES (2)`)
			return err
		}); err != nil || count() != before+2 {
			t.Errorf("%s first: err %v, %d rows added; want 2", name, err, count()-before)
		}
	}
	var level string
	if err := pg.TransactOpts(ctx, pool, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SHOW transaction_isolation`).Scan(&level)
	}); err != nil || level != "serializable" {
		t.Errorf("isolation = %q, %v; want serializable", level, err)
	}
	// A statement that fails first leaves nothing behind, and the pool
	// gets its connection back.
	for range 2 * int(pool.Config().MaxConns) {
		if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `INSERT INTO nope VALUES (1)`)
			return err
		}); err == nil {
			t.Fatal("insert into a missing table succeeded")
		}
		if err := pg.Transact(ctx, pool, func(pgx.Tx) error { return nil }); err != nil {
			t.Fatalf("empty transaction: %v", err)
		}
	}
	if n := pool.Stat().AcquiredConns(); n != 0 {
		t.Errorf("%d connections still acquired", n)
	}
}

// AfterCommit's functions run once per transaction that committed: not
// for a rolled-back one, and not for the attempts of a closure that a
// serialization failure made run again.
func TestAfterCommit(t *testing.T) {
	t.Parallel()
	pool, _ := pgtest.NewDB(t)
	ctx := context.Background()
	var ran int
	count := func(tx pgx.Tx) { pg.AfterCommit(tx, func() { ran++ }) }

	if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		count(tx)
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	}); err != nil || ran != 1 {
		t.Errorf("committed: err %v, ran %d times; want once", err, ran)
	}

	boom := errors.New("boom")
	if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		count(tx)
		_, _ = tx.Exec(ctx, `SELECT 1`)
		return boom
	}); !errors.Is(err, boom) || ran != 1 {
		t.Errorf("rolled back: err %v, ran %d times in all; want boom and still once", err, ran)
	}

	attempts := 0
	if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		count(tx)
		if attempts++; attempts == 1 {
			_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$`)
			return err
		}
		return nil
	}); err != nil || attempts != 2 || ran != 2 {
		t.Errorf("retried: err %v, %d attempts, ran %d times in all; want 2 attempts and twice", err, attempts, ran)
	}
}
