package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/inventory/stock"
)

// Change is what a saga step did to an order's reservation.
type Change struct {
	// Status is the reservation's status after the step.
	Status stock.Status
	// Lines are the units the step moved: reserved, committed or released
	// (empty when it moved none).
	Lines []stock.Line
	// Shortages are the lines that could not be reserved (rejected only).
	Shortages []stock.Shortage
	// Applied is false when the step found nothing to do: a duplicate
	// OrderPlaced, a commit of a committed reservation, a release of a
	// released or rejected one. Nothing is written and no event published.
	Applied bool
}

// Reserve holds every line of an order or none (docs/saga.md, step 2), inside
// tx, the consumer's inbox transaction. When the order already has a
// reservation row (held, final, or a release tombstone) it does nothing.
// Otherwise it reserves the lines in SKU order, each with a conditional
// UPDATE that checks stock - reserved; if any line falls short, the updates
// are rolled back to a savepoint and the reservation is recorded as rejected.
// Either way it writes StockReserved or StockRejected to the outbox. Stock
// moved by orders publishes no product event: the catalog replica needs
// names and prices only.
//
// A zero expiresAt holds the units for DefaultHold. It returns an error
// matching stock.ErrInvalid for lines NormalizeLines refuses.
func (s *Store) Reserve(ctx context.Context, tx pgx.Tx, orderID uuid.UUID, lines []stock.Line, expiresAt time.Time) (Change, error) {
	lines, err := stock.NormalizeLines(lines)
	if err != nil {
		return Change{}, err
	}
	if expiresAt.IsZero() {
		expiresAt = time.Now().Add(DefaultHold)
	}
	// The primary key serializes a reservation racing a release of the
	// same order: whichever inserts first wins, the other sees its row.
	const insert = `INSERT INTO reservations (order_id, status, expires_at) VALUES ($1, 'reserved', $2) ON CONFLICT DO NOTHING`
	tag, err := tx.Exec(ctx, insert, orderID, expiresAt)
	if err != nil {
		return Change{}, fmt.Errorf("reserve %s: %w", orderID, err)
	}
	if tag.RowsAffected() == 0 {
		return Change{}, nil
	}
	skus, qtys := make([]string, len(lines)), make([]int32, len(lines))
	for i, l := range lines {
		skus[i], qtys[i] = l.SKU, l.Quantity
	}
	const insertLines = `INSERT INTO reservation_lines (order_id, sku, quantity) SELECT $1, * FROM unnest($2::text[], $3::int[])`
	if _, err := tx.Exec(ctx, insertLines, orderID, skus, qtys); err != nil {
		return Change{}, fmt.Errorf("reserve %s: lines: %w", orderID, err)
	}

	shortages, err := holdLines(ctx, tx, lines)
	if err != nil {
		return Change{}, fmt.Errorf("reserve %s: %w", orderID, err)
	}
	now := time.Now()
	if len(shortages) > 0 {
		const reject = `UPDATE reservations SET status = 'rejected', expires_at = NULL, updated_at = now() WHERE order_id = $1`
		if _, err := tx.Exec(ctx, reject, orderID); err != nil {
			return Change{}, fmt.Errorf("reserve %s: reject: %w", orderID, err)
		}
		ev, err := stockRejected(orderID, shortages, now)
		if err != nil {
			return Change{}, err
		}
		if err := outbox.Add(ctx, tx, ev); err != nil {
			return Change{}, err
		}
		return Change{Status: stock.StatusRejected, Shortages: shortages, Applied: true}, nil
	}
	ev, err := stockReserved(orderID, lines, now)
	if err != nil {
		return Change{}, err
	}
	if err := outbox.Add(ctx, tx, ev); err != nil {
		return Change{}, err
	}
	return Change{Status: stock.StatusReserved, Lines: lines, Applied: true}, nil
}

// LockProducts locks, in SKU order and until tx ends, the products named in
// skus and those held by the reservations of orders. A transaction that
// applies several saga steps calls it first: each step locks its own lines
// in SKU order, but two batches of steps would otherwise lock the products
// of one step after another's and could wait for each other in a cycle.
func (s *Store) LockProducts(ctx context.Context, tx pgx.Tx, skus []string, orders []uuid.UUID) error {
	const q = `
SELECT sku FROM products
WHERE sku IN (SELECT unnest($1::text[]) UNION SELECT sku FROM reservation_lines WHERE order_id = ANY($2))
ORDER BY sku
FOR UPDATE`
	if _, err := tx.Exec(ctx, q, skus, orders); err != nil {
		return fmt.Errorf("lock products: %w", err)
	}
	return nil
}

