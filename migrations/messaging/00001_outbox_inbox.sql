-- +goose Up
-- outbox holds events written in the same transaction as the state change
-- they describe; the relay publishes them in id order per partition and
-- marks them sent only after the broker confirmed them.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid        NOT NULL,
    exchange     text        NOT NULL,
    routing_key  text        NOT NULL,
    event_type   text        NOT NULL,
    aggregate_id text        NOT NULL,
    partition    smallint    NOT NULL,
    payload      bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);
-- The only secondary index: every index costs an insert per write and per
-- mark-sent update (which can never be HOT, sent_at being indexed). Purging
-- sent rows scans the table, hourly.
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- One notification per inserting statement; Postgres folds identical
-- notifications of a transaction into one and delivers it only on COMMIT.
-- +goose StatementBegin
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- inbox records which messages a consumer has applied; the row is written in
-- the same transaction as the handler's effects, so a redelivery is a no-op.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    message_id   uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
CREATE INDEX inbox_processed ON inbox (processed_at);

-- +goose Down
DROP TABLE inbox;
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
DROP TABLE outbox;
