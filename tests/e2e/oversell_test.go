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

// TestNoOversell races 200 customers for 50 units: exactly 50 orders are
// confirmed, the other 150 cancelled as out of stock, and the product ends
// with nothing on hand or reserved, never having gone below zero.
func TestNoOversell(t *testing.T) {
	const (
		stock     = 50
		customers = 200
	)
	// Deadlines far away: this test is about stock, not about how fast a
	// loaded machine answers.
	s := stack.New(t, stack.Options{ReserveTimeout: 2 * time.Minute, PaymentTimeout: 2 * time.Minute, RateLimitRPS: 100_000})
	p := stack.Product{SKU: sku("limited"), PriceCents: 1999, Stock: stock}
	s.Seed(t, p)

	// Watch the product while the orders run: available stock must never
	// be negative.
	stop := make(chan struct{})
	var watched sync.WaitGroup
	var worst atomic.Value
	watched.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			r, err := s.Call(http.MethodGet, s.Inventory.URL(), "/v1/products/"+p.SKU, "", nil)
			if err != nil || r.Status != http.StatusOK {
				continue
			}
			var got stack.Product
			if json.Unmarshal(r.Body, &got) != nil {
				continue
			}
			if got.Stock < 0 || got.Reserved < 0 || got.Stock-got.Reserved < 0 {
				worst.Store(got)
			}
		}
	})

	type placed struct {
		token, id string
	}
	orders := make([]placed, customers)
	for i := range orders {
		_, orders[i].token = s.NewCustomer(t)
	}
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			token := orders[i].token
			r, err := s.Call(http.MethodPost, s.Order.URL(), "/v1/orders", token,
				stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"},
				stack.Header{Key: "Idempotency-Key", Value: stack.NewUUID()})
			if err != nil || r.Status != http.StatusCreated {
				t.Errorf("order %d: POST = %v %v, want 201", i, r, err)
				return
			}
			var o stack.Order
			if err := json.Unmarshal(r.Body, &o); err != nil || o.ID == "" {
				t.Errorf("order %d: body %s: %v", i, r.Body, err)
				return
			}
			orders[i].id = o.ID
		})
	}
	wg.Wait()
	if t.Failed() {
		close(stop)
		watched.Wait()
		t.FailNow()
	}

	final := map[string]string{} // order id → status/reason
	poll.UntilNil(t, 3*time.Minute, "every order to settle", func() error {
		for _, o := range orders {
			if _, ok := final[o.id]; ok {
				continue
			}
			got := s.GetOrder(t, o.token, o.id)
			if got.Status == "confirmed" || got.Status == "cancelled" {
				final[o.id] = got.Status + "/" + got.Reason
			}
		}
		if len(final) < customers {
			return fmt.Errorf("%d of %d settled", len(final), customers)
		}
		return nil
	})
	close(stop)
	watched.Wait()

	count := map[string]int{}
	for _, st := range final {
		count[st]++
	}
	if count["confirmed/"] != stock || count["cancelled/out_of_stock"] != customers-stock || len(count) != 2 {
		t.Errorf("outcomes = %v, want %d confirmed and %d cancelled/out_of_stock", count, stock, customers-stock)
	}
	if w := worst.Load(); w != nil {
		t.Errorf("product went negative during the run: %+v", w)
	}
	s.WaitStock(t, p.SKU, 0, 0)

	// Every confirmed order holds exactly one authorization; the rejected
	// ones were never charged.
	for _, o := range orders {
		ps := s.Payments(t, o.id)
		switch final[o.id] {
		case "confirmed/":
			if len(ps) != 1 || ps[0].Status != "authorized" || ps[0].AmountCents != 1999 {
				t.Errorf("confirmed order %s: payments %+v, want one authorized for 1999", o.id, ps)
			}
		default:
			if len(ps) != 0 {
				t.Errorf("out-of-stock order %s: payments %+v, want none", o.id, ps)
			}
		}
	}
}
