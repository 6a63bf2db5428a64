package rabbit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/pkg/telemetry"
)

var (
	spansOnce sync.Once
	spans     *tracetest.InMemoryExporter
)

// recordSpans installs, once for the package, a global tracer provider
// that keeps every span in memory, as telemetry.Setup installs one in a
// service; tests tell their spans apart by trace id.
func recordSpans() *tracetest.InMemoryExporter {
	spansOnce.Do(func() {
		spans = tracetest.NewInMemoryExporter()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)))
	})
	return spans
}

// spansOf returns the ended spans of trace id.
func spansOf(id trace.TraceID) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans.GetSpans() {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

func attrs(s tracetest.SpanStub) map[attribute.Key]string {
	m := map[attribute.Key]string{}
	for _, kv := range s.Attributes {
		m[kv.Key] = kv.Value.String()
	}
	return m
}

func checkAttrs(t *testing.T, s tracetest.SpanStub, want map[attribute.Key]string) {
	t.Helper()
	got := attrs(s)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("span %q: %s = %q, want %q (all: %v)", s.Name, k, got[k], v, got)
		}
	}
}

func byKind(ss []tracetest.SpanStub, k trace.SpanKind) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range ss {
		if s.SpanKind == k {
			out = append(out, s)
		}
	}
	return out
}

// A message's trace goes on through the broker: the publish is a producer
// span under the writer's span, and its handling a consumer span under the
// producer, linked to it, with the messaging conventions' attributes.
func TestSpansFollowTheMessage(t *testing.T) {
	t.Parallel()
	recordSpans()
	conn := mustDial(t, rabbittest.NewVhost(t), "trace-test")
	q := testQueue("traced")
	seen := make(chan trace.SpanContext, 1)
	startConsumer(t, conn, q, func(ctx context.Context, _ *amqp.Delivery) error {
		seen <- trace.SpanContextFromContext(ctx)
		return nil
	})

	// What the outbox does: the writer's context travels in the headers.
	wctx, writer := otel.Tracer("test").Start(context.Background(), "POST /v1/orders")
	m := msg(1, "order-1")
	telemetry.InjectHeaders(wctx, m.Headers)
	writer.End()
	before := m.Headers["traceparent"]
	pub := conn.NewPublisher()
	defer func() { _ = pub.Close() }()
	publishAll(t, pub, []rabbit.Message{m})
	if m.Headers["traceparent"] != before {
		t.Error("Publish changed the caller's headers")
	}

	var handled trace.SpanContext
	select {
	case handled = <-seen:
	case <-time.After(30 * time.Second):
		t.Fatal("message not handled")
	}
	id := writer.SpanContext().TraceID()
	if handled.TraceID() != id {
		t.Fatalf("handler ran in trace %s, want the writer's %s", handled.TraceID(), id)
	}
	var producer, consumer tracetest.SpanStub
	poll.Until(t, 10*time.Second, "producer and consumer spans", func() bool {
		ps, cs := byKind(spansOf(id), trace.SpanKindProducer), byKind(spansOf(id), trace.SpanKindConsumer)
		if len(ps) == 1 && len(cs) == 1 {
			producer, consumer = ps[0], cs[0]
			return true
		}
		return false
	})

	if producer.Name != "publish test.events" || producer.Parent.SpanID() != writer.SpanContext().SpanID() {
		t.Errorf("producer span %q with parent %s, want \"publish test.events\" under the writer's %s",
			producer.Name, producer.Parent.SpanID(), writer.SpanContext().SpanID())
	}
	checkAttrs(t, producer, map[attribute.Key]string{
		"messaging.system":                           "rabbitmq",
		"messaging.operation.type":                   "send",
		"messaging.operation.name":                   "publish",
		"messaging.destination.name":                 "test.events",
		"messaging.rabbitmq.destination.routing_key": "thing.happened",
		"messaging.message.id":                       "m-1",
		"messaging.message.conversation_id":          "order-1",
		"messaging.message.body.size":                "1",
	})

	if consumer.Name != "process traced" || consumer.Parent.SpanID() != producer.SpanContext.SpanID() {
		t.Errorf("consumer span %q with parent %s, want \"process traced\" under the producer %s",
			consumer.Name, consumer.Parent.SpanID(), producer.SpanContext.SpanID())
	}
	if len(consumer.Links) != 1 || consumer.Links[0].SpanContext.SpanID() != producer.SpanContext.SpanID() {
		t.Errorf("consumer span links %v, want one to the producer %s", consumer.Links, producer.SpanContext.SpanID())
	}
	if handled.SpanID() != consumer.SpanContext.SpanID() {
		t.Errorf("handler ran in span %s, want the consumer span %s", handled.SpanID(), consumer.SpanContext.SpanID())
	}
	checkAttrs(t, consumer, map[attribute.Key]string{
		"messaging.system":                        "rabbitmq",
		"messaging.operation.type":                "process",
		"messaging.destination.name":              "test.events",
		"messaging.destination.subscription.name": "traced",
		"messaging.message.id":                    "m-1",
		"messaging.message.conversation_id":       "order-1",
		"orderly.messaging.outcome":               "ack",
	})
}

