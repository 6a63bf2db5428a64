package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/order/order"
)

// Facts are what a message tells about an order besides the event itself.
type Facts struct {
	// Owner, when set, restricts the transition to that customer's order;
	// another customer's order is ErrNotFound.
	Owner string
	// PaymentID is the authorized payment (PaymentAuthorized).
	PaymentID string
}

// Apply runs the transition of event on order id in its own transaction (a
// customer's cancel, an admin's ship or deliver) and returns the order
// after it, with its items. It returns an error matching order.ErrNotFound
// for an unknown id (or another customer's order, with f.Owner set), and
// order.ErrInvalidTransition (and, for a cancel, order.ErrNotCancellable)
// when the order's status does not allow event.
func (s *Store) Apply(ctx context.Context, id string, event order.Event, f Facts) (order.Order, error) {
	var o order.Order
	err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		rs, err := s.ApplyTx(ctx, tx, Step{OrderID: id, Event: event, Facts: f})
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

// Step is one event for one order, with what its message tells.
type Step struct {
	OrderID string
	Event   order.Event
	Facts   Facts
}

// Result is what a step did: the order after it (without items) and the
// transition, or, in Err, why the step did nothing: an error matching
// order.ErrNotFound (an unknown id, another customer's order with Owner
// set) or order.ErrInvalidTransition (and, for a cancel,
// order.ErrNotCancellable) when the order's status does not allow the
// event.
type Result struct {
	Order      order.Order
	Transition order.Transition
	Err        error
}

// ApplyTx runs steps in order inside tx, set-wise: it loads and locks
// their orders (in id order, as every transaction here locks them), moves
// each order through its steps in memory by the state machine
// (order.Order.Apply), and then writes, in one round trip, the orders that
// changed, their history entries, and the events of every transition
// (OrderStatusChanged, OrderCancelled and the transitions' commands) to the
// outbox. A compensation (a transition that keeps the status) writes only
// its commands. It returns one Result per step, and an error only when the
// database fails (the caller then rolls back).
func (s *Store) ApplyTx(ctx context.Context, tx pgx.Tx, steps ...Step) ([]Result, error) {
	results := make([]Result, len(steps))
	ids := make([]uuid.UUID, 0, len(steps))
	for i, st := range steps {
		id, err := uuid.Parse(st.OrderID)
		if err != nil {
			results[i].Err = fmt.Errorf("%s order %q: %w", st.Event, st.OrderID, order.ErrNotFound)
			continue
		}
		ids = append(ids, id)
	}
	orders, err := lockOrders(ctx, tx, ids)
	if err != nil {
		return nil, err
	}
	now := s.clock()
	var (
		changed []string // ids of orders to write, in first-change order
		history []order.Order
		events  []outbox.Event
	)
	for i, st := range steps {
		if results[i].Err != nil {
			continue
		}
		o, ok := orders[st.OrderID]
		if !ok || (st.Facts.Owner != "" && o.CustomerID != st.Facts.Owner) {
			results[i].Err = fmt.Errorf("%s order %s: %w", st.Event, st.OrderID, order.ErrNotFound)
			continue
		}
		next, t, evs, err := o.Apply(st.Event, st.Facts.PaymentID, now, s.timeouts)
		results[i] = Result{Order: next, Transition: t}
		if err != nil {
			results[i].Err = fmt.Errorf("order %s: %w", st.OrderID, err)
			continue
		}
		if t.Changes() {
			history = append(history, next)
		}
		if (t.Changes() || next.PaymentID != o.PaymentID) && !slices.Contains(changed, st.OrderID) {
			changed = append(changed, st.OrderID)
		}
		events = append(events, evs...)
		orders[st.OrderID] = next
	}
	b := &pgx.Batch{}
	queueOrderUpdates(b, changed, orders)
	queueHistory(b, history)
	if err := outbox.Queue(ctx, b, events...); err != nil {
		return nil, err
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return nil, fmt.Errorf("save transitions: %w", err)
		}
	}
	return results, nil
}

// lockOrders reads and locks the orders with ids, in id order, keyed by id.
func lockOrders(ctx context.Context, tx pgx.Tx, ids []uuid.UUID) (map[string]order.Order, error) {
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

// queueOrderUpdates queues the write of the orders with ids (their state
// after the steps) on b.
func queueOrderUpdates(b *pgx.Batch, ids []string, orders map[string]order.Order) {
	if len(ids) == 0 {
		return
	}
	n := len(ids)
	statuses, reasons, paymentIDs := make([]string, n), make([]string, n), make([]string, n)
	versions, deadlines, updated := make([]int64, n), make([]*time.Time, n), make([]time.Time, n)
	for i, id := range ids {
		o := orders[id]
		statuses[i], reasons[i], paymentIDs[i] = string(o.Status), string(o.Reason), o.PaymentID
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

// IsIgnorable reports whether err from ApplyTx means the message does not
// apply to the order (a duplicate or late message, or an order this service
// never stored) and should be acknowledged without effects.
func IsIgnorable(err error) bool {
	return errors.Is(err, order.ErrInvalidTransition) || errors.Is(err, order.ErrNotFound)
}

// SweepDeadlines cancels, with reason timeout, pending and reserved orders
// whose deadline passed, up to batch per transaction, until none is left.
// Rows another sweeper (or a request) holds are skipped; they are taken at
// the next sweep if still due. It returns how many orders it cancelled.
func (s *Store) SweepDeadlines(ctx context.Context, batch int) (int, error) {
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
			rows, err := tx.Query(ctx, q, s.clock(), batch)
			if err != nil {
				return fmt.Errorf("sweep deadlines: %w", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil || len(ids) == 0 {
				return err
			}
			steps := make([]Step, len(ids))
			for i, id := range ids {
				steps[i] = Step{OrderID: id.String(), Event: order.EventTimeout}
			}
			results, err := s.ApplyTx(ctx, tx, steps...)
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
// orders waiting in each step (a step's deadline is when it began plus its
// timeout). It skips the skip orders that have waited longest in each step,
// so that a few orders stuck in a delayed retry do not count as a backlog.
func (s *Store) Backlog(ctx context.Context, skip int) (order.Backlog, error) {
	const q = `
SELECT
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'pending' ORDER BY deadline_at OFFSET $1 LIMIT 1),
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'reserved' ORDER BY deadline_at OFFSET $1 LIMIT 1)`
	var reserve, payment *time.Time
	if err := s.pool.QueryRow(ctx, q, skip).Scan(&reserve, &payment); err != nil {
		return order.Backlog{}, fmt.Errorf("saga backlog: %w", err)
	}
	now := s.clock()
	waited := func(deadline *time.Time, timeout time.Duration) time.Duration {
		if deadline == nil {
			return 0
		}
		return max(0, now.Sub(deadline.Add(-timeout)))
	}
	return order.Backlog{Reserve: waited(reserve, s.timeouts.Reserve), Payment: waited(payment, s.timeouts.Payment)}, nil
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
