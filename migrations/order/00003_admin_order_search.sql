-- +goose NO TRANSACTION
-- +goose Up
-- GET /v1/admin/orders searches every customer's orders newest first, by
-- keyset on (created_at, id). Without a customer the one index on orders
-- that starts with customer_id cannot serve that order, so a page would
-- sort the whole table. A status filter gets its own index because most
-- orders end delivered or cancelled: the statuses an admin searches for
-- (pending, reserved, confirmed) are rare, and walking the time index
-- would skip over the rest. customer_id with a status uses
-- orders_customer_created: one customer's orders are few.
-- CONCURRENTLY, outside a transaction, so that a live shop's orders table
-- keeps taking writes while the indexes build.
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_created ON orders (created_at DESC, id DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_status_created ON orders (status, created_at DESC, id DESC);

-- +goose Down
DROP INDEX CONCURRENTLY IF EXISTS orders_status_created;
DROP INDEX CONCURRENTLY IF EXISTS orders_created;
