package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/order/order"
)

// LockOrders reads and locks in tx the orders steps name, in id order (as
// every transaction here locks them), keyed by id, for the domain to run
// the steps on (order.ApplySteps) and Save to write what it decided. An id
// that is not a UUID names no order.
func (s *Store) LockOrders(ctx context.Context, tx pgx.Tx, steps ...order.Step) (map[string]order.Order, error) {
	ids := make([]uuid.UUID, 0, len(steps))
	for _, st := range steps {
		if id, err := uuid.Parse(st.OrderID); err == nil {
			ids = append(ids, id)
		}
	}
	rows, err := tx.Query(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = ANY($1) ORDER BY id FOR UPDATE`, ids)
	if err != nil {
		return nil, fmt.Errorf("lock orders: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (order.Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, fmt.Errorf("lock orders: %w", err)
	}
	out := make(map[string]order.Order, len(list))
	for _, o := range list {
		out[o.ID] = o
	}
	return out, nil
}

// Save writes in tx, in one round trip, what a run of steps decided on
// orders LockOrders locked: the orders that changed, their history entries
// and the events of every transition to the outbox. Once tx commits, the
// steps' timings go to Metrics.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, out order.Outcome) error {
	if len(out.Timings) > 0 && s.Metrics != nil {
		pg.AfterCommit(tx, func() { s.Metrics.Record(ctx, out.Timings) })
	}
	b := &pgx.Batch{}
	queueOrderUpdates(b, out.Changed)
	queueHistory(b, out.Entered)
	if err := outbox.Queue(ctx, b, out.Events...); err != nil {
		return err
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("save transitions: %w", err)
		}
	}
	return nil
}

// run locks the orders of steps, has the domain run the steps with t and
// saves the outcome, in tx. It returns a Result per step.
func (s *Store) run(ctx context.Context, tx pgx.Tx, t order.Timeouts, steps ...order.Step) ([]order.Result, error) {
	orders, err := s.LockOrders(ctx, tx, steps...)
	if err != nil {
		return nil, err
	}
	out, err := order.ApplySteps(orders, steps, s.Now(), t)
	if err != nil {
		return nil, err
	}
	if err := s.Save(ctx, tx, out); err != nil {
		return nil, err
	}
	return out.Results, nil
}

// Transition runs step with t in its own transaction (a customer's cancel,
// an admin's ship or deliver) and returns the order after it, with its
// items. It returns the step's order.Result error when the step does not
// apply: one matching order.ErrNotFound for an unknown order (or another
// customer's, with step.Owner set), or order.ErrInvalidTransition (and, for
// a cancel, order.ErrNotCancellable) when the order's status does not allow
// the event.
func (s *Store) Transition(ctx context.Context, t order.Timeouts, step order.Step) (order.Order, error) {
	var o order.Order
	err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		rs, err := s.run(ctx, tx, t, step)
		if err != nil {
			return err
		}
		if o = rs[0].Order; rs[0].Err != nil {
			return rs[0].Err
		}
		return loadItems(ctx, tx, []*order.Order{&o})
	})
	return o, err
}

// queueOrderUpdates queues the write of orders (their state after the
// steps) on b.
func queueOrderUpdates(b *pgx.Batch, orders []order.Order) {
	if len(orders) == 0 {
		return
	}
	n := len(orders)
	ids, statuses, reasons, paymentIDs := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	versions, deadlines, updated := make([]int64, n), make([]*time.Time, n), make([]time.Time, n)
	for i, o := range orders {
		ids[i], statuses[i], reasons[i], paymentIDs[i] = o.ID, string(o.Status), string(o.Reason), o.PaymentID
		versions[i], deadlines[i], updated[i] = o.Version, o.DeadlineAt, o.UpdatedAt
	}
	const q = `
UPDATE orders o SET status = u.status, reason = u.reason, version = u.version, deadline_at = u.deadline_at,
    updated_at = u.updated_at, payment_id = u.payment_id
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[], $6::timestamptz[], $7::text[])
    AS u(id, status, reason, version, deadline_at, updated_at, payment_id)
WHERE o.id = u.id`
	b.Queue(q, ids, statuses, reasons, versions, deadlines, updated, paymentIDs)
}

// queueHistory queues the history entries of orders (each in the status it
// reached) on b.
func queueHistory(b *pgx.Batch, orders []order.Order) {
	if len(orders) == 0 {
		return
	}
	n := len(orders)
	ids, statuses, reasons := make([]string, n), make([]string, n), make([]string, n)
	seqs, ats := make([]int64, n), make([]time.Time, n)
	for i, o := range orders {
		ids[i], statuses[i], reasons[i], seqs[i], ats[i] = o.ID, string(o.Status), string(o.Reason), o.Version, o.UpdatedAt
	}
	const q = `
INSERT INTO order_history (order_id, seq, status, reason, at)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[])`
	b.Queue(q, ids, seqs, statuses, reasons, ats)
}

// SweepDeadlines cancels, with reason timeout, pending and reserved orders
// whose deadline passed, up to batch per transaction, until none is left.
// Rows another sweeper (or a request) holds are skipped; they are taken at
// the next sweep if still due. It returns how many orders it cancelled.
func (s *Store) SweepDeadlines(ctx context.Context, t order.Timeouts, batch int) (int, error) {
	total := 0
	for {
		n := 0
		err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
			n = 0
			const q = `
SELECT id FROM orders
WHERE deadline_at IS NOT NULL AND deadline_at < $1 AND status IN ('pending', 'reserved')
ORDER BY deadline_at
LIMIT $2
FOR UPDATE SKIP LOCKED`
			rows, err := tx.Query(ctx, q, s.Now(), batch)
			if err != nil {
				return fmt.Errorf("sweep deadlines: %w", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil || len(ids) == 0 {
				return err
			}
			steps := make([]order.Step, len(ids))
			for i, id := range ids {
				steps[i] = order.Step{OrderID: id.String(), Event: order.EventTimeout}
			}
			results, err := s.run(ctx, tx, t, steps...)
			if err != nil {
				return err
			}
			for _, r := range results {
				if r.Err != nil {
					return r.Err
				}
			}
			n = len(ids)
			return nil
		})
		total += n
		if err != nil || n < batch {
			return total, err
		}
	}
}

// Backlog measures how far behind the saga is, from the deadlines of the
// orders waiting in each step and the timeouts t that set them
// (order.Timeouts.Backlog). It skips the skip orders that have waited
// longest in each step, so that a few orders stuck in a delayed retry do
// not count as a backlog.
func (s *Store) Backlog(ctx context.Context, t order.Timeouts, skip int) (order.Backlog, error) {
	const q = `
SELECT
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'pending' ORDER BY deadline_at OFFSET $1 LIMIT 1),
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'reserved' ORDER BY deadline_at OFFSET $1 LIMIT 1)`
	var reserve, payment *time.Time
	if err := s.pool.QueryRow(ctx, q, skip).Scan(&reserve, &payment); err != nil {
		return order.Backlog{}, fmt.Errorf("saga backlog: %w", err)
	}
	return t.Backlog(s.Now(), reserve, payment), nil
}

// RecordRefund notes in tx that order id's payment was refunded at. It
// changes neither status nor version; an unknown order is ignored.
func (s *Store) RecordRefund(ctx context.Context, tx pgx.Tx, id string, at time.Time) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return nil // not an order of ours: nothing to record
	}
	if _, err := tx.Exec(ctx, `UPDATE orders SET refunded_at = $2 WHERE id = $1`, uid, at); err != nil {
		return fmt.Errorf("record refund of order %s: %w", id, err)
	}
	return nil
}
