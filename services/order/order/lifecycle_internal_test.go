package order

import (
	"slices"
	"testing"
)

// Every row of the table is reachable from pending, and a cancelled order
// never leaves cancelled.
func TestTableInvariants(t *testing.T) {
	t.Parallel()
	reached := map[Status]bool{StatusPending: true}
	for changed := true; changed; {
		changed = false
		for _, tr := range transitions {
			if reached[tr.From] && !reached[tr.To] {
				reached[tr.To], changed = true, true
			}
		}
	}
	for _, s := range Statuses {
		if !reached[s] {
			t.Errorf("status %s is unreachable from pending", s)
		}
	}
	for _, tr := range transitions {
		if tr.From.Terminal() && tr.Changes() {
			t.Errorf("transition %s --%s--> %s leaves a terminal status", tr.From, tr.On, tr.To)
		}
		if (tr.To == StatusCancelled) != (tr.Reason != "") && tr.Changes() {
			t.Errorf("transition %s --%s--> %s has reason %q; only cancellations carry one", tr.From, tr.On, tr.To, tr.Reason)
		}
		if tr.To == StatusCancelled && tr.Changes() && tr.From != StatusPending && tr.Reason != ReasonPaymentDeclined {
			// Money invariant: once payment may have been requested,
			// every way into cancelled asks for a refund.
			if !slices.Contains(tr.Commands, CommandRequestRefund) {
				t.Errorf("%s --%s--> cancelled sends no refund", tr.From, tr.On)
			}
		}
	}
	// Next returns copies: changing one does not change the table.
	tr, _ := Next(StatusPending, EventCancel)
	tr.Commands[0] = "tampered"
	if again, _ := Next(StatusPending, EventCancel); again.Commands[0] == "tampered" {
		t.Error("Next shares its Commands slice with the table")
	}
}