// Messages of several traces handled in one batch: each keeps its own
// consumer span in its own trace, and the batch's work runs in a root span
// linked to every producer, to which each message's span links back.
func TestBatchSpanLinksItsMessages(t *testing.T) {
	t.Parallel()
	recordSpans()
	url := rabbittest.NewVhost(t)
	conn := mustDial(t, url, "trace-batch-test")
	q := testQueue("traced-batch")
	release := make(chan struct{})
	type call struct {
		ctx trace.SpanContext
		ds  []trace.SpanContext
	}
	var (
		mu    sync.Mutex
		calls []call
	)
	run(t, conn, &rabbit.Consumer{Conn: conn, Queue: q, Workers: 1, Batch: func(ctx context.Context, batch []rabbit.Delivery) []error {
		c := call{ctx: trace.SpanContextFromContext(ctx)}
		for _, d := range batch {
			c.ds = append(c.ds, trace.SpanContextFromContext(d.Ctx))
		}
		mu.Lock()
		first := len(calls) == 0
		calls = append(calls, c)
		mu.Unlock()
		if first {
			<-release // the others queue up behind the first meanwhile
		}
		return make([]error, len(batch))
	}})
	pub := conn.NewPublisher()
	defer func() { _ = pub.Close() }()

	writers := map[trace.TraceID]bool{}
	publish := func(i int) {
		ctx, span := otel.Tracer("test").Start(context.Background(), "writer")
		m := msg(i, "order-batch")
		telemetry.InjectHeaders(ctx, m.Headers)
		span.End()
		writers[span.SpanContext().TraceID()] = true
		publishAll(t, pub, []rabbit.Message{m})
	}
	publish(0)
	poll.Until(t, 30*time.Second, "the first message to be handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) == 1
	})
	for i := 1; i <= 3; i++ {
		publish(i)
	}
	// Once the broker has handed every message over, they wait in the
	// worker's lane and the next call takes them together.
	ch, _, err := conn.Channel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ch.Close() }()
	poll.Until(t, 30*time.Second, "the broker to deliver every message", func() bool {
		qi, err := ch.QueueDeclarePassive(q.Name, true, false, false, false, nil)
		return err == nil && qi.Messages == 0
	})
	close(release)
	poll.Until(t, 30*time.Second, "every message to be handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range calls {
			n += len(c.ds)
		}
		return n == 4
	})

	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 2 || len(calls[1].ds) != 3 {
		t.Fatalf("batches %v, want one of 1 then one of 3", calls)
	}
	if !calls[0].ctx.Equal(calls[0].ds[0]) {
		t.Errorf("a lone message's batch ran in %v, want its own span %v", calls[0].ctx, calls[0].ds[0])
	}
	b := calls[1]
	if writers[b.ctx.TraceID()] {
		t.Errorf("the batch ran in a writer's trace %s, want one of its own", b.ctx.TraceID())
	}
	var batchSpan tracetest.SpanStub
	poll.Until(t, 10*time.Second, "the batch span", func() bool {
		ss := spansOf(b.ctx.TraceID())
		if len(ss) > 0 {
			batchSpan = ss[0]
		}
		return len(ss) > 0
	})
	if batchSpan.SpanKind != trace.SpanKindConsumer || batchSpan.Parent.IsValid() {
		t.Errorf("batch span kind %v parent %v, want a consumer root", batchSpan.SpanKind, batchSpan.Parent)
	}
	checkAttrs(t, batchSpan, map[attribute.Key]string{"messaging.batch.message_count": "3", "messaging.operation.type": "process"})
	linked := map[trace.TraceID]bool{}
	for _, l := range batchSpan.Links {
		linked[l.SpanContext.TraceID()] = true
	}
	for _, d := range b.ds {
		if !writers[d.TraceID()] || !linked[d.TraceID()] {
			t.Errorf("message span in trace %s: want a writer's trace that the batch span links to", d.TraceID())
		}
		for _, s := range spansOf(d.TraceID()) {
			if s.SpanContext.SpanID() != d.SpanID() {
				continue
			}
			if l := s.Links; len(l) != 2 || l[1].SpanContext.SpanID() != b.ctx.SpanID() {
				t.Errorf("message span links %v, want the producer's and the batch span %s", l, b.ctx.SpanID())
			}
		}
	}
}
