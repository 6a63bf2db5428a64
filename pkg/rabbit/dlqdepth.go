package rabbit

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// depthTimeout bounds one reading of the dead-letter queues: a scrape must
// not wait for a broker that is reconnecting.
const depthTimeout = 2 * time.Second

// ObserveDeadLetters registers the gauge rabbit.dlq.messages on meter
// (rabbit_dlq_messages{queue} in Prometheus): at each collection, the
// messages waiting in the DLQ of each of queues (labeled with the queue's
// own name, not its DLQ's), read with a passive declare on a channel of
// conn. The broker answers a passive declare without the configure
// permission being exercised, and a service's user may read its own
// queues anyway. A DLQ that cannot be read (the link is down, the queue is
// not declared yet) is left out of that collection rather than reported as
// empty. It returns an error when the gauge cannot be registered.
func ObserveDeadLetters(meter metric.Meter, conn *Conn, queues []string) error {
	if len(queues) == 0 {
		return nil
	}
	gauge, err := meter.Int64ObservableGauge("rabbit.dlq.messages",
		metric.WithDescription("Messages waiting in a queue's dead-letter queue (<queue>.dlq), by queue."))
	if err != nil {
		return fmt.Errorf("rabbit: metric: %w", err)
	}
	attrs := make([]metric.ObserveOption, len(queues))
	for i, q := range queues {
		attrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("queue", q)))
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, depthTimeout)
		defer cancel()
		for i, q := range queues {
			n, err := dlqDepth(ctx, conn, q)
			if err != nil {
				continue // unknown is not zero
			}
			o.ObserveInt64(gauge, n, attrs[i])
		}
		return nil
	}, gauge)
	if err != nil {
		return fmt.Errorf("rabbit: metric: %w", err)
	}
	return nil
}

// dlqDepth returns how many messages wait in queue's DLQ. Each reading has
// a channel of its own: a passive declare of a missing queue closes its
// channel.
func dlqDepth(ctx context.Context, conn *Conn, queue string) (int64, error) {
	ch, _, err := conn.Channel(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = ch.Close() }()
	q, err := ch.QueueDeclarePassive(DLQName(queue), true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("rabbit: depth of %s: %w", DLQName(queue), err)
	}
	return int64(q.Messages), nil
}
