package order

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// StepName names a move of an order from one status to another, the step
// label of the saga's metrics: "pending_to_reserved" (inventory
// answered), "reserved_to_confirmed" (payment answered),
// "pending_to_cancelled", "confirmed_to_shipped" and so on.
func StepName(from, to Status) string { return string(from) + "_to_" + string(to) }

// Awaited returns the step an order in status s waits for, the one its
// deadline bounds (docs/saga.md step 9): pending_to_reserved for a
// pending order, reserved_to_confirmed for a reserved one, and "" for
// any other status, which has no deadline.
func Awaited(s Status) string {
	switch s {
	case StatusPending:
		return StepName(StatusPending, StatusReserved)
	case StatusReserved:
		return StepName(StatusReserved, StatusConfirmed)
	}
	return ""
}

// StepTiming is one status change a run of steps made, measured: what the
// saga's metrics record (SagaMetrics).
type StepTiming struct {
	// From and To are the statuses the order left and entered; Reason is
	// the cancel reason, if any.
	From, To Status
	Reason   Reason
	// Took is how long the order was in its previous status: from the
	// change that brought it there (its UpdatedAt) to this one.
	Took time.Duration
	// TimedOut is the step whose deadline passed (Awaited), when the
	// change is a timeout; empty otherwise.
	TimedOut string
	// Settled is set when the change ends the saga's awaited part (the
	// order leaves pending or reserved, confirmed or cancelled); Total is
	// then the time since the order was placed.
	Settled bool
	Total   time.Duration
}

// timing measures the change from o to next by tr, at next.UpdatedAt.
func timing(o, next Order, tr Transition) StepTiming {
	st := StepTiming{From: tr.From, To: tr.To, Reason: tr.Reason, Took: next.UpdatedAt.Sub(o.UpdatedAt)}
	if tr.On == EventTimeout {
		st.TimedOut = Awaited(tr.From)
	}
	if Awaited(tr.From) != "" && Awaited(tr.To) == "" {
		st.Settled, st.Total = true, next.UpdatedAt.Sub(o.CreatedAt)
	}
	return st
}

// SagaMetrics records the saga's progress (StepTiming) in three
// instruments, exported to Prometheus as
//
//	order_saga_step_duration_seconds{step, reason}  time spent in the status a step leaves
//	order_saga_duration_seconds{outcome, reason}    placing to confirmed or cancelled
//	order_timeouts_total{step}                      deadlines that passed, by awaited step
//
// A nil *SagaMetrics records nothing.
type SagaMetrics struct {
	step     metric.Float64Histogram
	saga     metric.Float64Histogram
	timeouts metric.Int64Counter
}

// sagaBuckets span a step answered at once (milliseconds) to an admin
// shipping a day later.
var sagaBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 86400}

// NewSagaMetrics creates the saga's instruments on meter; the timeouts
// of both awaited steps are exported at 0 from the start, so that an
// alert on their rate has a series before the first timeout. It fails
// only if an instrument cannot be created.
func NewSagaMetrics(meter metric.Meter) (*SagaMetrics, error) {
	var m SagaMetrics
	var err error
	if m.step, err = meter.Float64Histogram("order.saga.step.duration", metric.WithUnit("s"),
		metric.WithDescription("Time an order spent in a status before a step moved it on, by step (from_to_to) and cancel reason."),
		metric.WithExplicitBucketBoundaries(sagaBuckets...)); err != nil {
		return nil, fmt.Errorf("order: metric: %w", err)
	}
	if m.saga, err = meter.Float64Histogram("order.saga.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from placing an order to the saga's outcome, by outcome (confirmed or cancelled) and cancel reason."),
		metric.WithExplicitBucketBoundaries(sagaBuckets...)); err != nil {
		return nil, fmt.Errorf("order: metric: %w", err)
	}
	if m.timeouts, err = meter.Int64Counter("order.timeouts",
		metric.WithDescription("Orders cancelled because a saga step got no answer before the deadline, by the step awaited.")); err != nil {
		return nil, fmt.Errorf("order: metric: %w", err)
	}
	for _, s := range []Status{StatusPending, StatusReserved} {
		m.timeouts.Add(context.Background(), 0, metric.WithAttributes(attribute.String("step", Awaited(s))))
	}
	return &m, nil
}

// Record records timings.
func (m *SagaMetrics) Record(ctx context.Context, timings []StepTiming) {
	if m == nil {
		return
	}
	for _, t := range timings {
		attrs := []attribute.KeyValue{attribute.String("step", StepName(t.From, t.To))}
		if t.Reason != ReasonNone {
			attrs = append(attrs, attribute.String("reason", string(t.Reason)))
		}
		m.step.Record(ctx, t.Took.Seconds(), metric.WithAttributes(attrs...))
		if t.TimedOut != "" {
			m.timeouts.Add(ctx, 1, metric.WithAttributes(attribute.String("step", t.TimedOut)))
		}
		if t.Settled {
			outcome := []attribute.KeyValue{attribute.String("outcome", string(t.To))}
			if t.Reason != ReasonNone {
				outcome = append(outcome, attribute.String("reason", string(t.Reason)))
			}
			m.saga.Record(ctx, t.Total.Seconds(), metric.WithAttributes(outcome...))
		}
	}
}
