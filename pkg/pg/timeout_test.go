package pg_test

import (
	"context"
	"errors"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

// mustConnect opens a pool on url with opts, closed when tb ends.
func mustConnect(tb testing.TB, url string, opts ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	pool, err := pg.Connect(context.Background(), url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func show(tb testing.TB, pool *pgxpool.Pool, setting string) string {
	tb.Helper()
	var v string
	if err := pool.QueryRow(context.Background(), "SHOW "+setting).Scan(&v); err != nil {
		tb.Fatal(err)
	}
	return v
}

// Every pool's connections carry a statement and a lock timeout: the
// defaults, those the service configures, or those of the URL.
func TestConnectSetsTimeouts(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewDB(t)
	for _, tt := range []struct {
		name          string
		url           string
		opts          []func(*pgxpool.Config)
		stmt, lockout string
	}{
		{"defaults", url, nil, "5s", "2s"},
		{"configured", url, []func(*pgxpool.Config){pg.WithTimeouts(pg.Timeouts{Statement: 1500 * time.Millisecond, Lock: 250 * time.Millisecond})}, "1500ms", "250ms"},
		{"turned off", url, []func(*pgxpool.Config){pg.WithTimeouts(pg.Timeouts{})}, "0", "0"},
		{"the URL's win", url + "&statement_timeout=7000&lock_timeout=3000", []func(*pgxpool.Config){pg.WithTimeouts(pg.Timeouts{Statement: time.Second, Lock: time.Second})}, "7s", "3s"},
	} {
		pool := mustConnect(t, tt.url, tt.opts...)
		// Every connection, not just the first: hold several at once.
		var conns []*pgxpool.Conn
		for range 3 {
			c, err := pool.Acquire(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			var stmt, lock string
			if err := c.QueryRow(context.Background(), "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&stmt, &lock); err != nil {
				t.Fatal(err)
			}
			if stmt != tt.stmt || lock != tt.lockout {
				t.Errorf("%s: statement_timeout %s, lock_timeout %s; want %s and %s", tt.name, stmt, lock, tt.stmt, tt.lockout)
			}
			c.Release()
		}
	}
}

func TestStatementTimeout(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewDB(t)
	pool := mustConnect(t, url, pg.WithTimeouts(pg.Timeouts{Statement: 100 * time.Millisecond, Lock: 50 * time.Millisecond}))
	start := time.Now()
	_, err := pool.Exec(context.Background(), "SELECT pg_sleep(5)")
	took := time.Since(start)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || !pg.IsTimeout(err) {
		t.Fatalf("pg_sleep(5) = %v, want a statement timeout (57014) that IsTimeout recognizes", err)
	}
	if took > 2*time.Second {
		t.Errorf("the statement ran %v, want it cancelled after about 100ms", took)
	}
	// The connection is fine afterwards.
	if err := pool.Ping(context.Background()); err != nil {
		t.Errorf("ping after the timeout: %v", err)
	}
}

// A row another transaction holds makes a writer wait no longer than the
// lock timeout.
func TestLockTimeout(t *testing.T) {
	t.Parallel()
	holder, url := pgtest.NewDB(t)
	ctx := context.Background()
	if _, err := holder.Exec(ctx, "CREATE TABLE r (id int PRIMARY KEY, n int); INSERT INTO r VALUES (1, 0)"); err != nil {
		t.Fatal(err)
	}
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT * FROM r WHERE id = 1 FOR UPDATE"); err != nil {
		t.Fatal(err)
	}

	const bound = 300 * time.Millisecond
	pool := mustConnect(t, url, pg.WithTimeouts(pg.Timeouts{Statement: 10 * time.Second, Lock: bound}))
	start := time.Now()
	err = pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE r SET n = n + 1 WHERE id = 1")
		return err
	})
	took := time.Since(start)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || !pg.IsTimeout(err) {
		t.Fatalf("update of a locked row = %v, want a lock timeout (55P03) that IsTimeout recognizes", err)
	}
	if took < bound || took > bound+2*time.Second {
		t.Errorf("waited %v for the lock, want about %v", took, bound)
	}
	// An advisory lock wait (the payment service's) is bounded the same way.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(42)"); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_advisory_xact_lock(42)"); !pg.IsTimeout(err) {
		t.Errorf("advisory lock wait = %v, want a lock timeout", err)
	}
}

// Migrations may rightly outlast the pool's statement timeout (an index
// built on a large table), so they run without it.
func TestMigrateIgnoresTheStatementTimeout(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewDB(t)
	pool := mustConnect(t, url, pg.WithTimeouts(pg.Timeouts{Statement: 50 * time.Millisecond, Lock: 50 * time.Millisecond}))
	slow := pg.Migration{Table: "goose_slow", FS: fstest.MapFS{
		"00001_slow.sql": {Data: []byte("-- +goose Up\nSELECT pg_sleep(0.3);\nCREATE TABLE slow (n int);\n-- +goose Down\nDROP TABLE slow;\n")},
	}}
	if err := pg.Migrate(context.Background(), pool, slow); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got := show(t, pool, "statement_timeout"); got != "50ms" {
		t.Errorf("the pool's statement_timeout is %s after migrating, want 50ms", got)
	}
	if _, err := pool.Exec(context.Background(), "SELECT pg_sleep(1)"); !pg.IsTimeout(err) {
		t.Errorf("pg_sleep(1) on the pool after migrating = %v, want a timeout", err)
	}
}

// A database that cannot be reached, or that ends the connection under a
// statement, is told apart from a bad statement: the HTTP layer answers
// the first with 503 and Retry-After, the second with 500.
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	_, url := pgtest.NewDB(t)
	pool := mustConnect(t, url)
	ctx := context.Background()

	// Nothing listens on port 1.
	cfg, err := pgx.ParseConfig("postgres://postgres@127.0.0.1:1/postgres?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pgx.ConnectConfig(ctx, cfg); !pg.IsUnavailable(err) {
		t.Errorf("connect to a closed port = %v, want IsUnavailable", err)
	}

	// The server ends the connection (as a restart does): the statement
	// on it fails with 57P01, or with the connection gone.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); !pg.IsUnavailable(err) {
		t.Errorf("statement on a terminated connection = %v, want IsUnavailable", err)
	}

	// Refusals of the statement itself are not.
	if _, err := pool.Exec(ctx, "SELECT * FROM no_such_table"); err == nil || pg.IsUnavailable(err) {
		t.Errorf("missing table = %v, want an error that is not IsUnavailable", err)
	}
	if pg.IsUnavailable(errors.New("order not found")) {
		t.Error("a plain error is IsUnavailable")
	}
}
