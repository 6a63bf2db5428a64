package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/order/order"
)

// IdempotencyTTL is how long an Idempotency-Key is remembered
// (docs/decisions/0007-order-api.md). After it the same key starts afresh.
const IdempotencyTTL = 24 * time.Hour

// IdempotencyKey identifies one request by Idempotency-Key, scoped to the
// customer who sent it, and fingerprints its body.
type IdempotencyKey struct {
	CustomerID string
	Key        string
	Hash       []byte
}

// StoredResponse is the response given to the first request with a key.
type StoredResponse struct {
	OrderID string
	Status  int
	Body    []byte
}

// CreateOnce is Create for a request with an Idempotency-Key: in the same
// transaction it takes a lock on the key for the length of the transaction,
// and stores the response that respond renders from the new order (status
// 201) with the key. A later request with the key and the same body gets
// that stored response (replayed true) and creates nothing.
//
// It returns an error matching order.ErrIdempotencyKeyInUse while another
// request with the key is being processed (it holds the lock), one matching
// order.ErrIdempotencyKeyReused when the key came first with another body,
// and Create's errors; on any error nothing is stored, the key included, so
// the client may retry with the body corrected.
func (s *Store) CreateOnce(ctx context.Context, req order.Request, key IdempotencyKey, respond func(order.Order) ([]byte, error)) (resp StoredResponse, replayed bool, err error) {
	if err := req.Validate(); err != nil {
		return StoredResponse{}, false, err
	}
	err = pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		stored, err := lockKey(ctx, tx, key, s.clock())
		if err != nil || stored != nil {
			if stored != nil {
				resp, replayed = *stored, true
			}
			return err
		}
		o, err := s.create(ctx, tx, req)
		if err != nil {
			return err
		}
		body, err := respond(o)
		if err != nil {
			return err
		}
		resp, replayed = StoredResponse{OrderID: o.ID, Status: 201, Body: body}, false
		return storeKey(ctx, tx, key, resp, o.CreatedAt)
	})
	if err != nil {
		return StoredResponse{}, false, fmt.Errorf("create order: %w", err)
	}
	return resp, replayed, nil
}

// lockKey takes the transaction's lock on key, then reads what an earlier
// request stored under it: nil when there is nothing (or only an expired
// entry), the stored response for the same body, an error matching
// order.ErrIdempotencyKeyReused for another body, and one matching
// order.ErrIdempotencyKeyInUse when another transaction holds the lock.
//
// The read is a statement of its own, after the lock: under READ COMMITTED
// it then sees the row of a request that committed while this one waited
// to get the lock.
func lockKey(ctx context.Context, tx pgx.Tx, key IdempotencyKey, now time.Time) (*StoredResponse, error) {
	// One-key advisory locks; the outbox relay uses the two-key space. The
	// customer id's length makes the hashed text unambiguous.
	const lock = `SELECT pg_try_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, 0))`
	var got bool
	if err := tx.QueryRow(ctx, lock, key.CustomerID, key.Key).Scan(&got); err != nil {
		return nil, fmt.Errorf("lock idempotency key: %w", err)
	}
	if !got {
		return nil, order.ErrIdempotencyKeyInUse
	}
	const read = `
SELECT request_hash, order_id, response_status, response_body::text FROM idempotency_keys
WHERE customer_id = $1 AND key = $2 AND expires_at > $3`
	var (
		hash []byte
		id   uuid.UUID
		r    StoredResponse
		body string
	)
	err := tx.QueryRow(ctx, read, key.CustomerID, key.Key, now).Scan(&hash, &id, &r.Status, &body)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read idempotency key: %w", err)
	case string(hash) != string(key.Hash):
		return nil, order.ErrIdempotencyKeyReused
	}
	r.OrderID, r.Body = id.String(), []byte(body)
	return &r, nil
}

// storeKey records resp under key, replacing an expired entry.
func storeKey(ctx context.Context, tx pgx.Tx, key IdempotencyKey, resp StoredResponse, now time.Time) error {
	const q = `
INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, response_status, response_body, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8)
ON CONFLICT (customer_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, order_id = EXCLUDED.order_id, response_status = EXCLUDED.response_status,
    response_body = EXCLUDED.response_body, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`
	if _, err := tx.Exec(ctx, q, key.CustomerID, key.Key, key.Hash, resp.OrderID, resp.Status, string(resp.Body), now, now.Add(IdempotencyTTL)); err != nil {
		return fmt.Errorf("store idempotency key: %w", err)
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