// holdLines reserves lines (sorted by SKU) inside a savepoint of tx. When
// every line fits it releases the savepoint and returns no shortage;
// otherwise it rolls the savepoint back, so nothing stays held, and returns
// every shortage.
func holdLines(ctx context.Context, tx pgx.Tx, lines []stock.Line) ([]stock.Shortage, error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("savepoint: %w", err)
	}
	defer func() { _ = sp.Rollback(ctx) }() // a no-op once released
	const hold = `UPDATE products SET reserved = reserved + $2, updated_at = now() WHERE sku = $1 AND stock - reserved >= $2`
	const available = `SELECT coalesce((SELECT stock - reserved FROM products WHERE sku = $1), 0)`
	var shortages []stock.Shortage
	for _, l := range lines {
		tag, err := sp.Exec(ctx, hold, l.SKU, l.Quantity)
		if err != nil {
			return nil, fmt.Errorf("hold %s: %w", l.SKU, err)
		}
		if tag.RowsAffected() == 1 {
			continue
		}
		// Keep going: the order learns about every short line at once.
		short := stock.Shortage{SKU: l.SKU, Requested: l.Quantity}
		if err := sp.QueryRow(ctx, available, l.SKU).Scan(&short.Available); err != nil {
			return nil, fmt.Errorf("available %s: %w", l.SKU, err)
		}
		shortages = append(shortages, short)
	}
	if len(shortages) > 0 {
		if err := sp.Rollback(ctx); err != nil {
			return nil, fmt.Errorf("roll back to savepoint: %w", err)
		}
		return shortages, nil
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, fmt.Errorf("release savepoint: %w", err)
	}
	return nil, nil
}

// Commit takes a held reservation's units off stock and reserved for good
// (docs/saga.md, step 6a), inside tx, and writes ReservationCommitted. Committing a committed reservation does nothing.
// It returns an error matching stock.ErrNoReservation when the order holds
// no reservation, and stock.ErrNotCommittable when it was released or
// rejected: both break the saga and need an operator, not a retry.
func (s *Store) Commit(ctx context.Context, tx pgx.Tx, orderID uuid.UUID) (Change, error) {
	status, err := lockReservation(ctx, tx, orderID)
	if errors.Is(err, pgx.ErrNoRows) {
		return Change{}, fmt.Errorf("commit %s: %w", orderID, stock.ErrNoReservation)
	}
	if err != nil {
		return Change{}, fmt.Errorf("commit %s: %w", orderID, err)
	}
	switch status {
	case stock.StatusReserved:
	case stock.StatusCommitted:
		return Change{Status: status}, nil
	default:
		return Change{}, fmt.Errorf("commit %s (%s): %w", orderID, status, stock.ErrNotCommittable)
	}
	const take = `UPDATE products SET stock = stock - $2, reserved = reserved - $2, updated_at = now() WHERE sku = $1`
	lines, err := moveLines(ctx, tx, orderID, take)
	if err != nil {
		return Change{}, fmt.Errorf("commit %s: %w", orderID, err)
	}
	if err := setStatus(ctx, tx, orderID, stock.StatusCommitted); err != nil {
		return Change{}, fmt.Errorf("commit %s: %w", orderID, err)
	}
	ev, err := reservationCommitted(orderID, lines, time.Now())
	if err != nil {
		return Change{}, err
	}
	if err := outbox.Add(ctx, tx, ev); err != nil {
		return Change{}, err
	}
	return Change{Status: stock.StatusCommitted, Lines: lines, Applied: true}, nil
}

// Release gives an order's units back (docs/saga.md, step 6b), inside tx: a
// held reservation returns its units to available stock, a committed one
// returns them to stock (a confirmed order cancelled before shipping), and
// an order with no reservation yet gets a released tombstone so that a late
// OrderPlaced reserves nothing. It writes ReservationReleased (with the units
// returned, none for a tombstone). Releasing a
// released or rejected reservation does nothing.
func (s *Store) Release(ctx context.Context, tx pgx.Tx, orderID uuid.UUID) (Change, error) {
	const tombstone = `INSERT INTO reservations (order_id, status) VALUES ($1, 'released') ON CONFLICT DO NOTHING`
	tag, err := tx.Exec(ctx, tombstone, orderID)
	if err != nil {
		return Change{}, fmt.Errorf("release %s: %w", orderID, err)
	}
	if tag.RowsAffected() == 1 {
		ev, err := reservationReleased(orderID, nil, time.Now())
		if err != nil {
			return Change{}, err
		}
		if err := outbox.Add(ctx, tx, ev); err != nil {
			return Change{}, err
		}
		return Change{Status: stock.StatusReleased, Applied: true}, nil
	}
	status, err := lockReservation(ctx, tx, orderID)
	if err != nil {
		return Change{}, fmt.Errorf("release %s: %w", orderID, err)
	}
	return release(ctx, tx, orderID, status)
}

