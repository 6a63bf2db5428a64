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
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/rabbit"
)

// The consumer's span joins the trace of the request that wrote the event,
// across the outbox table and the broker.
func TestTraceContextTravelsWithTheEvent(t *testing.T) {
	// Global propagator and provider, as telemetry.Setup installs them in a
	// service; not parallel because of the globals.
	otel.SetTextMapPropagator(propagation.TraceContext{})
	otel.SetTracerProvider(sdktrace.NewTracerProvider())
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
}
