package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/services/notification/status"
)

// CountByStatus returns how many orders the service knows in each status
// (statuses without orders are left out). It counts the whole table, so
// its cost grows with the orders kept (NOTIFICATION_RETENTION): the
// dashboard calls it every few seconds, and only while someone watches.
func (s *Store) CountByStatus(ctx context.Context) (map[string]int64, error) {
	const q = `SELECT status, count(*) FROM order_status GROUP BY status`
	rows, err := s.pool.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("postgres: count orders by status: %w", err)
	}
	out := map[string]int64{}
	var (
		st string
		n  int64
	)
	_, err = pgx.ForEachRow(rows, []any{&st, &n}, func() error {
		out[st] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: count orders by status: %w", err)
	}
	return out, nil
}

// LatestChanges returns the n most recent statuses of any order, newest
// first (by their time, then seq), without customer ids. It walks
// status_feed_at backwards.
func (s *Store) LatestChanges(ctx context.Context, n int) ([]status.Change, error) {
	const q = `
SELECT order_id::text, seq, status, coalesce(reason, ''), at FROM status_feed
ORDER BY at DESC, seq DESC LIMIT $1`
	rows, err := s.pool.Query(ctx, q, n)
	if err != nil {
		return nil, fmt.Errorf("postgres: latest changes: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (status.Change, error) {
		var c status.Change
		err := r.Scan(&c.OrderID, &c.Seq, &c.Status, &c.Reason, &c.At)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: latest changes: %w", err)
	}
	return out, nil
}

// PlacedPerSecond returns how many orders were placed (their seq 1) in
// each second of [from, to), keyed by Unix second; seconds without orders
// are left out.
func (s *Store) PlacedPerSecond(ctx context.Context, from, to time.Time) (map[int64]int64, error) {
	const q = `
SELECT extract(epoch FROM date_trunc('second', at))::bigint, count(*) FROM status_feed
WHERE at >= $1 AND at < $2 AND seq = 1 GROUP BY 1`
	rows, err := s.pool.Query(ctx, q, from, to)
	if err != nil {
		return nil, fmt.Errorf("postgres: orders placed per second: %w", err)
	}
	out := map[int64]int64{}
	var sec, n int64
	_, err = pgx.ForEachRow(rows, []any{&sec, &n}, func() error {
		out[sec] = n
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: orders placed per second: %w", err)
	}
	return out, nil
}
