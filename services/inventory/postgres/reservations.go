package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/inventory/stock"
)

// LockBook reads into a stock.Book, and locks in tx, the reservations of
// the steps' orders and the products the steps and those reservations
// touch (docs/saga.md, steps 2, 6a, 6b and 11). The caller applies the
// steps to the book and writes it with Save in the same transaction: a
// handful of statements for the whole batch, however many steps it holds.
func (s *Store) LockBook(ctx context.Context, tx pgx.Tx, steps ...stock.Step) (*stock.Book, error) {
	orders := make([]uuid.UUID, 0, len(steps))
	var skus []string
	for _, st := range steps {
		orders = append(orders, st.OrderID)
		for _, l := range st.Lines {
			skus = append(skus, l.SKU)
		}
	}
	return s.lockBook(ctx, tx, orders, skus)
}

// lockBook reads and locks the reservations of orders (with their lines)
// and then the products of skus and of those lines, into a book.
// Reservations are locked before products, each set in key order, as every
// transaction here does, so concurrent groups of steps cannot deadlock.
func (s *Store) lockBook(ctx context.Context, tx pgx.Tx, orders []uuid.UUID, skus []string) (*stock.Book, error) {
	const qr = `
SELECT r.order_id, r.status, r.expires_at,
       array(SELECT l.sku FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY l.sku),
       array(SELECT l.quantity FROM reservation_lines l WHERE l.order_id = r.order_id ORDER BY l.sku)
FROM reservations r
WHERE r.order_id = ANY($1)
ORDER BY r.order_id
FOR UPDATE OF r`
	rows, err := tx.Query(ctx, qr, orders)
	if err != nil {
		return nil, fmt.Errorf("load reservations: %w", err)
	}
	reservations, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (stock.Reservation, error) {
		var (
			r       stock.Reservation
			expires *time.Time
			lskus   []string
			qtys    []int32
		)
		if err := row.Scan(&r.OrderID, &r.Status, &expires, &lskus, &qtys); err != nil {
			return r, err
		}
		if expires != nil {
			r.ExpiresAt = *expires
		}
		for i := range lskus {
			r.Lines = append(r.Lines, stock.Line{SKU: lskus[i], Quantity: qtys[i]})
		}
		return r, nil
	})
	if err != nil {
		return nil, fmt.Errorf("load reservations: %w", err)
	}
	for _, r := range reservations {
		for _, l := range r.Lines {
			skus = append(skus, l.SKU)
		}
	}
	slices.Sort(skus)
	skus = slices.Compact(skus)
	const qp = `SELECT sku, stock, reserved FROM products WHERE sku = ANY($1) ORDER BY sku FOR UPDATE`
	rows, err = tx.Query(ctx, qp, skus)
	if err != nil {
		return nil, fmt.Errorf("load products: %w", err)
	}
	levels := make(map[string]stock.Level, len(skus))
	var (
		sku string
		lvl stock.Level
	)
	if _, err := pgx.ForEachRow(rows, []any{&sku, &lvl.Stock, &lvl.Reserved}, func() error {
		levels[sku] = lvl
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load products: %w", err)
	}
	return stock.NewBook(levels, reservations), nil
}

// Save writes, in tx, what the steps applied to book (loaded by LockBook in
// the same transaction) changed, and the events they recorded to the
// outbox, in one round trip. The checks on products stay the last line of
// defense: a move that would take reserved above stock or below zero fails
// the whole transaction.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, book *stock.Book) error {
	b := &pgx.Batch{}
	if skus, moves := book.Moves(); len(skus) > 0 {
		ds, dr := make([]int64, len(moves)), make([]int64, len(moves))
		for i, m := range moves {
			ds[i], dr[i] = m.Stock, m.Reserved
		}
		const q = `
UPDATE products p SET stock = p.stock + m.ds, reserved = p.reserved + m.dr, updated_at = now()
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS m(sku, ds, dr)
WHERE p.sku = m.sku`
		b.Queue(q, skus, ds, dr)
	}
	created := book.Created()
	if len(created) > 0 {
		ids, statuses, expires := columns(created)
		const q = `
INSERT INTO reservations (order_id, status, expires_at)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[])
ON CONFLICT DO NOTHING`
		b.Queue(q, ids, statuses, expires).Exec(func(tag pgconn.CommandTag) error {
			// The book saw no reservation for these orders; one that
			// appeared meanwhile (a copy of the message in another
			// replica) makes the book wrong: start again.
			if tag.RowsAffected() != int64(len(created)) {
				return fmt.Errorf("save reservations: %d of %d orders got a reservation concurrently", int64(len(created))-tag.RowsAffected(), len(created))
			}
			return nil
		})
		var lineOrders []uuid.UUID
		var lineSKUs []string
		var lineQtys []int32
		for _, r := range created {
			for _, l := range r.Lines {
				lineOrders, lineSKUs, lineQtys = append(lineOrders, r.OrderID), append(lineSKUs, l.SKU), append(lineQtys, l.Quantity)
			}
		}
		if len(lineOrders) > 0 {
			const q = `INSERT INTO reservation_lines (order_id, sku, quantity) SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[])`
			b.Queue(q, lineOrders, lineSKUs, lineQtys)
		}
	}
	if updated := book.Updated(); len(updated) > 0 {
		ids, statuses, expires := columns(updated)
		const q = `
UPDATE reservations r SET status = u.status, expires_at = u.expires_at, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(order_id, status, expires_at)
WHERE r.order_id = u.order_id`
		b.Queue(q, ids, statuses, expires)
	}
	if err := outbox.Queue(ctx, b, book.Events()...); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("save reservations: %w", err)
	}
	return nil
}

// columns returns the reservations' order ids, statuses and expiry times
// (NULL when zero), as statement parameters.
func columns(rs []stock.Reservation) ([]uuid.UUID, []string, []*time.Time) {
	ids, statuses, expires := make([]uuid.UUID, len(rs)), make([]string, len(rs)), make([]*time.Time, len(rs))
	for i, r := range rs {
		ids[i], statuses[i] = r.OrderID, string(r.Status)
		if !r.ExpiresAt.IsZero() {
			expires[i] = &r.ExpiresAt
		}
	}
	return ids, statuses, expires
}

// ReleaseExpired releases reservations still held past their expires_at
// (docs/saga.md, step 11), up to limit of them, expireBatch per
// transaction, skipping those another replica or a saga step is working
// on. Only the picking is the store's: each is released by
// stock.Book.Release, as a ReleaseReservation would release it. It returns
// how many it released.
func (s *Store) ReleaseExpired(ctx context.Context, limit int) (int, error) {
	const pick = `
SELECT order_id FROM reservations
WHERE status = 'reserved' AND expires_at < now()
ORDER BY order_id
LIMIT $1
FOR UPDATE SKIP LOCKED`
	total := 0
	for total < limit {
		want, n := min(expireBatch, limit-total), 0
		err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, pick, want)
			if err != nil {
				return fmt.Errorf("pick expired reservations: %w", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil || len(ids) == 0 {
				n = 0
				return err
			}
			book, err := s.lockBook(ctx, tx, ids, nil)
			if err != nil {
				return err
			}
			now := time.Now()
			for _, id := range ids {
				if _, err := book.Release(id, now); err != nil {
					return err
				}
			}
			n = len(ids)
			return s.Save(ctx, tx, book)
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < want {
			return total, nil
		}
	}
	return total, nil
}

// expireBatch is how many expired reservations one transaction releases.
const expireBatch = 100
