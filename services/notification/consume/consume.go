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
// Writing a change twice is harmless (status_feed keeps the first copy,
// order_status only moves forward), so either queue may deliver first, a
// redelivery needs no inbox, and both queues' handlers share one
// postgres.Writer, which commits the changes of concurrent handlers
// together.
package consume

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

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

// Handler returns the handler of a queue: it records each change through w
// and, when pub is not nil (a replica's own queue), hands the change to
// pub once it is committed — even when another queue or replica stored it
// first, since this replica's clients still need it (they skip what they
// have). A failed write is retried on the spot for a while (see apply)
// before the message goes to the consumer's delayed retry. An unknown
// type, a corrupt body or an invalid event is dead-lettered.
func Handler(w *postgres.Writer, pub Publisher) rabbit.Handler {
	return func(ctx context.Context, d *amqp.Delivery) error {
		c, err := decode(d)
		if err != nil {
			return rabbit.Permanent(err)
		}
		if err := apply(ctx, w, c); err != nil {
			return err
		}
		if pub != nil {
			pub.Publish(c)
		}
		return nil
	}
}

// retryInPlace bounds how long a handler keeps retrying a change whose
// write failed before it hands the message back to the consumer's delayed
// retry.
const retryInPlace = 20 * time.Second

// apply records c through w, retrying on the spot for up to retryInPlace
// (a restarting database, connections it cut). The consumer would move a
// failed message to a delayed retry queue, and the order's next change,
// behind it on the same lane, would then be stored and pushed first: the
// hub never sends a seq at or below the last one it sent, and the feed
// cannot fill the gap (the change is not stored yet), so the shoppers
// connected meanwhile would never get the failed change. Retrying here
// keeps an order's changes in order through a short outage.
func apply(ctx context.Context, w *postgres.Writer, c status.Change) error {
	deadline := time.Now().Add(retryInPlace)
	for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		err := w.Apply(ctx, c)
		if err == nil || time.Now().Add(backoff).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
	}
}

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
