// Package postgres stores what the notification service knows about orders:
// the latest status of each (order_status) and every status it went through
// (status_feed). All replicas of the service share these tables, which is
// what lets a shopper reconnect to any replica and lose nothing.
package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/notification/status"
)

// Migration is the service's migration set. It has no outbox and no inbox:
// the service publishes nothing, and every write is idempotent by (order,
// seq), so a redelivered message needs no record of having been handled.
var Migration = pg.Migration{FS: migrations.Of("notification"), Table: "goose_notification"}

// Store reads and writes the status tables.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool, whose database has Migration
// applied.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Save records changes in tx with one statement, idempotently: the feed
// keeps the first copy of each (order, seq), and an order's latest status
// moves only to a higher seq, so a redelivered or late change leaves both as
// they were. It returns how many orders' latest status moved, or the
// database's error (nothing is then written once tx rolls back).
//
// Each change the statement newly adds to the feed is also announced on
// Channel (pg_notify, in (order, seq) order; see notificationPayload):
// PostgreSQL delivers the announcements only when tx commits, and never for
// a change that was already stored, so every Listener hears of each stored
// change once. That is how every replica learns of the changes any replica
// stores.
//
// Rows are written in (order, seq) order, so two replicas applying
// overlapping batches lock them in the same order and cannot deadlock on
// each other.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, changes ...status.Change) (moved int64, err error) {
	cs := slices.Clone(changes)
	slices.SortFunc(cs, func(a, b status.Change) int {
		return cmp.Or(strings.Compare(a.OrderID, b.OrderID), cmp.Compare(a.Seq, b.Seq))
	})
	// One copy of each (order, seq): a batch may hold the same change from
	// both queues.
	cs = slices.CompactFunc(cs, func(a, b status.Change) bool { return a.OrderID == b.OrderID && a.Seq == b.Seq })
	n := len(cs)
	ids, customers, statuses, reasons := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	seqs, ats, traces := make([]int64, n), make([]time.Time, n), make([]string, n)
	for i, c := range cs {
		ids[i], customers[i], statuses[i], reasons[i], seqs[i], ats[i] = c.OrderID, c.CustomerID, c.Status, c.Reason, c.Seq, c.At
		traces[i] = c.Traceparent
	}
	// The latest status takes the highest seq of each order in the batch:
	// one statement may not update a row twice. announced is joined (it is
	// one row) only so that it runs: a CTE that nothing reads is skipped
	// unless it modifies data. Its subquery sorts the new feed rows, whose
	// RETURNING order is not guaranteed, so that they are announced in
	// (order, seq) order.
	const q = `
WITH c AS (
  SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[])
    WITH ORDINALITY AS c(order_id, seq, status, reason, at, customer_id, traceparent, n)),
feed AS (
  INSERT INTO status_feed (order_id, seq, status, reason, at)
  SELECT order_id, seq, status, NULLIF(reason, ''), at FROM c ORDER BY n
  ON CONFLICT (order_id, seq) DO NOTHING
  RETURNING order_id, seq, status, reason, at),
announced AS (
  SELECT count(pg_notify('` + Channel + `', ` + notificationPayload + `)) AS n
  FROM (SELECT feed.*, NULLIF(c.traceparent, '') AS traceparent
        FROM feed JOIN c USING (order_id, seq) ORDER BY order_id, seq) f)
INSERT INTO order_status AS s (order_id, customer_id, status, reason, seq, at)
SELECT DISTINCT ON (order_id) order_id, customer_id, status, NULLIF(reason, ''), seq, at
FROM c CROSS JOIN announced ORDER BY order_id, seq DESC
ON CONFLICT (order_id) DO UPDATE
SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, reason = EXCLUDED.reason,
    seq = EXCLUDED.seq, at = EXCLUDED.at, updated_at = now()
WHERE s.seq < EXCLUDED.seq`
	tag, err := tx.Exec(ctx, q, ids, seqs, statuses, reasons, ats, customers, traces)
	if err != nil {
		return 0, fmt.Errorf("postgres: apply %d changes: %w", n, err)
	}
	return tag.RowsAffected(), nil
}

// Current returns the latest status of order id, with its customer. It
// returns status.ErrUnknownOrder when the service has not heard of the order.
func (s *Store) Current(ctx context.Context, id string) (status.Change, error) {
	const q = `SELECT customer_id, status, coalesce(reason, ''), seq, at FROM order_status WHERE order_id = $1`
	c := status.Change{OrderID: id}
	err := s.pool.QueryRow(ctx, q, id).Scan(&c.CustomerID, &c.Status, &c.Reason, &c.Seq, &c.At)
	if errors.Is(err, pgx.ErrNoRows) {
		return status.Change{}, status.ErrUnknownOrder
	}
	if err != nil {
		return status.Change{}, fmt.Errorf("postgres: current status of %s: %w", id, err)
	}
	return c, nil
}

// Since returns the statuses of order id with a seq above since, oldest
// first (no customer id: the feed does not repeat it). An unknown order
// has none.
func (s *Store) Since(ctx context.Context, id string, since int64) ([]status.Change, error) {
	const q = `
SELECT seq, status, coalesce(reason, ''), at FROM status_feed
WHERE order_id = $1 AND seq > $2 ORDER BY seq`
	rows, err := s.pool.Query(ctx, q, id, since)
	if err != nil {
		return nil, fmt.Errorf("postgres: feed of %s since %d: %w", id, since, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (status.Change, error) {
		c := status.Change{OrderID: id}
		err := r.Scan(&c.Seq, &c.Status, &c.Reason, &c.At)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: feed of %s since %d: %w", id, since, err)
	}
	return out, nil
}

// PurgeFinished deletes orders that reached delivered or cancelled more
// than retention ago, with their feed, a chunk at a time. It returns how
// many orders it deleted.
func (s *Store) PurgeFinished(ctx context.Context, retention time.Duration) (int64, error) {
	const q = `
WITH gone AS (
  DELETE FROM order_status WHERE order_id IN (
    SELECT order_id FROM order_status
    WHERE status IN ('delivered', 'cancelled') AND updated_at < now() - $1::interval
    LIMIT 1000)
  RETURNING order_id)
, feed AS (DELETE FROM status_feed WHERE order_id IN (SELECT order_id FROM gone))
SELECT count(*) FROM gone`
	var total int64
	for {
		var n int64
		if err := s.pool.QueryRow(ctx, q, retention).Scan(&n); err != nil {
			return total, fmt.Errorf("postgres: purge finished orders: %w", err)
		}
		total += n
		if n < 1000 {
			return total, nil
		}
	}
}
