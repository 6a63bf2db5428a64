// Package consume applies the order service's OrderStatusChanged events to
// the notification service's tables and hands them to this replica's live
// connections.
//
// Two queues carry the same events (docs/decisions/0008-live-tracking.md):
//
//   - notification.status, shared by the replicas (competing consumers,
//     durable), so that every change reaches the database even while no
//     replica runs;
//   - notification.status.<instance>, one per replica, expiring ten minutes
//     after its replica went away, so that every replica sees every change
//     and can push it to the shoppers connected to it.
//
// Both handlers run inside inbox.Handle, and writing a change twice is
// harmless (status_feed keeps the first copy, order_status only moves
// forward), so either queue may deliver first.
package consume

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

// QueueShared is the queue the replicas share.
const QueueShared = "notification.status"

// InstanceExpiry is how long a replica's own queue outlives the replica.
const InstanceExpiry = 10 * time.Minute

var bindings = []rabbit.Binding{{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyOrderStatusChanged}}

// SharedQueue is the durable queue that records every change in the
// database, whichever replica takes it.
func SharedQueue() rabbit.Queue {
	return rabbit.Queue{Name: QueueShared, Bindings: bindings, RetryDelays: rabbit.DefaultRetryDelays}
}

// InstanceQueue is replica instance's own queue, notification.status.<instance>.
func InstanceQueue(instance string) rabbit.Queue {
	return rabbit.Queue{
		Name:        QueueShared + "." + instance,
		Bindings:    bindings,
		RetryDelays: rabbit.DefaultRetryDelays,
		Expires:     InstanceExpiry,
	}
}

// Publisher receives each change after it committed; *live.Hub is one.
type Publisher interface {
	Publish(status.Change)
}

// Handler returns the handler of queue: it records each change in the
// database through the inbox (consumer name = the queue name) and, when
// pub is not nil (a replica's own queue), commits without waiting for the
// WAL flush and hands the change to pub once the transaction committed. A
// message already handled by this queue is acknowledged without either.
// An unknown type, a corrupt body or an invalid event is dead-lettered.
func Handler(pool *pgxpool.Pool, queue string, pub Publisher) rabbit.Handler {
	apply := inbox.Handle(pool, queue, func(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
		c, err := decode(d)
		if err != nil {
			return rabbit.Permanent(err)
		}
		if pub != nil {
			// A replica's own queue need not wait for the WAL flush: the
			// change is visible (for snapshots) as soon as it commits, and
			// its durability comes from the shared queue's synchronous
			// commit, which either ran first or will run later and flush
			// this one with it. Half the fsyncs per change.
			if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
				return fmt.Errorf("consume: async commit: %w", err)
			}
		}
		if _, err := postgres.Apply(ctx, tx, c); err != nil {
			return err
		}
		if out, ok := ctx.Value(appliedKey{}).(*status.Change); ok {
			*out = c
		}
		return nil
	})
	return func(ctx context.Context, d *amqp.Delivery) error {
		var applied status.Change
		if err := apply(context.WithValue(ctx, appliedKey{}, &applied), d); err != nil {
			return err
		}
		// Every replica pushes the change to its own clients, even when
		// another replica stored it first: a client skips what it has.
		if pub != nil && applied.Seq > 0 {
			pub.Publish(applied)
		}
		return nil
	}
}

// appliedKey carries, through inbox.Handle, where the handler leaves the
// change it applied, so that it is published only after the commit.
type appliedKey struct{}

// ErrUnexpectedType is the permanent error of a message that is not an
// OrderStatusChanged.
var ErrUnexpectedType = errors.New("not an OrderStatusChanged")

func decode(d *amqp.Delivery) (status.Change, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return status.Change{}, err
	}
	ev, ok := msg.(*eventsv1.OrderStatusChanged)
	if !ok {
		return status.Change{}, fmt.Errorf("%w: %s", ErrUnexpectedType, d.Type)
	}
	return status.FromEvent(ev)
}
