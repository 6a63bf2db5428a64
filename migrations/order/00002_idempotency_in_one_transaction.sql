-- +goose Up
-- A request with an Idempotency-Key now holds a transaction-scoped advisory
-- lock on the key while it runs and stores the key with its response in the
-- transaction that creates the order (docs/decisions/0007-order-api.md).
-- There is no in-flight row any more: the lock is the "in flight" state, and
-- it ends with the transaction, so a request that died cannot block its key.
DELETE FROM idempotency_keys WHERE state <> 'done';
ALTER TABLE idempotency_keys DROP COLUMN state;
ALTER TABLE idempotency_keys ALTER COLUMN response_status SET NOT NULL,
                             ALTER COLUMN response_body SET NOT NULL;
-- The order a key created, for the Location header of a replay.
ALTER TABLE idempotency_keys ADD COLUMN order_id uuid;
UPDATE idempotency_keys SET order_id = (response_body::jsonb ->> 'id')::uuid;
ALTER TABLE idempotency_keys ALTER COLUMN order_id SET NOT NULL;

-- +goose Down
ALTER TABLE idempotency_keys DROP COLUMN order_id;
ALTER TABLE idempotency_keys ALTER COLUMN response_status DROP NOT NULL,
                             ALTER COLUMN response_body DROP NOT NULL;
ALTER TABLE idempotency_keys ADD COLUMN state text NOT NULL DEFAULT 'done' CHECK (state IN ('in_flight', 'done'));
ALTER TABLE idempotency_keys ADD CHECK ((state = 'done') = (response_status IS NOT NULL));
