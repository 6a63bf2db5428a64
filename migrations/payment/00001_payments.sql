-- +goose Up
-- payments holds one row per order: the outcome of its PaymentRequested, or
-- a 'voided' marker written when a RefundRequested arrived first (the order
-- was cancelled before payment ran), so that a late PaymentRequested charges
-- nothing. The unique order_id is the database's guard against a second
-- charge; the gateway's idempotency key (the order id) is the provider's.
CREATE TABLE payments (
    id                uuid        PRIMARY KEY,
    order_id          uuid        NOT NULL UNIQUE,
    customer_id       text        NOT NULL DEFAULT '',
    amount_cents      bigint      NOT NULL CHECK (amount_cents >= 0),
    currency          text        NOT NULL,
    payment_method    text        NOT NULL DEFAULT '',
    status            text        NOT NULL
        CHECK (status IN ('authorized', 'declined', 'refunded', 'voided')),
    -- decline_reason is set for 'declined' only: the gateway's word
    -- ("card_declined", "amount_limit", …) or "expired".
    decline_reason    text        NOT NULL DEFAULT '',
    -- gateway_reference is the provider's id of the authorization.
    gateway_reference text        NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'declined') = (decline_reason <> ''))
);

-- refunds records each refund of an authorized payment. Refunds are whole
-- (the order was cancelled), so a payment has at most one.
CREATE TABLE refunds (
    id                uuid        PRIMARY KEY,
    payment_id        uuid        NOT NULL UNIQUE REFERENCES payments (id),
    amount_cents      bigint      NOT NULL CHECK (amount_cents > 0),
    currency          text        NOT NULL,
    gateway_reference text        NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE refunds;
DROP TABLE payments;
