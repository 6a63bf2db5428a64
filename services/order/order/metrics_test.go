package order_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/services/order/order"
)

// TestStepTimings checks what each kind of status change measures: the
// time in the status it leaves, the step a timeout awaited, and the whole
// saga when the order leaves its awaited part.
func TestStepTimings(t *testing.T) {
	t.Parallel()
	placed := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 30 * time.Second}
	in := func(s order.Status, since time.Duration) order.Order {
		return order.Order{ID: "o", CustomerID: "c", Status: s, Version: 2, CreatedAt: placed, UpdatedAt: placed.Add(since)}
	}
	tests := []struct {
		name  string
		o     order.Order
		event order.Event
		at    time.Duration // after placing
		want  []order.StepTiming
	}{
		{"reserved", in(order.StatusPending, 0), order.EventStockReserved, 2 * time.Second,
			[]order.StepTiming{{From: order.StatusPending, To: order.StatusReserved, Took: 2 * time.Second}}},
		{"confirmed settles the saga", in(order.StatusReserved, 2*time.Second), order.EventPaymentAuthorized, 5 * time.Second,
			[]order.StepTiming{{From: order.StatusReserved, To: order.StatusConfirmed, Took: 3 * time.Second, Settled: true, Total: 5 * time.Second}}},
		{"declined settles it too", in(order.StatusReserved, 2*time.Second), order.EventPaymentDeclined, 4 * time.Second,
			[]order.StepTiming{{From: order.StatusReserved, To: order.StatusCancelled, Reason: order.ReasonPaymentDeclined, Took: 2 * time.Second, Settled: true, Total: 4 * time.Second}}},
		{"out of stock", in(order.StatusPending, 0), order.EventStockRejected, time.Second,
			[]order.StepTiming{{From: order.StatusPending, To: order.StatusCancelled, Reason: order.ReasonOutOfStock, Took: time.Second, Settled: true, Total: time.Second}}},
		{"no answer from inventory", in(order.StatusPending, 0), order.EventTimeout, 31 * time.Second,
			[]order.StepTiming{{From: order.StatusPending, To: order.StatusCancelled, Reason: order.ReasonTimeout, Took: 31 * time.Second,
				TimedOut: "pending_to_reserved", Settled: true, Total: 31 * time.Second}}},
		{"no answer from payment", in(order.StatusReserved, time.Second), order.EventTimeout, 32 * time.Second,
			[]order.StepTiming{{From: order.StatusReserved, To: order.StatusCancelled, Reason: order.ReasonTimeout, Took: 31 * time.Second,
				TimedOut: "reserved_to_confirmed", Settled: true, Total: 32 * time.Second}}},
		{"shipping is after the saga", in(order.StatusConfirmed, 5*time.Second), order.EventShip, time.Hour,
			[]order.StepTiming{{From: order.StatusConfirmed, To: order.StatusShipped, Took: time.Hour - 5*time.Second}}},
		{"a confirmed order cancelled settles nothing again", in(order.StatusConfirmed, 5*time.Second), order.EventCancel, time.Minute,
			[]order.StepTiming{{From: order.StatusConfirmed, To: order.StatusCancelled, Reason: order.ReasonCustomerRequest, Took: 55 * time.Second}}},
		{"a compensation changes no status and measures nothing", in(order.StatusCancelled, time.Second), order.EventStockReserved, time.Minute, nil},
		{"a step that does not apply measures nothing", in(order.StatusShipped, time.Second), order.EventStockReserved, time.Minute, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := order.ApplySteps(map[string]order.Order{"o": tc.o},
				[]order.Step{{OrderID: "o", Event: tc.event, PaymentID: "p"}}, placed.Add(tc.at), timeouts)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, out.Timings); diff != "" {
				t.Errorf("timings (-want +got):\n%s", diff)
			}
		})
	}
}

