// Package postgres stores payments and refunds in the payment service's
// PostgreSQL database (migrations/payment).
//
// The Store methods that take a pgx.Tx run in the caller's transaction: a
// consumer writes a payment, its inbox row and its outbox event in one.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/payment/payment"
)

// Migration is the service's own migration set (migrations/payment); its
// database also carries boot.Messaging.
var Migration = pg.Migration{FS: migrations.Of("payment"), Table: "goose_payment"}

// Store is the payment database. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool, whose database has the payment and messaging
// migrations applied.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool is the store's pool, for the inbox to open the transactions its
// handlers run in.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Lock takes, for the rest of tx, a lock on the payment of each of orders
// — whether or not a payment row exists yet — and returns their payments,
// keyed by order. Decisions on the same order are then taken one after the
// other, even across replicas: a RefundRequested sees the claim of a
// charge in flight (an authorizing payment) instead of voiding an order
// whose charge is about to be made. The transactions that take it are
// short: none is open across a gateway call. Locks are taken in order-id
// order, as every transaction here takes them, so two batches cannot wait
// for each other in a cycle. It returns an error only when the database
// fails.
func (s *Store) Lock(ctx context.Context, tx pgx.Tx, orders []uuid.UUID) (map[uuid.UUID]payment.Payment, error) {
	ids := slices.Clone(orders)
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)
	out := make(map[uuid.UUID]payment.Payment, len(ids))
	b := &pgx.Batch{}
	// The one-key advisory lock space is apart from the two-key one the
	// outbox relay uses for its partitions. unnest keeps the array's order.
	const lock = `SELECT pg_advisory_xact_lock(hashtextextended('payment:' || id::text, 0)) FROM unnest($1::uuid[]) AS id`
	b.Queue(lock, ids)
	b.Queue(`SELECT `+columns+` FROM payments WHERE order_id = ANY($1) FOR UPDATE`, ids).Query(func(rows pgx.Rows) error {
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (payment.Payment, error) { return scan(r) })
		for _, p := range list {
			out[p.OrderID] = p
		}
		return err
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("lock payments of %d orders: %w", len(ids), err)
	}
	return out, nil
}

const columns = `id, order_id, customer_id, amount_cents, currency, payment_method, status,
  decline_reason, gateway_reference, created_at, updated_at`

