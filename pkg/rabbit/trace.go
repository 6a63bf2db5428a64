package rabbit

import (
	"context"
	"maps"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/telemetry"
)

// Spans follow the OpenTelemetry messaging conventions, so that one trace
// follows an order across the broker (docs/decisions/0015-one-trace-per-order.md):
//
//   - Publisher.Send starts a PRODUCER span per message, "publish
//     <exchange>", whose parent is the trace context in the message's
//     headers (the request or consumer that wrote it, through the outbox)
//     or else ctx's span; when both are there and differ (the relay's batch
//     span in ctx), it links to ctx's. The producer's own context replaces
//     it in the headers, and the span ends when the broker confirms the
//     message (or fails it), so its duration is the publish round trip.
//   - A Consumer starts a CONSUMER span per delivery, "process <queue>",
//     whose parent is the producer's context from the headers and which
//     also links to it. A handler's database statements run inside it.
//   - A batch of several deliveries is handled in one transaction that
//     belongs to no single trace: it runs in a CONSUMER span of its own, a
//     root, that links to each message's producer, and each message's span
//     links to it in turn.
//
// The tracer is the global one, which telemetry.Setup installs before any
// publisher or consumer runs.
var tracer = otel.Tracer("github.com/orderly/orderly/pkg/rabbit")

const (
	operationPublish = "publish"
	operationProcess = "process"
)

// startPublish starts m's producer span and returns m with the span's
// context in a copy of its headers (the caller's map is left alone: it may
// be published again).
func startPublish(ctx context.Context, m Message) (Message, trace.Span) {
	sender := trace.SpanContextFromContext(ctx)
	ctx = telemetry.ExtractHeaders(ctx, m.Headers)
	var links []trace.Link
	if p := trace.SpanContextFromContext(ctx); sender.IsValid() && !p.Equal(sender) {
		// Sent as part of something else (the relay's batch): linked.
		links = append(links, trace.Link{SpanContext: sender})
	}
	_, span := tracer.Start(ctx, operationPublish+" "+m.Exchange,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName(operationPublish),
			semconv.MessagingDestinationName(m.Exchange),
			semconv.MessagingRabbitMQDestinationRoutingKey(m.RoutingKey),
			semconv.MessagingMessageID(m.MessageID),
			semconv.MessagingMessageConversationID(aggregateOf(m.Headers)),
			semconv.MessagingMessageBodySize(len(m.Body)),
		))
	h := make(amqp.Table, len(m.Headers)+1)
	maps.Copy(h, m.Headers)
	telemetry.InjectHeaders(trace.ContextWithSpan(ctx, span), h)
	m.Headers = h
	return m, span
}

// endPublish ends a producer span with the broker's answer.
func endPublish(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startProcess starts d's consumer span under ctx, continuing the trace of
// d's headers; batch, when valid, is the span of the batch d is handled in.
func (c *Consumer) startProcess(ctx context.Context, d *amqp.Delivery, batch trace.SpanContext) (context.Context, trace.Span) {
	ctx = telemetry.ExtractHeaders(ctx, d.Headers)
	var links []trace.Link
	if p := producerOf(ctx); p.IsValid() {
		links = append(links, trace.Link{SpanContext: p})
	}
	if batch.IsValid() {
		links = append(links, trace.Link{SpanContext: batch})
	}
	return tracer.Start(ctx, operationProcess+" "+c.Queue.Name,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName(operationProcess),
			// The conventions name the exchange the destination; the
			// queue is the subscription that received it.
			semconv.MessagingDestinationName(d.Exchange),
			semconv.MessagingDestinationSubscriptionName(c.Queue.Name),
			semconv.MessagingRabbitMQDestinationRoutingKey(d.RoutingKey),
			semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)), //nolint:gosec // a tag fits an int
			semconv.MessagingMessageID(d.MessageId),
			semconv.MessagingMessageConversationID(aggregateOf(d.Headers)),
			semconv.MessagingMessageBodySize(len(d.Body)),
		))
}

// startBatch starts the span of a batch of several deliveries: a root,
// since the batch belongs to several traces, linked to each delivery's
// producer.
func (c *Consumer) startBatch(ctx context.Context, ds []amqp.Delivery) (context.Context, trace.Span) {
	links := make([]trace.Link, 0, len(ds))
	for i := range ds {
		if p := producerOf(telemetry.ExtractHeaders(ctx, ds[i].Headers)); p.IsValid() {
			links = append(links, trace.Link{SpanContext: p})
		}
	}
	return tracer.Start(ctx, operationProcess+" "+c.Queue.Name,
		trace.WithNewRoot(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			semconv.MessagingSystemRabbitMQ,
			semconv.MessagingOperationTypeProcess,
			semconv.MessagingOperationName(operationProcess),
			semconv.MessagingDestinationSubscriptionName(c.Queue.Name),
			semconv.MessagingBatchMessageCount(len(ds)),
		))
}

// producerOf returns the span context that ExtractHeaders put in ctx: the
// producer's, when the headers carried one.
func producerOf(ctx context.Context) trace.SpanContext {
	if sc := trace.SpanContextFromContext(ctx); sc.IsRemote() {
		return sc
	}
	return trace.SpanContext{}
}

func aggregateOf(h amqp.Table) string {
	s, _ := h[HeaderAggregateID].(string)
	return s
}

// outcomeKey is the attribute of a consumer span that says how its
// delivery was settled (ack, retry, dead_letter, requeue).
const outcomeKey = attribute.Key("orderly.messaging.outcome")
