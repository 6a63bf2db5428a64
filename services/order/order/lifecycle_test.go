package order_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/services/order/order"
)

// TestNext spells out the expected outcome of every (status, event) pair,
// independently of the table in lifecycle.go: 6 statuses × 8 events.
func TestNext(t *testing.T) {
	t.Parallel()
	type want struct {
		to       order.Status
		reason   order.Reason
		commands []order.Command
		deadline order.Deadline
	}
	var (
		release = order.CommandReleaseReservation
		refund  = order.CommandRequestRefund
	)
	allowed := map[order.Status]map[order.Event]want{
		order.StatusPending: {
			order.EventStockReserved: {order.StatusReserved, "", []order.Command{order.CommandRequestPayment}, order.DeadlinePayment},
			order.EventStockRejected: {order.StatusCancelled, order.ReasonOutOfStock, nil, order.DeadlineClear},
			order.EventCancel:        {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventTimeout:       {order.StatusCancelled, order.ReasonTimeout, []order.Command{release, refund}, order.DeadlineClear},
		},
		order.StatusReserved: {
			order.EventPaymentAuthorized: {order.StatusConfirmed, "", []order.Command{order.CommandCommitReservation}, order.DeadlineClear},
			order.EventPaymentDeclined:   {order.StatusCancelled, order.ReasonPaymentDeclined, []order.Command{release}, order.DeadlineClear},
			order.EventCancel:            {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventTimeout:           {order.StatusCancelled, order.ReasonTimeout, []order.Command{release, refund}, order.DeadlineClear},
		},
		order.StatusConfirmed: {
			order.EventCancel: {order.StatusCancelled, order.ReasonCustomerRequest, []order.Command{release, refund}, order.DeadlineClear},
			order.EventShip:   {order.StatusShipped, "", nil, order.DeadlineClear},
		},
		order.StatusShipped: {
			order.EventDeliver: {order.StatusDelivered, "", nil, order.DeadlineClear},
		},
		order.StatusDelivered: {},
		order.StatusCancelled: {
			// Compensations: no status change, but the held stock or the
			// authorized payment is given back.
			order.EventStockReserved:     {order.StatusCancelled, "", []order.Command{release}, order.DeadlineKeep},
			order.EventPaymentAuthorized: {order.StatusCancelled, "", []order.Command{refund}, order.DeadlineKeep},
		},
	}
	if len(allowed) != len(order.Statuses) {
		t.Fatalf("test covers %d statuses, domain has %d", len(allowed), len(order.Statuses))
	}
	for _, from := range order.Statuses {
		for _, ev := range order.Events {
			t.Run(fmt.Sprintf("%s/%s", from, ev), func(t *testing.T) {
				t.Parallel()
				got, err := order.Next(from, ev)
				w, ok := allowed[from][ev]
				if !ok {
					if !errors.Is(err, order.ErrInvalidTransition) {
						t.Fatalf("Next(%s, %s) = %+v, %v; want ErrInvalidTransition", from, ev, got, err)
					}
					if ev == order.EventCancel && !errors.Is(err, order.ErrNotCancellable) {
						t.Errorf("refused cancel error %v does not match ErrNotCancellable", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("Next(%s, %s) error = %v, want a transition", from, ev, err)
				}
				wantT := order.Transition{From: from, On: ev, To: w.to, Reason: w.reason, Commands: w.commands, Deadline: w.deadline}
				if diff := cmp.Diff(wantT, got, cmpEmptyNil); diff != "" {
					t.Errorf("Next(%s, %s) mismatch (-want +got):\n%s", from, ev, diff)
				}
			})
		}
	}
}

var cmpEmptyNil = cmp.FilterValues(func(a, b []order.Command) bool { return len(a) == 0 && len(b) == 0 }, cmp.Comparer(func(_, _ []order.Command) bool { return true }))

// Every row of the table is reachable from pending, and a cancelled order
// never leaves cancelled.
func TestTableInvariants(t *testing.T) {
	t.Parallel()
	reached := map[order.Status]bool{order.StatusPending: true}
	for changed := true; changed; {
		changed = false
		for _, tr := range order.Transitions() {
			if reached[tr.From] && !reached[tr.To] {
				reached[tr.To], changed = true, true
			}
		}
	}
	for _, s := range order.Statuses {
		if !reached[s] {
			t.Errorf("status %s is unreachable from pending", s)
		}
	}
	for _, tr := range order.Transitions() {
		if tr.From.Terminal() && tr.Changes() {
			t.Errorf("transition %s --%s--> %s leaves a terminal status", tr.From, tr.On, tr.To)
		}
		if (tr.To == order.StatusCancelled) != (tr.Reason != "") && tr.Changes() {
			t.Errorf("transition %s --%s--> %s has reason %q; only cancellations carry one", tr.From, tr.On, tr.To, tr.Reason)
		}
		if tr.To == order.StatusCancelled && tr.Changes() && tr.From != order.StatusPending && tr.Reason != order.ReasonPaymentDeclined {
			// Money invariant: once payment may have been requested,
			// every way into cancelled asks for a refund.
			if !contains(tr.Commands, order.CommandRequestRefund) {
				t.Errorf("%s --%s--> cancelled sends no refund", tr.From, tr.On)
			}
		}
	}
	// Next returns copies: changing one does not change the table.
	tr, _ := order.Next(order.StatusPending, order.EventCancel)
	tr.Commands[0] = "tampered"
	if again, _ := order.Next(order.StatusPending, order.EventCancel); again.Commands[0] == "tampered" {
		t.Error("Next shares its Commands slice with the table")
	}
}

func contains(cs []order.Command, c order.Command) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

func TestOrderApply(t *testing.T) {
	t.Parallel()
	created := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	now := created.Add(time.Second)
	deadline := created.Add(30 * time.Second)
	pending := order.Order{ID: "o", Status: order.StatusPending, Version: 1, DeadlineAt: &deadline, CreatedAt: created, UpdatedAt: created}

	reserved, tr, _, err := pending.Apply(order.EventStockReserved, "", now, order.Timeouts{Payment: time.Minute})
	if err != nil || tr.To != order.StatusReserved {
		t.Fatalf("StockReserved = %+v, %v", tr, err)
	}
	if reserved.Status != order.StatusReserved || reserved.Version != 2 || !reserved.UpdatedAt.Equal(now) ||
		reserved.DeadlineAt == nil || !reserved.DeadlineAt.Equal(now.Add(time.Minute)) {
		t.Errorf("reserved order = %+v, want version 2 with the payment deadline", reserved)
	}
	if pending.Status != order.StatusPending || pending.DeadlineAt != &deadline {
		t.Errorf("Apply changed the order it was called on: %+v", pending)
	}

	confirmed, _, _, err := reserved.Apply(order.EventPaymentAuthorized, "pay-1", now, order.Timeouts{Payment: time.Minute})
	if err != nil || confirmed.Status != order.StatusConfirmed || confirmed.PaymentID != "pay-1" || confirmed.DeadlineAt != nil || confirmed.Version != 3 {
		t.Errorf("confirmed order = %+v, %v; want version 3, the payment, no deadline", confirmed, err)
	}

	// A compensation keeps the status and version but records the payment.
	cancelled := pending
	cancelled.Status, cancelled.Reason, cancelled.DeadlineAt = order.StatusCancelled, order.ReasonTimeout, nil
	after, tr, _, err := cancelled.Apply(order.EventPaymentAuthorized, "pay-2", now, order.Timeouts{Payment: time.Minute})
	if err != nil || tr.Changes() || after.Version != cancelled.Version || after.PaymentID != "pay-2" ||
		len(tr.Commands) != 1 || tr.Commands[0] != order.CommandRequestRefund {
		t.Errorf("late authorization = %+v, %+v, %v; want a refund and the payment recorded", after, tr, err)
	}

	if same, _, _, err := confirmed.Apply(order.EventStockReserved, "", now, order.Timeouts{Payment: time.Minute}); !errors.Is(err, order.ErrInvalidTransition) || same.Version != confirmed.Version {
		t.Errorf("duplicate StockReserved = %+v, %v; want ErrInvalidTransition and no change", same, err)
	}
}
