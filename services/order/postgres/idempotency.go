package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/services/order/order"
)

// IdempotencyTTL is how long an Idempotency-Key is remembered
// (docs/decisions/0007-order-api.md). After it the same key starts afresh.
const IdempotencyTTL = 24 * time.Hour

// IdempotencyLease is how long a request may hold its key in flight. A
// key still in flight after it (the process died mid-request) is taken over
// by the next request with it; the request that lost it can no longer
// complete it, so its order is rolled back (see CompleteKey).
const IdempotencyLease = time.Minute

// IdempotencyKey identifies one request by Idempotency-Key, scoped to the
// customer who sent it, and fingerprints its body.
type IdempotencyKey struct {
	CustomerID string
	Key        string
	Hash       []byte
	// claimedAt is set by a successful ClaimKey and identifies the claim.
	claimedAt time.Time
}

// StoredResponse is the response given to the first request with a key.
type StoredResponse struct {
	Status int
	Body   []byte
}

// ClaimKey records k as in flight in its own short transaction. It returns
// (nil, nil) when this request is the first with k (or the earlier one
// expired) and must now be processed; the stored response when the first
// request with the same body completed; an error matching
// order.ErrIdempotencyKeyReused when the key came with another body; and
// one matching order.ErrIdempotencyKeyInUse while the first is in flight.
//
// A successful claim is recorded in k, which the caller then passes to
// CompleteKey or ReleaseKey.
func (s *Store) ClaimKey(ctx context.Context, k *IdempotencyKey) (*StoredResponse, error) {
	// An expired key, or one whose request died in flight, is taken over
	// in the same statement.
	const claim = `
INSERT INTO idempotency_keys (customer_id, key, request_hash, state, created_at, expires_at)
VALUES ($1, $2, $3, 'in_flight', $4, $5)
ON CONFLICT (customer_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, state = 'in_flight', response_status = NULL, response_body = NULL,
    created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
   OR (idempotency_keys.state = 'in_flight' AND idempotency_keys.created_at <= EXCLUDED.created_at - $6::interval)`
	const read = `
SELECT request_hash, state, response_status, response_body::text FROM idempotency_keys
WHERE customer_id = $1 AND key = $2`
	// The row read may be deleted (a 5xx released it) before it is seen;
	// then claiming again wins. Three rounds are plenty.
	for range 3 {
		now := s.clock()
		tag, err := s.pool.Exec(ctx, claim, k.CustomerID, k.Key, k.Hash, now, now.Add(IdempotencyTTL), IdempotencyLease)
		if err != nil {
			return nil, fmt.Errorf("claim idempotency key: %w", err)
		}
		if tag.RowsAffected() == 1 {
			k.claimedAt = now
			return nil, nil
		}
		var (
			hash   []byte
			state  string
			status *int
			body   *string
		)
		err = s.pool.QueryRow(ctx, read, k.CustomerID, k.Key).Scan(&hash, &state, &status, &body)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read idempotency key: %w", err)
		}
		switch {
		case string(hash) != string(k.Hash):
			return nil, order.ErrIdempotencyKeyReused
		case state != "done" || status == nil || body == nil:
			return nil, order.ErrIdempotencyKeyInUse
		}
		return &StoredResponse{Status: *status, Body: []byte(*body)}, nil
	}
	return nil, order.ErrIdempotencyKeyInUse
}

// CompleteKey stores the response to k's first request in tx, the
// transaction that made the order, so both commit or neither does. It
// returns an error matching order.ErrIdempotencyKeyInUse when k's claim was
// lost (its lease ran out and another request took the key over); the
// caller must then roll back.
func (s *Store) CompleteKey(ctx context.Context, tx pgx.Tx, k IdempotencyKey, resp StoredResponse) error {
	return completeKey(ctx, tx, k, resp)
}

func completeKey(ctx context.Context, q querier, k IdempotencyKey, resp StoredResponse) error {
	const upd = `
UPDATE idempotency_keys SET state = 'done', response_status = $3, response_body = $4::text::json
WHERE customer_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $5`
	tag, err := q.Exec(ctx, upd, k.CustomerID, k.Key, resp.Status, string(resp.Body), k.claimedAt)
	if err != nil {
		return fmt.Errorf("complete idempotency key: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("complete idempotency key: claim lost: %w", order.ErrIdempotencyKeyInUse)
	}
	return nil
}

// ReleaseKey forgets an in-flight key whose request failed with a server
// error, so that a retry with it is processed afresh. A lost claim is left
// to its new holder.
func (s *Store) ReleaseKey(ctx context.Context, k IdempotencyKey) error {
	const q = `DELETE FROM idempotency_keys WHERE customer_id = $1 AND key = $2 AND state = 'in_flight' AND created_at = $3`
	if _, err := s.pool.Exec(ctx, q, k.CustomerID, k.Key, k.claimedAt); err != nil {
		return fmt.Errorf("release idempotency key: %w", err)
	}
	return nil
}

// PurgeKeys deletes expired idempotency keys, in chunks, and returns how many.
func (s *Store) PurgeKeys(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM idempotency_keys WHERE (customer_id, key) IN (
  SELECT customer_id, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT 10000)`
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, q, s.clock())
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
