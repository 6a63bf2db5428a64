package rabbit_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// Depths reports what waits in a queue, its retry queues and its DLQ; a
// queue it cannot ask is reported as an error and left out of the gauge.
func TestDepths(t *testing.T) {
	t.Parallel()
	conn := mustDial(t, rabbittest.NewVhost(t), "depth-test")
	q := testQueue("test.depth")
	if err := conn.Declare(context.Background(), rabbit.Topology{Exchanges: []string{"test.events"}, Queues: []rabbit.Queue{q}}); err != nil {
		t.Fatal(err)
	}
	pub := conn.NewPublisher()
	defer pub.Close()
	dead := msg(9, "z")
	dead.Exchange, dead.RoutingKey = rabbit.DLXName(q.Name), rabbit.DLQName(q.Name)
	publishAll(t, pub, []rabbit.Message{msg(1, "a"), msg(2, "b"), msg(3, "c"), dead})

	reader := sdkmetric.NewManualReader()
	missing := rabbit.Queue{Name: "test.missing"}
	d, err := rabbit.NewDepths(conn, sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"), q, missing)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := d.Sample(context.Background()); n != 0 || err == nil {
		t.Errorf("Sample = %d, %v; want 0 and the error of test.missing", n, err)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == "messaging.queue.depth" {
				for _, p := range g.DataPoints {
					got[p.Attributes.Encoded(attribute.DefaultEncoder())] = p.Value
				}
			}
		}
	}
	want := map[string]int64{
		"kind=main,messaging.destination.name=test.depth":  3,
		"kind=retry,messaging.destination.name=test.depth": 0,
		"kind=dlq,messaging.destination.name=test.depth":   1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("messaging.queue.depth (-want +got):\n%s", diff)
	}
}
