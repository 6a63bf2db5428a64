// Package e2e drives the real order, inventory and payment binaries, wired
// to the real PostgreSQL and RabbitMQ, through their public HTTP APIs only,
// and checks the order saga's promises: every order ends in the state the
// contract says (docs/saga.md), stock is never oversold, a cancelled order
// is never left charged, a retried request never makes a second order, and
// bad or foreign requests change nothing.
//
// Each top-level test starts its own stack (fresh databases and vhost) with
// the settings it needs; the tests run one after another, since several
// stacks at once on a small machine would trip the saga's deadlines.
package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// settle is how long a test waits for a saga to reach its end; generous,
// since the machine is shared with other tests.
const settle = 60 * time.Second

// sku returns a SKU unique to this run, so that a failing test's products
// are easy to tell apart in logs.
func sku(name string) string {
	return fmt.Sprintf("%s-%d", strings.ToUpper(name), time.Now().UnixNano()%1e9)
}

// statuses returns the statuses of an order's history, in order.
func statuses(h []stack.HistoryEntry) []string {
	var out []string
	for _, e := range h {
		out = append(out, e.Status)
	}
	return out
}

// checkHistory checks that the history goes through want with seq 1..n and
// that the order's version is n.
func checkHistory(t *testing.T, o stack.Order, want ...string) {
	t.Helper()
	if got := statuses(o.History); !slices.Equal(got, want) {
		t.Errorf("order %s history = %v, want %v", o.ID, got, want)
	}
	for i, e := range o.History {
		if e.Seq != i+1 {
			t.Errorf("order %s history[%d].seq = %d, want %d", o.ID, i, e.Seq, i+1)
		}
		if e.At.IsZero() {
			t.Errorf("order %s history[%d] has no time", o.ID, i)
		}
		if i > 0 && e.At.Before(o.History[i-1].At) {
			t.Errorf("order %s history[%d].at %v is before the previous entry's %v", o.ID, i, e.At, o.History[i-1].At)
		}
	}
	if o.Version != len(want) {
		t.Errorf("order %s version = %d, want %d", o.ID, o.Version, len(want))
	}
}

// waitPaymentsSettled waits until the order's payments hold no
// authorization: each is declined, refunded or voided. With none at all it
// waits for quiet, a few seconds after which no payment appeared, since a
// request voided before it ran leaves nothing to list.
func waitPaymentsSettled(t *testing.T, s *stack.Stack, orderID string, quiet time.Duration) []stack.Payment {
	t.Helper()
	start := time.Now()
	var ps []stack.Payment
	poll.UntilNil(t, settle, "payments of "+orderID+" to hold no authorization", func() error {
		ps = s.Payments(t, orderID)
		for _, p := range ps {
			if p.Status == "authorized" {
				return fmt.Errorf("payment %s still authorized", p.ID)
			}
		}
		if len(ps) == 0 && time.Since(start) < quiet {
			return fmt.Errorf("no payment yet")
		}
		return nil
	})
	return ps
}
