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

// statusCreated is the HTTP status of the response stored with a key: 201,
// the order was created.
const statusCreated = 201

// LockKey starts, in tx, the placing of req sent with an Idempotency-Key:
// in one round trip it takes the transaction's lock on key and reads what
// an earlier request stored under it and the catalog rows of req's lines.
// A later request with the key and the same body gets the stored response
// in Replay and creates nothing. Otherwise the domain places req
// (order.Place), the caller renders its response from the returned order,
// and SavePlacement writes both, in tx.
//
// It returns an error matching order.ErrIdempotencyKeyInUse while another
// request with the key is being processed (it holds the lock), one matching
// order.ErrIdempotencyKeyReused when the key came first with another body,
// and Create's errors, a bad request's before it looks at the key; on any
// error the caller rolls tx back and nothing is stored, the key included,
// so the client may retry with the body corrected.
func (s *Store) LockKey(ctx context.Context, tx pgx.Tx, t order.Timeouts, req order.Request, key IdempotencyKey) (Placement, error) {
	// Before any statement: bad input neither begins tx nor takes the key.
	if err := req.Validate(); err != nil {
		return Placement{}, err
	}
	return s.place(ctx, tx, t, req, &key)
}

// CreateOnce places req sent with an Idempotency-Key in one transaction:
// LockKey, then render turns the placed order into the body of its 201
// (the API's JSON, a pure function of the order), then SavePlacement
// stores order and body together. A request that repeats the key and body
// gets the stored response, with replayed true, and creates nothing. It
// returns LockKey's errors, render's, or the database's; none stores
// anything.
func (s *Store) CreateOnce(ctx context.Context, t order.Timeouts, req order.Request, key IdempotencyKey, render func(order.Order) ([]byte, error)) (resp StoredResponse, replayed bool, err error) {
	err = pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		p, err := s.LockKey(ctx, tx, t, req, key)
		if err != nil {
			return err
		}
		if replayed = p.Replay != nil; replayed {
			resp = *p.Replay
			return nil
		}
		body, err := render(p.Order)
		if err != nil {
			return err
		}
		resp = StoredResponse{OrderID: p.Order.ID, Status: statusCreated, Body: body}
		return s.SavePlacement(ctx, tx, p, body)
	})
	return resp, replayed, err
}

// keyState is what queueLockKey learns once its batch has run: the stored
// response of an earlier request with the key, or in err why this request
// may not go on.
type keyState struct {
	resp *StoredResponse
	err  error
}

// queueLockKey queues on b the statements that take the transaction's lock
// on key and then read what an earlier request stored under it (the
// catalog read travels with them: the statements run one after the other,
// each seeing what committed before it began). After the batch ran, the
// state holds nothing (no entry, or only an expired one: go on), the
// stored response for the same body, an error matching
// order.ErrIdempotencyKeyReused for another body, or one matching
// order.ErrIdempotencyKeyInUse when another transaction holds the lock.
//
// The read is a statement of its own, after the lock: under READ COMMITTED
// it then sees the row of a request that committed while this one waited
// to get the lock.
func queueLockKey(b *pgx.Batch, key IdempotencyKey, now time.Time) *keyState {
	st := &keyState{}
	// One-key advisory locks; the outbox relay uses the two-key space. The
	// customer id's length makes the hashed text unambiguous.
	const lock = `SELECT pg_try_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, 0))`
	b.Queue(lock, key.CustomerID, key.Key).QueryRow(func(row pgx.Row) error {
		var got bool
		if err := row.Scan(&got); err != nil {
			return fmt.Errorf("lock idempotency key: %w", err)
		}
		if !got {
			st.err = order.ErrIdempotencyKeyInUse
		}
		return nil
	})
	const read = `
SELECT request_hash, order_id, response_status, response_body::text FROM idempotency_keys
WHERE customer_id = $1 AND key = $2 AND expires_at > $3`
	b.Queue(read, key.CustomerID, key.Key, now).QueryRow(func(row pgx.Row) error {
		var (
			hash []byte
			id   uuid.UUID
			r    StoredResponse
			body string
		)
		err := row.Scan(&hash, &id, &r.Status, &body)
		switch {
		case st.err != nil, errors.Is(err, pgx.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("read idempotency key: %w", err)
		case string(hash) != string(key.Hash):
			st.err = order.ErrIdempotencyKeyReused
			return nil
		}
		r.OrderID, r.Body = id.String(), []byte(body)
		st.resp = &r
		return nil
	})
	return st
}

// queueStoreKey queues on b the write of resp under key, replacing an
// expired entry.
func queueStoreKey(b *pgx.Batch, key IdempotencyKey, resp StoredResponse, now time.Time) {
	const q = `
INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, response_status, response_body, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6::text::json, $7, $8)
ON CONFLICT (customer_id, key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, order_id = EXCLUDED.order_id, response_status = EXCLUDED.response_status,
    response_body = EXCLUDED.response_body, created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at`
	b.Queue(q, key.CustomerID, key.Key, key.Hash, resp.OrderID, resp.Status, string(resp.Body), now, now.Add(IdempotencyTTL))
}

// PurgeKeys deletes expired idempotency keys, in chunks, and returns how many.
func (s *Store) PurgeKeys(ctx context.Context) (int64, error) {
	const q = `
DELETE FROM idempotency_keys WHERE (customer_id, key) IN (
  SELECT customer_id, key FROM idempotency_keys WHERE expires_at <= $1 LIMIT 10000)`
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, q, s.Now())
		if err != nil {
			return total, fmt.Errorf("purge idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}
