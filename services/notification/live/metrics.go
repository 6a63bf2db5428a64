package live

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// metrics are the hub's instruments, exported to Prometheus as
// notification_connections_open{transport}, notification_messages_sent_total,
// notification_send_queue_drops_total,
// notification_connections_refused_total{transport,reason} and
// notification_delivery_latency_seconds.
type metrics struct {
	open    metric.Int64UpDownCounter
	sentN   metric.Int64Counter
	drops   metric.Int64Counter
	refuse  metric.Int64Counter
	latency metric.Float64Histogram
	byTr    [2]metric.MeasurementOption
}

func newMetrics(m metric.Meter) (metrics, error) {
	var out metrics
	var err error
	if out.open, err = m.Int64UpDownCounter("notification.connections.open",
		metric.WithDescription("Live connections open on this replica.")); err != nil {
		return out, fmt.Errorf("live: metric: %w", err)
	}
	if out.sentN, err = m.Int64Counter("notification.messages.sent",
		metric.WithDescription("Status messages written to clients.")); err != nil {
		return out, fmt.Errorf("live: metric: %w", err)
	}
	if out.drops, err = m.Int64Counter("notification.send_queue.drops",
		metric.WithDescription("Connections closed because their send queue overflowed (a client too slow).")); err != nil {
		return out, fmt.Errorf("live: metric: %w", err)
	}
	if out.refuse, err = m.Int64Counter("notification.connections.refused",
		metric.WithDescription("Connections refused by a cap, by reason: order (a tracking link's viewers), customer (a JWT subject's streams), client (one address), replica (this replica is full).")); err != nil {
		return out, fmt.Errorf("live: metric: %w", err)
	}
	if out.latency, err = m.Float64Histogram("notification.delivery.latency",
		metric.WithUnit("s"),
		metric.WithDescription("From a status change (its at) to its write to a live client."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)); err != nil {
		return out, fmt.Errorf("live: metric: %w", err)
	}
	for _, tr := range []transport{transportWS, transportSSE} {
		out.byTr[tr] = metric.WithAttributeSet(attribute.NewSet(attribute.String("transport", tr.String())))
	}
	return out, nil
}

func (m metrics) opened(tr transport, n int64) { m.open.Add(context.Background(), n, m.byTr[tr]) }
func (m metrics) dropped(tr transport)         { m.drops.Add(context.Background(), 1, m.byTr[tr]) }

// The reasons of notification_connections_refused_total: which cap was
// full. Dashboards tell the caller's refusals (429) from the replica's
// (503) by them.
const (
	refusedOrder    = "order"
	refusedCustomer = "customer"
	refusedClient   = "client"
	refusedReplica  = "replica"
)

func (m metrics) refused(tr transport, reason string) {
	m.refuse.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("transport", tr.String()), attribute.String("reason", reason)))
}

// sent counts m; a change from Publish also records its delivery latency
// (a snapshot's statuses may be old, and would only blur it).
func (m metrics) sent(tr transport, msg *message) {
	if msg.topic {
		return // not an order's status
	}
	ctx := context.Background()
	m.sentN.Add(ctx, 1, m.byTr[tr])
	if msg.live {
		m.latency.Record(ctx, time.Since(msg.at).Seconds(), m.byTr[tr])
	}
}
