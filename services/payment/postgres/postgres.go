// Package postgres stores payments and refunds in the payment service's
// PostgreSQL database (migrations/payment).
//
// The functions that take a pgx.Tx run in the caller's transaction: a
// consumer writes a payment, its inbox row and its outbox event in one. Store
// serves the reads of the HTTP API.
package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/payment/payment"
)

// LockOrder takes a lock on orderID's payment that tx holds until it ends,
// whether or not a payment row exists yet. Handlers of the same order then
// run one after the other, even across replicas: a RefundRequested waits for
// a PaymentRequested being authorized and then sees its row, instead of
// voiding an order whose charge is about to commit. It returns an error only
// when the database fails.
func LockOrder(ctx context.Context, tx pgx.Tx, orderID uuid.UUID) error {
	// The one-key advisory lock space is apart from the two-key one the
	// outbox relay uses for its partitions.
	const q = `SELECT pg_advisory_xact_lock(hashtextextended('payment:' || $1::text, 0))`
	if _, err := tx.Exec(ctx, q, orderID); err != nil {
		return fmt.Errorf("lock order %s: %w", orderID, err)
	}
	return nil
}

const columns = `id, order_id, customer_id, amount_cents, currency, payment_method, status,
  decline_reason, gateway_reference, created_at, updated_at`

func scan(row pgx.Row) (payment.Payment, error) {
	var p payment.Payment
	err := row.Scan(&p.ID, &p.OrderID, &p.CustomerID, &p.AmountCents, &p.Currency, &p.Method, &p.Status,
		&p.DeclineReason, &p.GatewayReference, &p.CreatedAt, &p.UpdatedAt)
	return p, err
}

// ByOrder returns orderID's payment, locked for update until tx ends. It
// returns payment.ErrNotFound when the order has none.
func ByOrder(ctx context.Context, tx pgx.Tx, orderID uuid.UUID) (payment.Payment, error) {
	q := `SELECT ` + columns + ` FROM payments WHERE order_id = $1 FOR UPDATE`
	p, err := scan(tx.QueryRow(ctx, q, orderID))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return payment.Payment{}, fmt.Errorf("payment of order %s: %w", orderID, payment.ErrNotFound)
	case err != nil:
		return payment.Payment{}, fmt.Errorf("payment of order %s: %w", orderID, err)
	}
	return p, nil
}

// Insert writes p, filling in its CreatedAt and UpdatedAt. It returns
// payment.ErrExists when the order already has a payment.
func Insert(ctx context.Context, tx pgx.Tx, p *payment.Payment) error {
	const q = `
INSERT INTO payments (id, order_id, customer_id, amount_cents, currency, payment_method, status,
  decline_reason, gateway_reference)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
RETURNING created_at, updated_at`
	err := tx.QueryRow(ctx, q, p.ID, p.OrderID, p.CustomerID, p.AmountCents, p.Currency, p.Method, p.Status,
		p.DeclineReason, p.GatewayReference).Scan(&p.CreatedAt, &p.UpdatedAt)
	switch {
	case pg.IsUniqueViolation(err):
		return fmt.Errorf("insert payment of order %s: %w", p.OrderID, payment.ErrExists)
	case err != nil:
		return fmt.Errorf("insert payment of order %s: %w", p.OrderID, err)
	}
	return nil
}

// ErrNotAuthorized is returned by Refund when the payment is not (or no
// longer) authorized.
var ErrNotAuthorized = errors.New("payment is not authorized")

// Refund records r and marks its payment refunded, filling in r.CreatedAt.
// It returns ErrNotAuthorized when the payment is not authorized, in which
// case nothing is written.
func Refund(ctx context.Context, tx pgx.Tx, r *payment.Refund) error {
	const mark = `UPDATE payments SET status = 'refunded', updated_at = now() WHERE id = $1 AND status = 'authorized'`
	tag, err := tx.Exec(ctx, mark, r.PaymentID)
	if err != nil {
		return fmt.Errorf("refund payment %s: %w", r.PaymentID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("refund payment %s: %w", r.PaymentID, ErrNotAuthorized)
	}
	const q = `
INSERT INTO refunds (id, payment_id, amount_cents, currency, gateway_reference)
VALUES ($1, $2, $3, $4, $5)
RETURNING created_at`
	err = tx.QueryRow(ctx, q, r.ID, r.PaymentID, r.AmountCents, r.Currency, r.GatewayReference).Scan(&r.CreatedAt)
	if err != nil {
		return fmt.Errorf("record refund of payment %s: %w", r.PaymentID, err)
	}
	return nil
}

// Store reads payments for the HTTP API.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// ListByOrder returns the payments of orderID that the API shows (voided
// markers are left out), oldest first; an order has at most one, so the
// list is empty or has one element. It returns an error only when the
// database fails.
func (s *Store) ListByOrder(ctx context.Context, orderID uuid.UUID) ([]payment.Payment, error) {
	q := `SELECT ` + columns + ` FROM payments WHERE order_id = $1 AND status <> 'voided' ORDER BY created_at, id`
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
