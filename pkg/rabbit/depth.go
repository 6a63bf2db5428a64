package rabbit

import (
	"context"
	"errors"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Kinds of queue, the kind attribute of messaging.queue.depth.
const (
	// KindMain is a consumer's own queue: its depth is the backlog.
	KindMain = "main"
	// KindRetry is its delayed-retry queues together.
	KindRetry = "retry"
	// KindDeadLetter is its DLQ.
	KindDeadLetter = "dlq"
)

// Depths reports how many messages wait in a service's queues, as the
// gauge messaging.queue.depth (messaging_queue_depth in Prometheus) by
// messaging.destination.name (the consumer's queue, as on the consumer's
// own metrics) and kind (main, retry or dlq). Each service reports its own
// queues through its own broker user, whose permissions cover them
// (docs/deploy.md), so no one needs the management API. The counts are
// the broker's ready messages (a passive queue.declare), sampled by
// Sample rather than at scrape time so that a slow broker never stalls
// a scrape.
type Depths struct {
	conn   *Conn
	queues []Queue

	mu     sync.Mutex
	counts map[depthKey]int64
}

type depthKey struct{ queue, kind string }

// NewDepths returns the reporter of queues' depths on conn, its gauge
// created on meter. It fails only if the gauge cannot be created.
func NewDepths(conn *Conn, meter metric.Meter, queues ...Queue) (*Depths, error) {
	d := &Depths{conn: conn, queues: queues}
	_, err := meter.Int64ObservableGauge("messaging.queue.depth",
		metric.WithUnit("{message}"),
		metric.WithDescription("Messages ready in the service's queues, by consumer queue and kind: main (the backlog), retry (waiting for a delayed retry), dlq (dead letters)."),
		metric.WithInt64Callback(d.observe))
	if err != nil {
		return nil, fmt.Errorf("rabbit: metric: %w", err)
	}
	return d, nil
}

func (d *Depths) observe(_ context.Context, o metric.Int64Observer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, n := range d.counts {
		o.Observe(n, metric.WithAttributes(attribute.String("messaging.destination.name", k.queue), attribute.String("kind", k.kind)))
	}
	return nil
}

// Sample asks the broker for the depth of every queue and keeps the
// answers for the gauge; it returns 0 (for boot's Every, which logs a
// positive count as work done) and the errors of the queues it could not
// ask. A queue that could not be asked drops out of the gauge until it
// can be again: a stale count would keep an alert firing, or hide one.
func (d *Depths) Sample(ctx context.Context) (int64, error) {
	counts := map[depthKey]int64{}
	var errs []error
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
queues:
	for _, q := range d.queues {
		names := map[string]string{q.Name: KindMain, DLQName(q.Name): KindDeadLetter}
		for i := range q.RetryDelays {
			names[RetryQueueName(q.Name, i+1)] = KindRetry
		}
		for name, kind := range names {
			if ch == nil {
				var err error
				if ch, _, err = d.conn.Channel(ctx); err != nil {
					errs = append(errs, err)
					break queues
				}
			}
			// Passive: it only asks. A missing queue closes the channel,
			// so the next queue gets a new one.
			info, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
			if err != nil {
				errs = append(errs, fmt.Errorf("rabbit: depth of %s: %w", name, err))
				_ = ch.Close()
				ch = nil
				continue
			}
			counts[depthKey{q.Name, kind}] += int64(info.Messages)
		}
	}
	d.mu.Lock()
	d.counts = counts
	d.mu.Unlock()
	return 0, errors.Join(errs...)
}