// release returns the units of a reservation locked by the caller, whose
// status is status.
func release(ctx context.Context, tx pgx.Tx, orderID uuid.UUID, status stock.Status) (Change, error) {
	const (
		unhold  = `UPDATE products SET reserved = reserved - $2, updated_at = now() WHERE sku = $1`
		restock = `UPDATE products SET stock = stock + $2, updated_at = now() WHERE sku = $1`
	)
	var q string
	switch status {
	case stock.StatusReserved:
		q = unhold
	case stock.StatusCommitted:
		q = restock
	default:
		return Change{Status: status}, nil
	}
	lines, err := moveLines(ctx, tx, orderID, q)
	if err != nil {
		return Change{}, fmt.Errorf("release %s: %w", orderID, err)
	}
	if err := setStatus(ctx, tx, orderID, stock.StatusReleased); err != nil {
		return Change{}, fmt.Errorf("release %s: %w", orderID, err)
	}
	ev, err := reservationReleased(orderID, lines, time.Now())
	if err != nil {
		return Change{}, err
	}
	if err := outbox.Add(ctx, tx, ev); err != nil {
		return Change{}, err
	}
	return Change{Status: stock.StatusReleased, Lines: lines, Applied: true}, nil
}

// ReleaseExpired releases reservations still held past their expires_at
// (docs/saga.md, step 11), one transaction each, skipping those another
// replica or a saga step is working on. It stops after limit and returns how
// many it released.
func (s *Store) ReleaseExpired(ctx context.Context, limit int) (int, error) {
	const pick = `
SELECT order_id FROM reservations
WHERE status = 'reserved' AND expires_at < now()
ORDER BY expires_at
LIMIT 1
FOR UPDATE SKIP LOCKED`
	n := 0
	for n < limit {
		var found bool
		err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
			found = false
			var id uuid.UUID
			err := tx.QueryRow(ctx, pick).Scan(&id)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("pick expired reservation: %w", err)
			}
			found = true
			_, err = release(ctx, tx, id, stock.StatusReserved)
			return err
		})
		if err != nil {
			return n, err
		}
		if !found {
			return n, nil
		}
		n++
	}
	return n, nil
}

// sweepBatch bounds one sweep, so a huge backlog cannot hold the sweeper for
// long between ticks (it continues at the next one).
const sweepBatch = 1000

// ReleaseExpiredEvery runs ReleaseExpired at start and then every interval
// until ctx ends, when it returns nil. A failed sweep is logged and tried
// again at the next tick.
func (s *Store) ReleaseExpiredEvery(ctx context.Context, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.ReleaseExpired(ctx, sweepBatch)
		switch {
		case err != nil && ctx.Err() == nil:
			log.WarnContext(ctx, "reservation sweep failed", "error", err, "released", n)
		case n > 0:
			log.InfoContext(ctx, "expired reservations released", "released", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lockReservation locks an order's reservation row and returns its status,
// or pgx.ErrNoRows when there is none.
func lockReservation(ctx context.Context, tx pgx.Tx, orderID uuid.UUID) (stock.Status, error) {
	var status stock.Status
	err := tx.QueryRow(ctx, `SELECT status FROM reservations WHERE order_id = $1 FOR UPDATE`, orderID).Scan(&status)
	return status, err
}

func setStatus(ctx context.Context, tx pgx.Tx, orderID uuid.UUID, status stock.Status) error {
	const q = `UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1`
	if _, err := tx.Exec(ctx, q, orderID, status); err != nil {
		return fmt.Errorf("set status %s: %w", status, err)
	}
	return nil
}

// moveLines runs update (parameters sku and quantity) for each line of the
// reservation, in SKU order, and returns the lines. A line whose product is
// gone, or whose update would break a stock check, fails the whole step.
func moveLines(ctx context.Context, tx pgx.Tx, orderID uuid.UUID, update string) ([]stock.Line, error) {
	const q = `SELECT sku, quantity FROM reservation_lines WHERE order_id = $1 ORDER BY sku`
	rows, err := tx.Query(ctx, q, orderID)
	if err != nil {
		return nil, fmt.Errorf("lines: %w", err)
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stock.Line, error) {
		var l stock.Line
		err := r.Scan(&l.SKU, &l.Quantity)
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("lines: %w", err)
	}
	for _, l := range lines {
		tag, err := tx.Exec(ctx, update, l.SKU, l.Quantity)
		if err != nil {
			return nil, fmt.Errorf("update %s: %w", l.SKU, err)
		}
		if tag.RowsAffected() == 0 {
			return nil, fmt.Errorf("product %s of the reservation is gone", l.SKU)
		}
	}
	return lines, nil
}
