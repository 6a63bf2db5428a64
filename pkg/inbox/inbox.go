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
