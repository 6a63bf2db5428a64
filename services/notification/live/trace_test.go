package live_test

import (
	"bufio"
	"context"
	"net/http"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/telemetry"
	"github.com/orderly/orderly/services/notification/live"
)

// A status that carries its trace is delivered in a span of that trace,
// with one event per client written to, WebSocket and event stream alike,
// which ends once every connection has sent or dropped the status; one
// without a trace makes no span.
func TestDeliverySpan(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, live.Options{Tracer: tp.Tracer("live")})

	first, second := dial(t, h.wsURL(orderA, "")), dial(t, h.wsURL(orderA, ""))
	readN(t, first, 1)
	readN(t, second, 1)
	resp, err := http.Get(h.url + "/events/" + orderA) //nolint:noctx // closed below
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := bufio.NewScanner(resp.Body)
	for events.Scan() {
		if events.Text() == "id: 1" { // its snapshot is out
			break
		}
	}
	// This one is sent seq 2 by its snapshot, so it drops the published
	// copy rather than sending it.
	ahead := change(orderA, 2, "reserved")
	store.add(ahead)
	already := dial(t, h.wsURL(orderA, "since=0"))
	readN(t, already, 2)
	poll.Until(t, 5*time.Second, "four connections", func() bool { return h.Stats().WebSocket == 3 && h.Stats().SSE == 1 })

	// The consumer span that stored the change, as the listener hands it on.
	ctx, consumer := tp.Tracer("test").Start(context.Background(), "process notification.status")
	carrier := map[string]string{}
	telemetry.InjectMap(ctx, carrier)
	consumer.End()
	traced := ahead
	traced.Traceparent = carrier["traceparent"]
	h.Publish(traced)
	readN(t, first, 1)
	readN(t, second, 1)

	var deliver tracetest.SpanStub
	poll.Until(t, 5*time.Second, "the delivery span to end", func() bool {
		for _, s := range spans.GetSpans() {
			if s.Name == "deliver status" {
				deliver = s
				return true
			}
		}
		return false
	})
	if deliver.Parent.SpanID() != consumer.SpanContext().SpanID() || deliver.SpanContext.TraceID() != consumer.SpanContext().TraceID() {
		t.Errorf("deliver span parent %s in trace %s, want the consumer span %s of %s",
			deliver.Parent.SpanID(), deliver.SpanContext.TraceID(), consumer.SpanContext().SpanID(), consumer.SpanContext().TraceID())
	}
	sends := map[string]int{}
	for _, e := range deliver.Events {
		sends[e.Name]++
	}
	if sends["websocket.send"] != 2 || sends["sse.send"] != 1 || len(deliver.Events) != 3 {
		t.Errorf("deliver span events %v, want 2 websocket.send and 1 sse.send", sends)
	}
	attrs := map[string]string{}
	for _, kv := range deliver.Attributes {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	if attrs["orderly.order.id"] != orderA || attrs["orderly.order.seq"] != "2" || attrs["orderly.live.connections"] != "4" {
		t.Errorf("deliver span attributes %v", attrs)
	}

	// Without a trace context: no span.
	untraced := change(orderA, 3, "confirmed")
	store.add(untraced)
	h.Publish(untraced)
	readN(t, first, 1)
	for _, s := range spans.GetSpans() {
		if s.Name == "deliver status" && s.SpanContext.SpanID() != deliver.SpanContext.SpanID() {
			t.Errorf("a status without a trace context made span %v", s.SpanContext)
		}
	}
}
