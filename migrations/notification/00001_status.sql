-- +goose Up
-- order_status is the latest known status of each order, as told by the
-- order service's OrderStatusChanged events. Every notification replica
-- writes here; an update only ever moves seq forward, so a late or
-- redelivered event never overwrites a newer status.
CREATE TABLE order_status (
    order_id    uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    status      text        NOT NULL CHECK (status IN ('pending', 'reserved', 'confirmed', 'shipped', 'delivered', 'cancelled')),
    reason      text        CHECK (reason IN ('out_of_stock', 'payment_declined', 'customer_request', 'timeout')),
    seq         bigint      NOT NULL CHECK (seq > 0),
    at          timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- status_feed keeps every status of every order, so that a client that
-- reconnects with since=<seq> (or Last-Event-ID) gets exactly what it
-- missed, from any replica.
CREATE TABLE status_feed (
    order_id uuid        NOT NULL,
    seq      bigint      NOT NULL CHECK (seq > 0),
    status   text        NOT NULL,
    reason   text,
    at       timestamptz NOT NULL,
    PRIMARY KEY (order_id, seq)
);

-- The retention purge looks for finished orders by age.
CREATE INDEX order_status_finished ON order_status (updated_at) WHERE status IN ('delivered', 'cancelled');

-- +goose Down
DROP TABLE status_feed;
DROP TABLE order_status;
