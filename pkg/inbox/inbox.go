// Package inbox makes message handling effectively-once: a handler's effects
// and the id of the message that caused them commit in one transaction, so a
// redelivered message is acknowledged without running the handler again.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/rabbit"
)

// ErrBadMessageID is the permanent error of a message whose message_id is not
// a UUID: without an id it cannot be deduplicated, so it is dead-lettered.
var ErrBadMessageID = errors.New("inbox: message_id is not a UUID")

// Handler applies a batch of messages inside tx, in order (messages of one
// aggregate keep the order of the queue). It sees each message once: those
// applied before (redeliveries, copies in the same batch) are left out.
// Return rabbit.Permanent(err) for a message that can never succeed, any
// other error to retry later; tx is rolled back on any error, and when the
// batch held several messages each is then applied again alone, so that
// the error is pinned on the message that caused it and the others go
// through. A handler can so work set-wise (one statement for the whole
// batch) and stay simple about failures.
type Handler func(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error

// Each makes a Handler of a function that applies one message at a time,
// called with each message's own context (its trace).
func Each(h func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error) Handler {
	return func(_ context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
		for _, d := range batch {
			if err := h(d.Ctx, tx, d.Delivery); err != nil {
				return err
			}
		}
		return nil
	}
}

// Handle returns the rabbit.BatchHandler of consumer (the queue name is a
// good consumer name): it applies a batch in one transaction, in which one
// statement records every message id, h applies the messages not recorded
// before, and one commit makes it all durable. That is one transaction (and
// one WAL flush) for many messages when the queue has a backlog, and one
// for a message that arrives alone. Two copies of a message handled at once
// are safe too: the second waits on the first's inbox row and then sees it.
func Handle(pool *pgxpool.Pool, consumer string, h Handler) rabbit.BatchHandler {
	var apply func(ctx context.Context, batch []rabbit.Delivery) []error
	apply = func(ctx context.Context, batch []rabbit.Delivery) []error {
		errs := make([]error, len(batch))
		ids := make([]uuid.UUID, 0, len(batch))
		valid := make([]int, 0, len(batch))
		for i, d := range batch {
			id, err := uuid.Parse(d.MessageId)
			if err != nil {
				errs[i] = rabbit.Permanent(fmt.Errorf("%w: %q", ErrBadMessageID, d.MessageId))
				continue
			}
			ids, valid = append(ids, id), append(valid, i)
		}
		if len(valid) == 0 {
			return errs
		}
		err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			fresh, err := record(ctx, tx, consumer, ids)
			if err != nil {
				return err
			}
			todo := make([]rabbit.Delivery, 0, len(valid))
			for k, i := range valid {
				// A message twice in one batch (a redelivery next to
				// its first copy) is applied once.
				if fresh[ids[k]] {
					delete(fresh, ids[k])
					todo = append(todo, batch[i])
				}
			}
			if len(todo) == 0 {
				return nil // done before: acknowledge without effects
			}
			return h(ctx, tx, todo)
		})
		switch {
		case err == nil:
		case len(valid) == 1:
			errs[valid[0]] = err
		default:
			for _, i := range valid {
				errs[i] = apply(batch[i].Ctx, batch[i:i+1])[0]
			}
		}
		return errs
	}
	return apply
}

// record inserts the inbox rows of ids and returns those that were not
// there before.
func record(ctx context.Context, tx pgx.Tx, consumer string, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	const q = `INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING message_id`
	rows, err := tx.Query(ctx, q, consumer, ids)
	if err != nil {
		return nil, fmt.Errorf("inbox: record %d messages: %w", len(ids), err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("inbox: record %d messages: %w", len(ids), err)
	}
	fresh := make(map[uuid.UUID]bool, len(inserted))
	for _, id := range inserted {
		fresh[id] = true
	}
	return fresh, nil
}

// Purge deletes inbox records older than retention, a chunk at a time. Keep
// retention longer than any message can take to be redelivered (delayed
// retries, a DLQ replay): a duplicate arriving after its record is gone would
// be applied again.
func Purge(ctx context.Context, pool *pgxpool.Pool, retention time.Duration) (int64, error) {
	const q = `
DELETE FROM inbox WHERE (consumer, message_id) IN (
  SELECT consumer, message_id FROM inbox WHERE processed_at < now() - $1::interval LIMIT 10000)`
	var total int64
	for {
		tag, err := pool.Exec(ctx, q, retention)
		if err != nil {
			return total, fmt.Errorf("inbox: purge: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			return total, nil
		}
	}
}

// Retention is how long the inbox remembers a message id by default.
const Retention = 7 * 24 * time.Hour