// Two steps of one order in one run: the second took no time, since both
// are decided at the same instant.
func TestStepTimingsOfOneRun(t *testing.T) {
	t.Parallel()
	placed := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	o := order.Order{ID: "o", CustomerID: "c", Status: order.StatusPending, Version: 1, CreatedAt: placed, UpdatedAt: placed}
	out, err := order.ApplySteps(map[string]order.Order{"o": o}, []order.Step{
		{OrderID: "o", Event: order.EventStockReserved}, {OrderID: "o", Event: order.EventPaymentAuthorized, PaymentID: "p"},
	}, placed.Add(time.Second), order.Timeouts{Reserve: time.Minute, Payment: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	want := []order.StepTiming{
		{From: order.StatusPending, To: order.StatusReserved, Took: time.Second},
		{From: order.StatusReserved, To: order.StatusConfirmed, Settled: true, Total: time.Second},
	}
	if diff := cmp.Diff(want, out.Timings); diff != "" {
		t.Errorf("timings (-want +got):\n%s", diff)
	}
}

func TestAwaited(t *testing.T) {
	t.Parallel()
	for s, want := range map[order.Status]string{
		order.StatusPending: "pending_to_reserved", order.StatusReserved: "reserved_to_confirmed",
		order.StatusConfirmed: "", order.StatusShipped: "", order.StatusDelivered: "", order.StatusCancelled: "",
	} {
		if got := order.Awaited(s); got != want {
			t.Errorf("Awaited(%s) = %q, want %q", s, got, want)
		}
	}
}

// TestSagaMetricsRecord checks the series the alerts and dashboard read:
// step durations by step and reason, the saga's by outcome, and the
// timeouts by awaited step, both exported at 0 before any timeout.
func TestSagaMetricsRecord(t *testing.T) {
	t.Parallel()
	reader := sdkmetric.NewManualReader()
	m, err := order.NewSagaMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"order.timeouts step=pending_to_reserved":   "0",
		"order.timeouts step=reserved_to_confirmed": "0",
	}
	if diff := cmp.Diff(want, collect(t, reader)); diff != "" {
		t.Errorf("before any step (-want +got):\n%s", diff)
	}

	var nilMetrics *order.SagaMetrics
	nilMetrics.Record(context.Background(), []order.StepTiming{{From: order.StatusPending, To: order.StatusReserved}})

	m.Record(context.Background(), []order.StepTiming{
		{From: order.StatusPending, To: order.StatusReserved, Took: 2 * time.Second},
		{From: order.StatusReserved, To: order.StatusConfirmed, Took: 3 * time.Second, Settled: true, Total: 5 * time.Second},
		{From: order.StatusPending, To: order.StatusCancelled, Reason: order.ReasonTimeout, Took: 31 * time.Second,
			TimedOut: "pending_to_reserved", Settled: true, Total: 31 * time.Second},
	})
	want = map[string]string{
		"order.timeouts step=pending_to_reserved":                           "1",
		"order.timeouts step=reserved_to_confirmed":                         "0",
		"order.saga.step.duration step=pending_to_reserved":                 "1 in 2s",
		"order.saga.step.duration step=reserved_to_confirmed":               "1 in 3s",
		"order.saga.step.duration reason=timeout,step=pending_to_cancelled": "1 in 31s",
		"order.saga.duration outcome=confirmed":                             "1 in 5s",
		"order.saga.duration outcome=cancelled,reason=timeout":              "1 in 31s",
	}
	if diff := cmp.Diff(want, collect(t, reader)); diff != "" {
		t.Errorf("after three steps (-want +got):\n%s", diff)
	}
}

// collect returns every data point of reader as "name attrs" → value
// ("count in sum" for a histogram).
func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]string {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					got[m.Name+" "+p.Attributes.Encoded(attribute.DefaultEncoder())] = fmt.Sprint(p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					got[m.Name+" "+p.Attributes.Encoded(attribute.DefaultEncoder())] = fmt.Sprintf("%d in %vs", p.Count, p.Sum)
				}
			}
		}
	}
	return got
}
