package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

// TestServiceKilledMidSaga kills each service with SIGKILL (no drain: the
// outbox may hold unsent events, the broker unacknowledged deliveries, a
// handler a half-done transaction) while a burst of orders runs through the
// saga, and starts it again on the same database. Every order must still
// settle as if nothing had happened: confirmed, one authorization each, the
// units taken once.
func TestServiceKilledMidSaga(t *testing.T) {
	s := stack.New(t, stack.Options{ReserveTimeout: time.Minute, PaymentTimeout: time.Minute})
	for _, victim := range []*stack.Service{s.Inventory, s.Payment, s.Order} {
		t.Run(victim.Name, func(t *testing.T) {
			const n = 40
			p := stack.Product{SKU: sku("crash-" + victim.Name), PriceCents: 350, Stock: 1000}
			s.Seed(t, p)
			tokens := make([]string, n)
			for i := range tokens {
				_, tokens[i] = s.NewCustomer(t)
			}
			ids := make([]string, n)
			var placed atomic.Int32
			var wg sync.WaitGroup
			orderURL := s.Order.URL()
			for i := range n {
				wg.Go(func() {
					r, err := s.Call(http.MethodPost, orderURL, "/v1/orders", tokens[i],
						stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 2}}, PaymentMethod: "pm_card_ok"},
						stack.Header{Key: "Idempotency-Key", Value: stack.NewUUID()})
					var o stack.Order
					if err != nil || r.Status != http.StatusCreated || json.Unmarshal(r.Body, &o) != nil {
						t.Errorf("order %d: %v %v, want 201", i, r, err)
						return
					}
					ids[i] = o.ID
					placed.Add(1)
				})
			}
			if victim == s.Order {
				// The order service is the API: kill it once every order
				// is placed, with their sagas in flight.
				wg.Wait()
				victim.Kill(t)
			} else {
				poll.UntilNil(t, settle, "a quarter of the orders to be placed", func() error {
					if placed.Load() < n/4 {
						return fmt.Errorf("%d placed", placed.Load())
					}
					return nil
				})
				victim.Kill(t)
				wg.Wait()
			}
			if t.Failed() {
				t.FailNow()
			}
			victim.Start(t)
			for i, id := range ids {
				got := s.WaitStatus(t, tokens[i], id, "confirmed", "", settle)
				checkHistory(t, got, "pending", "reserved", "confirmed")
				if ps := s.Payments(t, id); len(ps) != 1 || ps[0].Status != "authorized" {
					t.Errorf("order %s: payments %+v, want one authorized", id, ps)
				}
			}
			s.WaitStock(t, p.SKU, 1000-2*n, 0)
		})
	}
}
