// Package consume records the order service's OrderStatusChanged events in
// the notification service's tables.
//
// The replicas share one durable queue, notification.status (competing
// consumers), so each change is consumed and stored once, by whichever
// replica takes it, and reaches the database even while no replica runs.
// The replicas do not learn of changes here: storing a change announces it
// through PostgreSQL (postgres.Store.Save, postgres.Listener), and every
// replica, this one included, pushes it to its shoppers from there
// (docs/decisions/0008-live-tracking.md).
//
// Writing a change twice is harmless (status_feed keeps the first copy,
// order_status only moves forward, and only the first copy is announced),
// so a redelivery needs no inbox.
package consume

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/telemetry"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

// QueueShared is the queue the replicas share.
const QueueShared = "notification.status"

// SharedQueue is the durable queue that records every change in the
// database, whichever replica takes it.
func SharedQueue() rabbit.Queue {
	return rabbit.Queue{
		Name:        QueueShared,
		Bindings:    []rabbit.Binding{{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyOrderStatusChanged}},
		RetryDelays: rabbit.DefaultRetryDelays,
	}
}

// Handler records the status changes of SharedQueue.
type Handler struct {
	writer *postgres.Writer
}

// New returns the Handler storing changes through w.
func New(w *postgres.Writer) *Handler { return &Handler{writer: w} }

// Consumers returns the service's one consumer, of SharedQueue.
func (h *Handler) Consumers() []*rabbit.Consumer {
	return []*rabbit.Consumer{{Queue: SharedQueue(), Batch: h.handle}}
}

// handle is the batch handler of SharedQueue: it records the changes
// of a consumer lane's batch (the messages that waited on the lane; an
// order's messages share a lane, in queue order) through w with one call,
// so that they share a commit with each other and with the other lanes'.
// A failed write is retried on the spot for a while (see save) before
// its message goes to the consumer's delayed retry. An unknown type, a
// corrupt body or an invalid event is dead-lettered; the batch's other
// messages are not held back by it.
func (h *Handler) handle(ctx context.Context, batch []rabbit.Delivery) []error {
	errs := make([]error, len(batch))
	cs := make([]status.Change, 0, len(batch))
	at := make([]int, 0, len(batch)) // the message of cs[i] is batch[at[i]]
	for i, d := range batch {
		c, err := decode(d.Delivery)
		if err != nil {
			errs[i] = err
			continue
		}
		c.Traceparent = traceparent(d.Ctx)
		cs = append(cs, c)
		at = append(at, i)
	}
	for i, err := range save(ctx, h.writer, cs) {
		errs[at[i]] = err
	}
	return errs
}

// traceparent returns the W3C traceparent of ctx's span, or "".
func traceparent(ctx context.Context) string {
	carrier := map[string]string{}
	telemetry.InjectMap(ctx, carrier)
	return carrier["traceparent"]
}

// retryInPlace bounds how long a handler keeps retrying a change whose
// write failed before it hands the message back to the consumer's delayed
// retry.
const retryInPlace = 20 * time.Second

// save records cs through w and returns each change's error, retrying
// the failed ones on the spot for up to retryInPlace (a restarting
// database, connections it cut). The consumer would move a failed message
// to a delayed retry queue, and the order's next change, behind it on the
// same lane, would then be stored and announced first: every connection
// watching the order would hold that change back while it waits for the
// missing one to appear in the feed (live.Options.GapWait), and after that
// wait send it without the missing one, which they would then never send.
// Retrying here keeps an order's changes in order through a short outage.
func save(ctx context.Context, w *postgres.Writer, cs []status.Change) []error {
	errs := make([]error, len(cs))
	todo := make([]int, len(cs)) // indexes into cs of the changes not stored yet
	for i := range todo {
		todo[i] = i
	}
	deadline := time.Now().Add(retryInPlace)
	for backoff := 50 * time.Millisecond; len(todo) > 0; backoff = min(2*backoff, time.Second) {
		batch := make([]status.Change, len(todo))
		for k, i := range todo {
			batch[k] = cs[i]
		}
		failed := todo[:0]
		for k, err := range w.Save(ctx, batch...) {
			if errs[todo[k]] = err; err != nil {
				failed = append(failed, todo[k])
			}
		}
		todo = failed
		if len(todo) == 0 || time.Now().Add(backoff).After(deadline) {
			break
		}
		select {
		case <-ctx.Done():
			return errs
		case <-time.After(backoff):
		}
	}
	return errs
}

// ErrUnexpectedType is the permanent error of a message that is not an
// OrderStatusChanged.
var ErrUnexpectedType = errors.New("not an OrderStatusChanged")

// decode returns d as a status change, or a rabbit.Permanent error for an
// unknown type, an undecodable body or an invalid event (see
// status.FromEvent).
func decode(d *amqp.Delivery) (status.Change, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return status.Change{}, rabbit.Permanent(err)
	}
	ev, ok := msg.(*eventsv1.OrderStatusChanged)
	if !ok {
		return status.Change{}, rabbit.Permanent(fmt.Errorf("%w: %s", ErrUnexpectedType, d.Type))
	}
	c, err := status.FromEvent(ev)
	if err != nil {
		return status.Change{}, rabbit.Permanent(err)
	}
	return c, nil
}
