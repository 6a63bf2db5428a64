-- +goose Up
-- A gateway call is claimed in one short transaction and its answer recorded
-- in another, with no transaction open across the call: in between, the
-- payment is 'authorizing' (the row is the claim of the order's one charge)
-- or 'refunding'. Whoever finds a payment in flight asks the gateway again
-- with the same idempotency key and records the answer.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
-- NOT VALID, then VALIDATE: the scan of existing rows does not hold the
-- exclusive lock that blocks the other replicas' statements.
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('authorizing', 'authorized', 'declined', 'refunding', 'refunded', 'voided')) NOT VALID;
ALTER TABLE payments VALIDATE CONSTRAINT payments_status_check;

-- +goose Down
-- Calls in flight are forgotten: a charge not recorded is asked for again by
-- its redelivered request, a refund not recorded leaves the payment
-- authorized for the next RefundRequested.
DELETE FROM payments WHERE status = 'authorizing';
UPDATE payments SET status = 'authorized' WHERE status = 'refunding';
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('authorized', 'declined', 'refunded', 'voided'));
