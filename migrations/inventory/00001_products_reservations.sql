-- +goose Up
-- products is the catalog and its stock. stock is units on hand; reserved is
-- units held for orders neither confirmed nor cancelled yet. The checks are
-- the last line of defence of "never oversell": the reserving UPDATE already
-- asks for stock - reserved >= quantity, and a change that would break the
-- rule fails here instead of committing.
CREATE TABLE products (
    sku         text        PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    name        text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    price_cents bigint      NOT NULL CHECK (price_cents >= 0),
    currency    char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock       bigint      NOT NULL CHECK (stock >= 0),
    reserved    bigint      NOT NULL DEFAULT 0,
    -- version increases with every change of the row (admin or saga), so a
    -- catalog replica fed by ProductUpserted can ignore stale events.
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT products_reserved_within_stock CHECK (reserved >= 0 AND reserved <= stock)
);

-- reservations has one row per order the service has heard of. A row that
-- exists makes a later OrderPlaced for the order a no-op, which is how a
-- release that overtook the order (a tombstone: status released, no lines)
-- keeps it from ever reserving.
CREATE TABLE reservations (
    order_id   uuid        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('reserved', 'committed', 'released', 'rejected')),
    -- expires_at is when the sweeper releases a reservation still held;
    -- NULL for tombstones.
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The sweeper looks only at held reservations, oldest deadline first.
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'reserved';

-- reservation_lines are the units of one SKU an order asked for: held while
-- the reservation is reserved, taken off stock once committed, and what a
-- rejected order requested. One row per SKU (duplicates are merged).
CREATE TABLE reservation_lines (
    order_id uuid    NOT NULL REFERENCES reservations ON DELETE CASCADE,
    sku      text    NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);

-- +goose Down
DROP TABLE reservation_lines;
DROP TABLE reservations;
DROP TABLE products;
