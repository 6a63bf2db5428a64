package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
)

// The consumer's span joins the trace of the request that wrote the event,
// across the outbox table and the broker: the relay's publish of the event
// is a producer span under the writer's, linked to the span of the relay's
// batch, a root of its own that links to every event's writer.
func TestTraceContextTravelsWithTheEvent(t *testing.T) {
	// Global propagator and provider, as telemetry.Setup installs them in a
	// service; not parallel because of the globals.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	spans := tracetest.NewInMemoryExporter()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	e := newEnv(t)
	got := make(chan trace.SpanContext, 1)
	ctx, cancel := context.WithCancel(context.Background())
	c := &rabbit.Consumer{Conn: e.conn, Queue: e.queue,
		Handler: func(ctx context.Context, _ *amqp.Delivery) error {
			got <- trace.SpanContextFromContext(ctx)
			return nil
		}}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("consumer: %v", err)
		}
	}()
	e.startRelay(t, e.conn.NewPublisher())

	wctx, span := otel.Tracer("test").Start(context.Background(), "POST /v1/orders")
	err := pg.Transact(wctx, e.pool, func(tx pgx.Tx) error { return outbox.Add(wctx, tx, event("traced", 1)) })
	span.End()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case sc := <-got:
		if sc.TraceID() != span.SpanContext().TraceID() {
			t.Fatalf("consumer trace %s, want the writer's %s", sc.TraceID(), span.SpanContext().TraceID())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("event not delivered")
	}

	var producer, batch tracetest.SpanStub
	poll.Until(t, 10*time.Second, "the producer and batch spans", func() bool {
		for _, s := range spans.GetSpans() {
			switch {
			case s.SpanKind == trace.SpanKindProducer && s.SpanContext.TraceID() == span.SpanContext().TraceID():
				producer = s
			case s.Name == "send "+exchange:
				batch = s
			}
		}
		return producer.Name != "" && batch.Name != ""
	})
	if producer.Parent.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("producer span's parent %s, want the writer's %s", producer.Parent.SpanID(), span.SpanContext().SpanID())
	}
	if len(producer.Links) != 1 || producer.Links[0].SpanContext.SpanID() != batch.SpanContext.SpanID() {
		t.Errorf("producer span links %v, want one to the relay's batch %s", producer.Links, batch.SpanContext.SpanID())
	}
	if batch.Parent.IsValid() || batch.SpanKind != trace.SpanKindClient || len(batch.Links) != 1 ||
		batch.Links[0].SpanContext.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("batch span parent %v kind %v links %v, want a client root linked to the writer %s",
			batch.Parent, batch.SpanKind, batch.Links, span.SpanContext().SpanID())
	}
}
