package outbox

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/telemetry"
)

// tracer is the global one, which telemetry.Setup installs before the relay
// runs.
var tracer = otel.Tracer("github.com/orderly/orderly/pkg/outbox")

// startBatch starts the span of one relay batch, from the publish to the
// delete of the confirmed events: a CLIENT "send" span, a root, since a batch
// holds the events of many orders, that links to the context each event was
// written in. Each event's own producer span (rabbit.Publisher) is in its
// order's trace and links back to it
// (docs/decisions/0015-one-trace-per-order.md).
func startBatch(ctx context.Context, msgs []rabbit.Message) (context.Context, trace.Span) {
	links := make([]trace.Link, 0, len(msgs))
	name := "send"
	for i, m := range msgs {
		if sc := trace.SpanContextFromContext(telemetry.ExtractHeaders(context.Background(), m.Headers)); sc.IsValid() {
			links = append(links, trace.Link{SpanContext: sc})
		}
		if i == 0 {
			name = "send " + m.Exchange
		} else if m.Exchange != msgs[0].Exchange {
			name = "send"
		}
	}
	return tracer.Start(ctx, name,
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingBatchMessageCount(len(msgs)),
		))
}

// endBatch ends a batch's span, as failed when err is not nil.
func endBatch(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
