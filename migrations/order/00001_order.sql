-- +goose Up
-- orders holds one row per order; version is the seq of its latest status
-- (1 for pending). deadline_at is set while a saga step awaits an answer
-- (pending: the reservation, reserved: the payment) and NULL otherwise.
CREATE TABLE orders (
    id             uuid        PRIMARY KEY,
    customer_id    text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('pending', 'reserved', 'confirmed', 'shipped', 'delivered', 'cancelled')),
    reason         text        NOT NULL DEFAULT '' CHECK (reason IN ('', 'out_of_stock', 'payment_declined', 'customer_request', 'timeout')),
    payment_method text        NOT NULL,
    -- payment_id is the authorized payment, once PaymentAuthorized arrived.
    payment_id     text        NOT NULL DEFAULT '',
    total_cents    bigint      NOT NULL CHECK (total_cents >= 0),
    currency       text        NOT NULL,
    version        bigint      NOT NULL DEFAULT 1,
    deadline_at    timestamptz,
    -- refunded_at records PaymentRefunded (informational).
    refunded_at    timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    CHECK ((status = 'cancelled') = (reason <> ''))
);
-- Keyset listing of a customer's orders, newest first.
CREATE INDEX orders_customer_created ON orders (customer_id, created_at DESC, id DESC);
-- The deadline sweeper reads only orders still waiting for an answer.
CREATE INDEX orders_deadline ON orders (deadline_at) WHERE deadline_at IS NOT NULL;

CREATE TABLE order_items (
    order_id         uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line             int     NOT NULL,
    sku              text    NOT NULL,
    quantity         int     NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, line),
    UNIQUE (order_id, sku)
);

-- order_history is every status an order went through; seq is the version
-- the order had in that status.
CREATE TABLE order_history (
    order_id uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq      bigint      NOT NULL,
    status   text        NOT NULL,
    reason   text        NOT NULL DEFAULT '',
    at       timestamptz NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- catalog is the replica of inventory's products (ProductUpserted); a row is
-- replaced only by a newer version.
CREATE TABLE catalog (
    sku         text        PRIMARY KEY,
    name        text        NOT NULL,
    price_cents bigint      NOT NULL CHECK (price_cents >= 0),
    currency    text        NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- idempotency_keys remembers POST /v1/orders requests by Idempotency-Key,
-- per customer, for 24 hours (docs/decisions/0007-order-api.md).
CREATE TABLE idempotency_keys (
    customer_id     text        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('in_flight', 'done')),
    response_status int,
    -- json, not jsonb: json keeps the exact bytes, so a replay is
    -- byte-for-byte the first response.
    response_body   json,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (customer_id, key),
    CHECK ((state = 'done') = (response_status IS NOT NULL))
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

-- +goose Down
DROP TABLE idempotency_keys;
DROP TABLE catalog;
DROP TABLE order_history;
DROP TABLE order_items;
DROP TABLE orders;
