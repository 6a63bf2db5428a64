// Package inbox makes message handling effectively-once: a handler's effects
// and the id of the message that caused them commit in one transaction, so a
// redelivered message is acknowledged without running the handler again.
package inbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// Handler applies one message inside tx. Return rabbit.Permanent(err) for a
// message that can never succeed (it is dead-lettered), any other error to
// retry later; tx is rolled back on any error.
type Handler func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error

// Handle returns a rabbit.Handler that runs h exactly once per message id
// for consumer (the queue name is a good consumer name). A message already
// recorded is acknowledged without calling h. Two copies handled at once are
// safe too: the second waits on the first's inbox row and then sees it.
func Handle(pool *pgxpool.Pool, consumer string, h Handler) rabbit.Handler {
	return func(ctx context.Context, d *amqp.Delivery) error {
		id, err := uuid.Parse(d.MessageId)
		if err != nil {
			return rabbit.Permanent(fmt.Errorf("%w: %q", ErrBadMessageID, d.MessageId))
		}
		return pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			const q = `INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`
			tag, err := tx.Exec(ctx, q, consumer, id)
			if err != nil {
				return fmt.Errorf("inbox: record %s: %w", id, err)
			}
			if tag.RowsAffected() == 0 {
				return nil // done before: acknowledge without effects
			}
			return h(ctx, tx, d)
		})
	}
}

// HandleBatch returns a rabbit.BatchHandler that applies a batch in one
// transaction: one statement records every message id, h runs for each
// message not recorded before (in batch order), and one commit makes all
// their effects durable. That is one transaction (and one WAL flush) for
// many messages when the queue has a backlog, and the same as Handle for a
// message that arrives alone.
//
// prepare, when not nil, runs first in the transaction with the messages
// that will be applied, when there are two or more: a handler whose messages
// lock shared rows (stock of a product) locks them there in one order, so
// that two batches never wait for each other in a cycle.
//
// When the transaction fails, each message is applied again alone, so that
// one message that fails (a permanent error, a transient one) does not hold
// back the others; each then gets its own result.
func HandleBatch(pool *pgxpool.Pool, consumer string, h Handler, prepare func(ctx context.Context, tx pgx.Tx, ds []*amqp.Delivery) error) rabbit.BatchHandler {
	one := Handle(pool, consumer, h)
	return func(ctx context.Context, batch []rabbit.Delivery) []error {
		errs := make([]error, len(batch))
		ids := make([]uuid.UUID, len(batch))
		var valid []int
		for i, d := range batch {
			id, err := uuid.Parse(d.MessageId)
			if err != nil {
				errs[i] = rabbit.Permanent(fmt.Errorf("%w: %q", ErrBadMessageID, d.MessageId))
				continue
			}
			ids[i] = id
			valid = append(valid, i)
		}
		if len(valid) <= 1 {
			for _, i := range valid {
				errs[i] = one(batch[i].Ctx, batch[i].Delivery)
			}
			return errs
		}
		err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
			fresh, err := record(ctx, tx, consumer, ids, valid)
			if err != nil {
				return err
			}
			var todo []int
			for _, i := range valid {
				// A message twice in one batch (a redelivery next to
				// its first copy) is applied once.
				if fresh[ids[i]] {
					delete(fresh, ids[i])
					todo = append(todo, i)
				}
			}
			if prepare != nil && len(todo) > 1 {
				ds := make([]*amqp.Delivery, len(todo))
				for k, i := range todo {
					ds[k] = batch[i].Delivery
				}
				if err := prepare(ctx, tx, ds); err != nil {
					return err
				}
			}
			for _, i := range todo {
				if err := h(batch[i].Ctx, tx, batch[i].Delivery); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			return errs
		}
		for _, i := range valid {
			errs[i] = one(batch[i].Ctx, batch[i].Delivery)
		}
		return errs
	}
}

// record inserts the inbox rows of the messages at valid and returns the
// ids that were not there before.
func record(ctx context.Context, tx pgx.Tx, consumer string, ids []uuid.UUID, valid []int) (map[uuid.UUID]bool, error) {
	list := make([]uuid.UUID, len(valid))
	for k, i := range valid {
		list[k] = ids[i]
	}
	const q = `INSERT INTO inbox (consumer, message_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING RETURNING message_id`
	rows, err := tx.Query(ctx, q, consumer, list)
	if err != nil {
		return nil, fmt.Errorf("inbox: record %d messages: %w", len(list), err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("inbox: record %d messages: %w", len(list), err)
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

// PurgeEvery purges records older than retention at start and then every
// interval until ctx ends, when it returns nil. A failed purge is logged and
// tried again at the next tick: it only delays the cleanup.
func PurgeEvery(ctx context.Context, pool *pgxpool.Pool, retention, interval time.Duration, log *slog.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if n, err := Purge(ctx, pool, retention); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "inbox purge failed", "error", err)
		} else if n > 0 {
			log.InfoContext(ctx, "inbox purged", "records", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
