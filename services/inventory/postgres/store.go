// Package postgres stores the inventory in PostgreSQL: products and their
// stock, and the reservations orders hold. Every change is made with the
// concurrency rule in the SQL itself (a conditional UPDATE, a row lock, SKIP
// LOCKED) and writes the events that describe it to the outbox in the same
// transaction.
package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/inventory/stock"
)

// Migration is the service's own migration set (migrations/inventory); its
// database also carries boot.Messaging.
var Migration = pg.Migration{FS: migrations.Of("inventory"), Table: "goose_inventory"}

// Store is the inventory database. It is safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

// New returns a Store on pool, whose database has the inventory and
// messaging migrations applied.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool is the store's connection pool, for the transactions its callers
// run (inbox.Handle) around LockBook and Save.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const productColumns = `sku, name, price_cents, currency, stock, reserved, version, updated_at`

func scanProduct(row pgx.Row, extra ...any) (stock.Product, error) {
	var p stock.Product
	dst := append([]any{&p.SKU, &p.Name, &p.PriceCents, &p.Currency, &p.Stock, &p.Reserved, &p.Version, &p.UpdatedAt}, extra...)
	err := row.Scan(dst...)
	return p, err
}

// Product returns the product with sku, or an error matching
// stock.ErrNotFound when there is none.
func (s *Store) Product(ctx context.Context, sku string) (stock.Product, error) {
	const q = `SELECT ` + productColumns + ` FROM products WHERE sku = $1`
	p, err := scanProduct(s.pool.QueryRow(ctx, q, sku))
	if errors.Is(err, pgx.ErrNoRows) {
		return stock.Product{}, fmt.Errorf("product %s: %w", sku, stock.ErrNotFound)
	}
	if err != nil {
		return stock.Product{}, fmt.Errorf("product %s: %w", sku, err)
	}
	return p, nil
}

// Products returns up to limit products with a SKU greater than after (""
// for the first page), ordered by SKU.
func (s *Store) Products(ctx context.Context, after string, limit int) ([]stock.Product, error) {
	const q = `SELECT ` + productColumns + ` FROM products WHERE sku > $1 ORDER BY sku LIMIT $2`
	rows, err := s.pool.Query(ctx, q, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	products, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stock.Product, error) { return scanProduct(r) })
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	return products, nil
}

// PutProduct creates the product or replaces its name, price, currency and
// stock (reserved units stay as they are), bumps its version and writes a
// ProductUpserted event, all in one transaction. It reports whether the
// product was created. It returns an error matching stock.ErrInvalid for a
// product that fails Validate, and stock.ErrStockBelowReserved when stock
// would drop below the units reserved for orders.
func (s *Store) PutProduct(ctx context.Context, p stock.Product) (stock.Product, bool, error) {
	if err := p.Validate(); err != nil {
		return stock.Product{}, false, err
	}
	// The reserved <= stock check runs against the row as it is when the
	// upsert locks it, so a reservation committing meanwhile is accounted for.
	const q = `
INSERT INTO products AS p (sku, name, price_cents, currency, stock)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (sku) DO UPDATE SET
    name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency,
    stock = EXCLUDED.stock, version = p.version + 1, updated_at = now()
RETURNING ` + productColumns + `, xmax = 0`
	var (
		out     stock.Product
		created bool
	)
	err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		out, err = scanProduct(tx.QueryRow(ctx, q, p.SKU, p.Name, p.PriceCents, p.Currency, p.Stock), &created)
		if err != nil {
			return err
		}
		ev, err := stock.ProductUpserted(out)
		if err != nil {
			return err
		}
		return outbox.Add(ctx, tx, ev)
	})
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23514" && pgErr.ConstraintName == "products_reserved_within_stock" {
		return stock.Product{}, false, fmt.Errorf("put product %s: %w", p.SKU, stock.ErrStockBelowReserved)
	}
	if err != nil {
		return stock.Product{}, false, fmt.Errorf("put product %s: %w", p.SKU, err)
	}
	return out, created, nil
}