func scan(row pgx.Row) (payment.Payment, error) {
	var p payment.Payment
	err := row.Scan(&p.ID, &p.OrderID, &p.CustomerID, &p.AmountCents, &p.Currency, &p.Method, &p.Status,
		&p.DeclineReason, &p.GatewayReference, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// Changes is what a group of payment steps writes (a payment.Book's
// output): new payments (authorizing, declined or voided), changes of
// stored ones (a gateway call claimed, its answer recorded), released
// claims, refunds, and the events that describe them.
type Changes struct {
	Payments []*payment.Payment
	Updates  []*payment.Update
	Released []uuid.UUID
	Refunds  []*payment.Refund
	Events   []outbox.Event
}

// ChangesOf returns what b decided, for Save.
func ChangesOf(b *payment.Book) Changes {
	return Changes{Payments: b.Payments(), Updates: b.Updates(), Released: b.Released(), Refunds: b.Refunds(), Events: b.Events()}
}

// With returns c and more together, for one Save.
func (c Changes) With(more Changes) Changes {
	return Changes{
		Payments: append(c.Payments, more.Payments...),
		Updates:  append(c.Updates, more.Updates...),
		Released: append(c.Released, more.Released...),
		Refunds:  append(c.Refunds, more.Refunds...),
		Events:   append(c.Events, more.Events...),
	}
}

// ErrStale is returned by Save when a payment to change is no longer in
// the status it was decided from.
var ErrStale = errors.New("payment changed since it was loaded")

// Save writes c in tx, in one round trip, filling in the times of the new
// and changed payments and of the refunds. It returns an error matching
// payment.ErrExists when an order already has a payment (a second one would
// be a second charge), and ErrStale when a payment to change or release is
// no longer in the status it was decided from; the caller then rolls tx
// back.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, c Changes) error {
	now := time.Now().UTC().Truncate(time.Microsecond)
	b := &pgx.Batch{}
	if n := len(c.Payments); n > 0 {
		ids, orders := make([]uuid.UUID, n), make([]uuid.UUID, n)
		customers, currencies, methods, statuses, reasons, refs := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		amounts := make([]int64, n)
		for i, p := range c.Payments {
			p.CreatedAt, p.UpdatedAt = now, now
			ids[i], orders[i], customers[i], amounts[i], currencies[i] = p.ID, p.OrderID, p.CustomerID, p.AmountCents, p.Currency
			methods[i], statuses[i], reasons[i], refs[i] = p.Method, string(p.Status), p.DeclineReason, p.GatewayReference
		}
		const q = `
INSERT INTO payments (id, order_id, customer_id, amount_cents, currency, payment_method, status,
  decline_reason, gateway_reference, created_at, updated_at)
SELECT *, $10, $10 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])`
		b.Queue(q, ids, orders, customers, amounts, currencies, methods, statuses, reasons, refs, now)
	}
	if n := len(c.Updates); n > 0 {
		ids := make([]uuid.UUID, n)
		statuses, reasons, refs, froms := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		for i, u := range c.Updates {
			u.Payment.UpdatedAt = now
			ids[i], statuses[i], reasons[i], refs[i], froms[i] = u.Payment.ID, string(u.Payment.Status), u.Payment.DeclineReason, u.Payment.GatewayReference, string(u.From)
		}
		const q = `
UPDATE payments p SET status = u.status, decline_reason = u.reason, gateway_reference = u.ref, updated_at = $6
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(id, status, reason, ref, from_status)
WHERE p.id = u.id AND p.status = u.from_status`
		b.Queue(q, ids, statuses, reasons, refs, froms, now).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() != int64(n) {
				return ErrStale
			}
			return nil
		})
	}
	if n := len(c.Released); n > 0 {
		const q = `DELETE FROM payments WHERE id = ANY($1) AND status = 'authorizing'`
		b.Queue(q, c.Released).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() != int64(n) {
				return ErrStale
			}
			return nil
		})
	}
	if n := len(c.Refunds); n > 0 {
		ids, payments := make([]uuid.UUID, n), make([]uuid.UUID, n)
		amounts, currencies, refs := make([]int64, n), make([]string, n), make([]string, n)
		for i, r := range c.Refunds {
			r.CreatedAt = now
			ids[i], payments[i], amounts[i], currencies[i], refs[i] = r.ID, r.PaymentID, r.AmountCents, r.Currency, r.GatewayReference
		}
		const q = `
INSERT INTO refunds (id, payment_id, amount_cents, currency, gateway_reference, created_at)
SELECT *, $6 FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::text[], $5::text[])`
		b.Queue(q, ids, payments, amounts, currencies, refs, now)
	}
	if err := outbox.Queue(ctx, b, c.Events...); err != nil {
		return err
	}
	if b.Len() == 0 {
		return nil
	}
	err := tx.SendBatch(ctx, b).Close()
	switch {
	case pg.IsUniqueViolation(err):
		return fmt.Errorf("save payments: %w", payment.ErrExists)
	case errors.Is(err, ErrStale):
		return fmt.Errorf("save payments: %w", err)
	case err != nil:
		return fmt.Errorf("save payments: %w", err)
	}
	return nil
}

// ListByOrder returns the payments of orderID that the API shows (voided
// markers and charges whose answer is not recorded yet are left out),
// oldest first; an order has at most one, so the list is empty or has one
// element. It returns an error only when the database fails.
func (s *Store) ListByOrder(ctx context.Context, orderID uuid.UUID) ([]payment.Payment, error) {
	q := `SELECT ` + columns + ` FROM payments WHERE order_id = $1 AND status NOT IN ('voided', 'authorizing') ORDER BY created_at, id`
	rows, err := s.pool.Query(ctx, q, orderID)
	if err != nil {
		return nil, fmt.Errorf("list payments of order %s: %w", orderID, err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (payment.Payment, error) { return scan(row) })
	if err != nil {
		return nil, fmt.Errorf("list payments of order %s: %w", orderID, err)
	}
	return list, nil
}
