package rabbit_test

import (
	"context"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// TestDeadLetterDepth reads the DLQ depth gauge as Prometheus would: the
// dead letters of a declared queue are counted, and a queue whose DLQ does
// not exist is left out rather than reported empty.
func TestDeadLetterDepth(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "depth-test")
	rec := newRecorder()
	rec.fail = func(*amqp.Delivery) error { return rabbit.Permanent(errors.New("cannot decode")) }
	q := testQueue("test.depth")
	startConsumer(t, conn, q, rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a"), msg(2, "b")})

	reader := sdkmetric.NewManualReader()
	provider := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = provider.Shutdown(context.Background()) })
	if err := rabbit.ObserveDeadLetters(provider.Meter("test"), conn, []string{q.Name, "test.never-declared"}); err != nil {
		t.Fatal(err)
	}
	var got map[string]int64
	poll.Until(t, 15*time.Second, "two dead letters counted", func() bool {
		got = depths(t, reader)
		return got[q.Name] == 2
	})
	if _, ok := got["test.never-declared"]; ok {
		t.Errorf("a queue without a DLQ was reported: %v", got)
	}
}

// depths collects rabbit.dlq.messages by queue.
func depths(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "rabbit.dlq.messages" {
				for _, p := range g.DataPoints {
					v, _ := p.Attributes.Value(attribute.Key("queue"))
					out[v.AsString()] = p.Value
				}
			}
		}
	}
	return out
}
