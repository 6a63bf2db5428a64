package live

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/telemetry"
	"github.com/orderly/orderly/services/notification/status"
)

// delivery is the span of one status change handed to this replica's
// connections: "deliver status", a child of the consumer span that stored
// the change (status.Change.Traceparent, carried through NOTIFY), so that
// it sits in the order's trace whichever replica serves the shopper. Each
// write of the status to a client is an event on it ("websocket.send" or
// "sse.send"), and it ends once every connection it was offered to has
// sent or dropped it, so that its duration is the fan-out's. A connection
// that closes with the status still queued does not say so; the span then
// ends after deliveryGrace.
type delivery struct {
	span trace.Span
	left atomic.Int32 // connections yet to send or drop the status
	once sync.Once
	stop *time.Timer
}

// startDelivery starts c's delivery span for n connections, or returns
// nil when c carries no trace context: a status read back from the
// database, or one stored by a replica that did not send it.
func startDelivery(tracer trace.Tracer, c status.Change, n int, grace time.Duration) *delivery {
	if c.Traceparent == "" {
		return nil
	}
	ctx := telemetry.ExtractMap(context.Background(), map[string]string{"traceparent": c.Traceparent})
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	_, span := tracer.Start(ctx, "deliver status",
		trace.WithAttributes(
			attribute.String("orderly.order.id", c.OrderID),
			attribute.String("orderly.order.status", c.Status),
			attribute.Int64("orderly.order.seq", c.Seq),
			attribute.Int("orderly.live.connections", n),
		))
	if !span.IsRecording() {
		return nil
	}
	d := &delivery{span: span}
	d.left.Store(int32(n)) //nolint:gosec // connections of one order: a few dozen
	d.stop = time.AfterFunc(grace, d.end)
	return d
}

// sent records one connection's write of the status and releases it.
func (d *delivery) sent(tr transport) {
	if d == nil {
		return
	}
	d.span.AddEvent(tr.String()+".send", trace.WithAttributes(attribute.String("orderly.live.transport", tr.String())))
	d.release()
}

// release says one connection is done with the status.
func (d *delivery) release() {
	if d != nil && d.left.Add(-1) == 0 {
		d.end()
	}
}

func (d *delivery) end() {
	d.once.Do(func() {
		d.stop.Stop()
		d.span.End()
	})
}
