package order_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/services/order/order"
)

// TestApplySteps checks a run of steps on several orders at once, as a
// batch of saga answers or a sweep brings them: steps of one order see the
// steps before them, a step that does not apply is reported and the others
// go on, and the outcome says what to save.
func TestApplySteps(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := created.Add(time.Second)
	timeouts := order.Timeouts{Reserve: 30 * time.Second, Payment: 30 * time.Second}
	deadline := created.Add(timeouts.Reserve)
	orderIn := func(id string, s order.Status) order.Order {
		o := order.Order{ID: id, CustomerID: "alice", Status: s, Version: 1, TotalCents: 100, Currency: "EUR", CreatedAt: created, UpdatedAt: created}
		if s == order.StatusPending {
			o.DeadlineAt = &deadline
		} else {
			o.Reason = order.ReasonCustomerRequest
		}
		return o
	}
	orders := map[string]order.Order{
		"a": orderIn("a", order.StatusPending),
		"b": orderIn("b", order.StatusPending),
		"c": orderIn("c", order.StatusCancelled),
	}
	step := func(id string, ev order.Event) order.Step { return order.Step{OrderID: id, Event: ev} }
	tests := []struct {
		name                   string
		steps                  []order.Step
		results                []string // status and version, or why the step did nothing
		changed, entered, evts []string
	}{
		{
			name:    "one order, two steps at once",
			steps:   []order.Step{step("a", order.EventStockReserved), {OrderID: "a", Event: order.EventPaymentAuthorized, PaymentID: "pay-a"}},
			results: []string{"reserved v2", "confirmed v3"},
			changed: []string{"a confirmed v3 pay-a"},
			entered: []string{"a reserved v2", "a confirmed v3"},
			evts:    []string{"OrderStatusChanged", "PaymentRequested", "OrderStatusChanged", "CommitReservation"},
		},
		{
			name:    "a duplicate is reported, the others go on",
			steps:   []order.Step{step("a", order.EventStockReserved), step("a", order.EventStockReserved), step("b", order.EventStockRejected)},
			results: []string{"reserved v2", "invalid", "cancelled v2"},
			changed: []string{"a reserved v2 ", "b cancelled v2 "},
			entered: []string{"a reserved v2", "b cancelled v2"},
			evts:    []string{"OrderStatusChanged", "PaymentRequested", "OrderStatusChanged", "OrderCancelled"},
		},
		{
			name:    "an unknown order",
			steps:   []order.Step{step("x", order.EventStockReserved)},
			results: []string{"not found"},
		},
		{
			name:    "another customer's order is not found",
			steps:   []order.Step{{OrderID: "a", Event: order.EventCancel, Owner: "mallory"}, {OrderID: "b", Event: order.EventCancel, Owner: "alice"}},
			results: []string{"not found", "cancelled v2"},
			changed: []string{"b cancelled v2 "},
			entered: []string{"b cancelled v2"},
			evts:    []string{"OrderStatusChanged", "OrderCancelled", "ReleaseReservation", "RefundRequested"},
		},
		{
			name:    "a compensation records the payment it refunds, with no history entry",
			steps:   []order.Step{{OrderID: "c", Event: order.EventPaymentAuthorized, PaymentID: "pay-c"}},
			results: []string{"cancelled v1"},
			changed: []string{"c cancelled v1 pay-c"},
			evts:    []string{"RefundRequested"},
		},
		{
			name:    "a compensation that records nothing changes no row",
			steps:   []order.Step{step("c", order.EventStockReserved)},
			results: []string{"cancelled v1"},
			evts:    []string{"ReleaseReservation"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, err := order.ApplySteps(orders, tt.steps, now, timeouts)
			if err != nil {
				t.Fatal(err)
			}
			var results, changed, entered, evts []string
			for _, r := range out.Results {
				switch {
				case errors.Is(r.Err, order.ErrNotFound):
					results = append(results, "not found")
				case errors.Is(r.Err, order.ErrInvalidTransition):
					results = append(results, "invalid")
				default:
					results = append(results, fmt.Sprintf("%s v%d", r.Order.Status, r.Order.Version))
				}
			}
			for _, o := range out.Changed {
				changed = append(changed, fmt.Sprintf("%s %s v%d %s", o.ID, o.Status, o.Version, o.PaymentID))
			}
			for _, o := range out.Entered {
				entered = append(entered, fmt.Sprintf("%s %s v%d", o.ID, o.Status, o.Version))
			}
			for _, e := range out.Events {
				evts = append(evts, e.Type[strings.LastIndex(e.Type, ".")+1:])
			}
			for name, d := range map[string]string{
				"results": cmp.Diff(tt.results, results), "changed": cmp.Diff(tt.changed, changed),
				"entered": cmp.Diff(tt.entered, entered), "events": cmp.Diff(tt.evts, evts),
			} {
				if d != "" {
					t.Errorf("%s (-want +got):\n%s", name, d)
				}
			}
			if orders["a"].Status != order.StatusPending || orders["c"].PaymentID != "" {
				t.Error("ApplySteps changed the orders it was given")
			}
		})
	}
}
