// Package pg connects to PostgreSQL, runs transactions that retry on
// serialization and deadlock failures, and applies embedded migrations.
//
// Every connection of a pool carries a statement_timeout and a
// lock_timeout (Timeouts), so that no statement and no lock wait holds a
// connection, a lock or a client for long: a stuck query fails with an
// error that IsTimeout recognizes, which the HTTP layer answers with 503
// and a consumer retries later.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Timeouts bound what one statement of a pool's connections may take.
// Zero turns a bound off (PostgreSQL's 0).
type Timeouts struct {
	// Statement is the connections' statement_timeout: the longest a
	// statement may run, lock waits included.
	Statement time.Duration
	// Lock is their lock_timeout: the longest a statement may wait for
	// one lock (a row, a table, an advisory lock).
	Lock time.Duration
}

// DefaultTimeouts are the bounds of a pool that sets none: the services'
// statements take milliseconds, and their batches (a consumer's 32
// messages, a purge's 10,000 rows) well under a second.
var DefaultTimeouts = Timeouts{Statement: 5 * time.Second, Lock: 2 * time.Second}

// WithTimeouts makes t the pool's timeouts, unless the URL sets its own
// statement_timeout or lock_timeout (as a connection parameter), which
// wins, as the URL's pool_max_conns does.
func WithTimeouts(t Timeouts) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) { setTimeouts(c, t) }
}

func setTimeouts(c *pgxpool.Config, t Timeouts) {
	params := c.ConnConfig.RuntimeParams
	for name, d := range map[string]time.Duration{"statement_timeout": t.Statement, "lock_timeout": t.Lock} {
		if _, set := params[name]; !set {
			params[name] = strconv.FormatInt(d.Milliseconds(), 10)
		}
	}
}

// DefaultConnectTimeout bounds opening one connection (the dial, TLS and
// the start-up exchange) unless the URL sets connect_timeout. pgxpool
// opens connections in the background and waits 2 minutes by default, and
// a connection opened with pgx.ConnectConfig from the pool's config (a
// LISTEN session) for good: a server that accepts but never answers (a
// network black hole) would hold a pool slot, or the session, that long.
const DefaultConnectTimeout = 5 * time.Second

// Connect opens a pool for url and checks that the server answers. Its
// connections get DefaultTimeouts unless an option (WithTimeouts) or the URL
// sets others, and DefaultConnectTimeout unless the URL sets a
// connect_timeout; connections made from the pool's config
// (Pool.Config().ConnConfig) inherit both. It returns an error if the URL
// is malformed or the server cannot be reached before ctx ends.
func Connect(ctx context.Context, url string, opts ...func(*pgxpool.Config)) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("pg: parse url: %w", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	setTimeouts(cfg, DefaultTimeouts)
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pg: open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pg: ping %s: %w", cfg.ConnConfig.Host, err)
	}
	return pool, nil
}

// TxBeginner is what Transact needs: a pool or a single connection.
type TxBeginner interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// maxAttempts bounds retries of serialization and deadlock failures; past it
// the last error is returned so the caller (or the broker) retries later.
const maxAttempts = 12

// Transact runs fn in a transaction and commits it when fn returns nil. The
// transaction's BEGIN travels with its first statement. When
// the transaction fails with a serialization failure (40001) or a deadlock
// (40P01) the whole closure runs again with a short jittered backoff, so fn
// must have no effects outside tx. It returns fn's error, or the commit error.
func Transact(ctx context.Context, db TxBeginner, fn func(pgx.Tx) error) error {
	return TransactOpts(ctx, db, pgx.TxOptions{}, fn)
}

// TransactOpts is Transact with explicit transaction options (isolation level).
func TransactOpts(ctx context.Context, db TxBeginner, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = transactOnce(ctx, db, opts, fn)
		if err == nil || !Retryable(err) || attempt == maxAttempts {
			return err
		}
		// Full jitter over an exponentially growing window (1 ms doubling to
		// 1 s): transactions that collided spread apart instead of
		// colliding again in step. A window that stopped at 128 ms left a
		// hot row's eighth contender losing twelve times in a row about
		// once in six runs of TestTransactRetriesSerializationFailures
		// under -race; a loser now waits about 2 s in all at worst.
		window := time.Millisecond << min(attempt-1, 10)
		backoff := rand.N(window) + 100*time.Microsecond //nolint:gosec // jitter, not security
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

func transactOnce(ctx context.Context, db TxBeginner, opts pgx.TxOptions, fn func(pgx.Tx) error) (err error) {
	tx := &lazyTx{db: db, opts: opts}
	defer func() {
		if err != nil {
			// The rollback error is secondary: the connection is released either way.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if err = fn(tx); err != nil {
		return err
	}
	if err = tx.Commit(ctx); err != nil {
		return fmt.Errorf("pg: commit: %w", err)
	}
	return nil
}

// Retryable reports whether err is a serialization failure or a deadlock,
// after which the same transaction may succeed when run again.
func Retryable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// IsTimeout reports whether err is a statement that PostgreSQL cancelled
// (57014: statement_timeout, or a cancel request, which pgx sends when the
// caller's context ends) or a lock wait that timed out (55P03:
// lock_timeout). The work was not done and nothing was changed: the same
// request may succeed later, when the database is less busy.
func IsTimeout(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "57014" || pgErr.Code == "55P03")
}

// IsUnavailable reports whether err says the database could not be
// reached or went away under the statement: a refused or failed connect,
// a connection reset or closed mid-statement, or the server shutting down,
// restarting or out of connection slots (SQLSTATE class 08, 57P01–57P03,
// 53300). Whether a COMMIT that met it took effect is unknown; a request
// carrying an idempotency key finds out by being sent again, which is what
// the 503 it turns into asks for.
func IsUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", "53300":
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, pgconn.ErrConnClosed)
}

// IsUniqueViolation reports whether err is a unique constraint violation (23505).
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}
