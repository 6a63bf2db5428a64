package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/services/order/order"
)

// UpsertProduct writes p into the catalog replica in tx unless the replica
// already holds the same or a newer version of it (ProductUpserted arrives
// at least once and not always in order). It reports whether it wrote.
func (s *Store) UpsertProduct(ctx context.Context, tx pgx.Tx, p order.Product) (bool, error) {
	const q = `
INSERT INTO catalog (sku, name, price_cents, currency, version, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (sku) DO UPDATE
SET name = EXCLUDED.name, price_cents = EXCLUDED.price_cents, currency = EXCLUDED.currency,
    version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
WHERE catalog.version < EXCLUDED.version`
	tag, err := tx.Exec(ctx, q, p.SKU, p.Name, p.PriceCents, p.Currency, p.Version)
	if err != nil {
		return false, fmt.Errorf("upsert product %s: %w", p.SKU, err)
	}
	return tag.RowsAffected() == 1, nil
}
