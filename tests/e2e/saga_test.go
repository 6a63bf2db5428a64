package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestSagaOutcomes places orders whose saga ends each way the contract
// names, on one stack, and checks the order, its history, the stock and the
// payment at the end.
func TestSagaOutcomes(t *testing.T) {
	s := stack.New(t, stack.Options{})
	admin := s.AdminToken(t)

	var (
		widget    = stack.Product{SKU: sku("widget"), PriceCents: 1250, Stock: 10}
		gadget    = stack.Product{SKU: sku("gadget"), PriceCents: 399, Stock: 5}
		scarce    = stack.Product{SKU: sku("scarce"), PriceCents: 100, Stock: 1}
		plenty    = stack.Product{SKU: sku("plenty"), PriceCents: 100, Stock: 7}
		declined  = stack.Product{SKU: sku("declined"), PriceCents: 700, Stock: 4}
		flaky     = stack.Product{SKU: sku("flaky"), PriceCents: 900, Stock: 4}
		expensive = stack.Product{SKU: sku("yacht"), PriceCents: 600_000, Stock: 3}
	)
	s.Seed(t, widget, gadget, scarce, plenty, declined, flaky, expensive)

	t.Run("happy path to delivered", func(t *testing.T) {
		t.Parallel()
		customer, token := s.NewCustomer(t)
		r := s.PostOrder(t, token, stack.NewUUID(), stack.OrderRequest{
			Items:         []stack.Item{{SKU: widget.SKU, Quantity: 3}, {SKU: gadget.SKU, Quantity: 2}},
			PaymentMethod: "pm_card_ok",
		})
		if r.Status != http.StatusCreated {
			t.Fatalf("POST /v1/orders = %s, want 201", r)
		}
		var placed stack.Order
		r.Decode(t, &placed)
		if loc := r.Header.Get("Location"); loc != "/v1/orders/"+placed.ID && loc != s.Order.URL()+"/v1/orders/"+placed.ID {
			t.Errorf("Location = %q, want /v1/orders/%s", loc, placed.ID)
		}
		if !uuidRE.MatchString(placed.ID) {
			t.Errorf("id %q is not a UUID", placed.ID)
		}
		wantTotal := int64(3*1250 + 2*399)
		if placed.CustomerID != customer || placed.Status != "pending" || placed.Version != 1 ||
			placed.TotalCents != wantTotal || placed.Currency != "EUR" || placed.TrackingToken == "" ||
			placed.CreatedAt.IsZero() || placed.UpdatedAt.IsZero() {
			t.Errorf("created order = %+v, want customer %s, pending, version 1, total %d EUR, a tracking token and times", placed, customer, wantTotal)
		}
		for _, it := range placed.Items {
			want := map[string]int64{widget.SKU: 1250, gadget.SKU: 399}[it.SKU]
			if it.UnitPriceCents != want {
				t.Errorf("item %s unit price = %d, want %d", it.SKU, it.UnitPriceCents, want)
			}
		}
		if len(placed.Items) != 2 {
			t.Errorf("items = %+v, want 2 lines", placed.Items)
		}

		o := s.WaitStatus(t, token, placed.ID, "confirmed", "", settle)
		// Confirming commits the reservation: the units leave stock and
		// reserved alike.
		s.WaitStock(t, widget.SKU, 7, 0)
		s.WaitStock(t, gadget.SKU, 3, 0)
		ps := s.Payments(t, o.ID)
		if len(ps) != 1 || ps[0].Status != "authorized" || ps[0].AmountCents != wantTotal || ps[0].Currency != "EUR" || ps[0].OrderID != o.ID {
			t.Errorf("payments = %+v, want one authorized for %d EUR", ps, wantTotal)
		}

		for _, step := range []struct{ action, status string }{{"ship", "shipped"}, {"deliver", "delivered"}} {
			r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/"+step.action, admin, nil)
			if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
				t.Fatalf("POST %s = %s, want 200 or 202", step.action, r)
			}
			s.WaitStatus(t, token, o.ID, step.status, "", settle)
		}
		o = s.GetOrder(t, token, o.ID)
		checkHistory(t, o, "pending", "reserved", "confirmed", "shipped", "delivered")
		if o.Reason != "" {
			t.Errorf("delivered order has reason %q", o.Reason)
		}
		// A delivered order can be neither cancelled nor shipped again.
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/cancel", token, nil); r.Status != http.StatusConflict {
			t.Errorf("cancel a delivered order = %s, want 409", r)
		} else {
			r.Problem(t)
		}
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/ship", admin, nil); r.Status != http.StatusConflict {
			t.Errorf("ship a delivered order = %s, want 409", r)
		}

		l := s.ListOrders(t, token, nil)
		if len(l.Orders) != 1 || l.Orders[0].ID != o.ID || l.Orders[0].Status != "delivered" {
			t.Errorf("GET /v1/orders = %+v, want just %s, delivered", l.Orders, o.ID)
		}
		if l := s.ListOrders(t, token, url.Values{"status": {"cancelled"}}); len(l.Orders) != 0 {
			t.Errorf("GET /v1/orders?status=cancelled = %+v, want none", l.Orders)
		}
	})

	t.Run("out of stock is cancelled and reserves nothing", func(t *testing.T) {
		t.Parallel()
		_, token := s.NewCustomer(t)
		// Two lines, the second short: all or nothing, so the first line's
		// units must not stay reserved either.
		o := s.PlaceOrder(t, token, stack.OrderRequest{
			Items:         []stack.Item{{SKU: plenty.SKU, Quantity: 2}, {SKU: scarce.SKU, Quantity: 2}},
			PaymentMethod: "pm_card_ok",
		})
		o = s.WaitStatus(t, token, o.ID, "cancelled", "out_of_stock", settle)
		checkHistory(t, o, "pending", "cancelled")
		s.WaitStock(t, scarce.SKU, 1, 0)
		s.WaitStock(t, plenty.SKU, 7, 0)
		if ps := s.Payments(t, o.ID); len(ps) != 0 {
			t.Errorf("payments for an out-of-stock order: %+v", ps)
		}
	})

	t.Run("declined card releases the reservation", func(t *testing.T) {
		t.Parallel()
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: declined.SKU, Quantity: 3}}, PaymentMethod: "pm_card_declined"})
		o = s.WaitStatus(t, token, o.ID, "cancelled", "payment_declined", settle)
		checkHistory(t, o, "pending", "reserved", "cancelled")
		s.WaitStock(t, declined.SKU, 4, 0)
		ps := s.Payments(t, o.ID)
		if len(ps) != 1 || ps[0].Status != "declined" {
			t.Errorf("payments = %+v, want one declined", ps)
		}
	})

	t.Run("flaky card is retried and confirmed", func(t *testing.T) {
		t.Parallel()
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: flaky.SKU, Quantity: 1}}, PaymentMethod: "pm_card_flaky"})
		o = s.WaitStatus(t, token, o.ID, "confirmed", "", settle)
		checkHistory(t, o, "pending", "reserved", "confirmed")
		s.WaitStock(t, flaky.SKU, 3, 0)
		ps := s.Payments(t, o.ID)
		if len(ps) != 1 || ps[0].Status != "authorized" || ps[0].AmountCents != 900 {
			t.Errorf("payments = %+v, want one authorized for 900", ps)
		}
	})

	t.Run("amount over 1,000,000 cents is declined", func(t *testing.T) {
		t.Parallel()
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: expensive.SKU, Quantity: 2}}, PaymentMethod: "pm_card_ok"})
		if o.TotalCents != 1_200_000 {
			t.Errorf("total = %d, want 1200000", o.TotalCents)
		}
		o = s.WaitStatus(t, token, o.ID, "cancelled", "payment_declined", settle)
		checkHistory(t, o, "pending", "reserved", "cancelled")
		s.WaitStock(t, expensive.SKU, 3, 0)
	})
}

// TestCustomerCancel cancels orders at every point before payment is done,
// with a slow gateway so that authorizations are in flight, and checks that
// each ends cancelled by the customer with its units back and no payment
// left authorized.
func TestCustomerCancel(t *testing.T) {
	s := stack.New(t, stack.Options{GatewayLatency: 800 * time.Millisecond})
	p := stack.Product{SKU: sku("cancel"), PriceCents: 500, Stock: 100}
	s.Seed(t, p)

	t.Run("right after placing", func(t *testing.T) {
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 2}}, PaymentMethod: "pm_card_ok"})
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/cancel", token, nil); r.Status != http.StatusAccepted {
			t.Fatalf("cancel = %s, want 202", r)
		}
		o = s.WaitStatus(t, token, o.ID, "cancelled", "customer_request", settle)
		if st := statuses(o.History); st[len(st)-1] != "cancelled" || o.History[len(o.History)-1].Reason != "customer_request" {
			t.Errorf("history = %+v, want it to end cancelled/customer_request", o.History)
		}
		s.WaitStock(t, p.SKU, 100, 0)
		waitPaymentsSettled(t, s, o.ID, 3*time.Second)
		// Cancelling again is a conflict, and changes nothing.
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/cancel", token, nil); r.Status != http.StatusConflict {
			t.Errorf("second cancel = %s, want 409", r)
		}
	})

	t.Run("while the payment is being authorized", func(t *testing.T) {
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
		s.WaitStatus(t, token, o.ID, "reserved", "", settle)
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/cancel", token, nil); r.Status != http.StatusAccepted {
			t.Fatalf("cancel = %s, want 202", r)
		}
		o = s.WaitStatus(t, token, o.ID, "cancelled", "customer_request", settle)
		checkHistory(t, o, "pending", "reserved", "cancelled")
		s.WaitStock(t, p.SKU, 100, 0)
		// The gateway was most likely authorizing already: the charge is
		// refunded. (Had the cancel overtaken the request, payment voids it
		// and lists nothing; either way nothing stays charged.)
		ps := waitPaymentsSettled(t, s, o.ID, 5*time.Second)
		if len(ps) > 1 || (len(ps) == 1 && ps[0].Status != "refunded") {
			t.Errorf("payments = %+v, want one refunded (or none)", ps)
		}
		if len(ps) == 0 {
			t.Logf("the cancel overtook the payment request: nothing was charged")
		}
	})

	t.Run("after confirmation", func(t *testing.T) {
		// Before shipping, a confirmed order can still be cancelled: the
		// authorization is refunded and the committed units return to stock.
		before := s.Product(t, p.SKU)
		_, token := s.NewCustomer(t)
		o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 3}}, PaymentMethod: "pm_card_ok"})
		s.WaitStatus(t, token, o.ID, "confirmed", "", settle)
		s.WaitStock(t, p.SKU, before.Stock-3, 0)
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/cancel", token, nil); r.Status != http.StatusAccepted {
			t.Fatalf("cancel a confirmed order = %s, want 202", r)
		}
		o = s.WaitStatus(t, token, o.ID, "cancelled", "customer_request", settle)
		checkHistory(t, o, "pending", "reserved", "confirmed", "cancelled")
		s.WaitStock(t, p.SKU, before.Stock, 0)
		var ps []stack.Payment
		poll.UntilNil(t, settle, "the payment to be refunded", func() error {
			ps = s.Payments(t, o.ID)
			if len(ps) != 1 || ps[0].Status != "refunded" {
				return fmt.Errorf("payments %+v", ps)
			}
			return nil
		})
		// A cancelled order cannot be shipped.
		if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.ID+"/ship", s.AdminToken(t), nil); r.Status != http.StatusConflict {
			t.Errorf("ship a cancelled order = %s, want 409", r)
		} else {
			r.Problem(t)
		}
	})

	t.Run("racing the authorization", func(t *testing.T) {
		// Cancels at staggered moments across the saga: before the
		// reservation, during it, while the gateway authorizes, after the
		// confirmation. Whatever the interleaving, each ends cancelled,
		// uncharged, with its units back.
		before := s.Product(t, p.SKU)
		const n = 10
		type placed struct {
			token string
			order stack.Order
		}
		orders := make([]placed, n)
		for i := range orders {
			_, token := s.NewCustomer(t)
			orders[i] = placed{token, s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})}
		}
		start := time.Now()
		for i, o := range orders {
			// Spread the cancels over 0–2.25 s: the first before anything
			// happened, the last after the 800 ms authorization.
			if wait := time.Duration(i)*250*time.Millisecond - time.Since(start); wait > 0 {
				time.Sleep(wait) // pacing the cancels, not waiting for a result
			}
			if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+o.order.ID+"/cancel", o.token, nil); r.Status != http.StatusAccepted {
				t.Errorf("cancel order %d = %s, want 202", i, r)
			}
		}
		for _, o := range orders {
			got := s.WaitStatus(t, o.token, o.order.ID, "cancelled", "customer_request", settle)
			if last := got.History[len(got.History)-1]; last.Status != "cancelled" || last.Seq != got.Version {
				t.Errorf("order %s history %+v does not end with the cancel at its version %d", got.ID, got.History, got.Version)
			}
			for _, pay := range waitPaymentsSettled(t, s, o.order.ID, 3*time.Second) {
				if pay.Status == "authorized" {
					t.Errorf("order %s cancelled but its payment %s is authorized", o.order.ID, pay.ID)
				}
			}
		}
		s.WaitStock(t, p.SKU, before.Stock, 0)
	})
}

// TestPaymentServiceDown stops the payment service, so that the payment
// step never answers: the order must time out and release its stock, and
// when payment comes back it must not charge the dead order.
func TestPaymentServiceDown(t *testing.T) {
	s := stack.New(t, stack.Options{ReserveTimeout: 5 * time.Second, PaymentTimeout: 3 * time.Second})
	p := stack.Product{SKU: sku("timeout"), PriceCents: 2500, Stock: 10}
	s.Seed(t, p)

	s.Payment.Stop(t)
	_, token := s.NewCustomer(t)
	o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 4}}, PaymentMethod: "pm_card_ok"})
	placedAt := time.Now()
	s.WaitStatus(t, token, o.ID, "reserved", "", settle)
	s.WaitStock(t, p.SKU, 10, 4)
	o = s.WaitStatus(t, token, o.ID, "cancelled", "timeout", settle)
	if waited := time.Since(placedAt); waited < 3*time.Second {
		t.Errorf("cancelled after %v, before the 3 s payment deadline", waited)
	}
	checkHistory(t, o, "pending", "reserved", "cancelled")
	s.WaitStock(t, p.SKU, 10, 0)

	// Payment comes back to a queue holding the order's PaymentRequested
	// (past its deadline) and RefundRequested.
	s.Payment.Start(t)
	poll.UntilNil(t, settle, "payment.requests to drain", func() error {
		if n := s.QueueMessages(t, "payment.requests"); n > 0 {
			return fmt.Errorf("%d messages left", n)
		}
		return nil
	})
	ps := waitPaymentsSettled(t, s, o.ID, 3*time.Second)
	for _, pay := range ps {
		if pay.Status != "declined" && pay.Status != "voided" {
			t.Errorf("payment %+v of a timed-out order, want declined (expired) or voided", pay)
		}
	}
	if o := s.GetOrder(t, token, o.ID); o.Status != "cancelled" || o.Version != 3 {
		t.Errorf("order after payment came back = %s v%d, want cancelled v3", o.Status, o.Version)
	}
	s.WaitStock(t, p.SKU, 10, 0)

	// And the stack works again.
	o2 := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
	s.WaitStatus(t, token, o2.ID, "confirmed", "", settle)
	s.WaitStock(t, p.SKU, 9, 0)
}

// TestInventoryServiceDown stops the inventory service, so that the
// reservation step never answers: the order must time out, and when
// inventory comes back to the waiting OrderPlaced and ReleaseReservation it
// must end up holding nothing for the dead order.
func TestInventoryServiceDown(t *testing.T) {
	s := stack.New(t, stack.Options{ReserveTimeout: 3 * time.Second, PaymentTimeout: 5 * time.Second})
	p := stack.Product{SKU: sku("noinventory"), PriceCents: 1500, Stock: 10}
	s.Seed(t, p)

	s.Inventory.Stop(t)
	_, token := s.NewCustomer(t)
	// The deadline runs from the order's creation, inside the POST: the
	// clock starts before it is sent, never after the answer.
	placedAt := time.Now()
	o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 3}}, PaymentMethod: "pm_card_ok"})
	o = s.WaitStatus(t, token, o.ID, "cancelled", "timeout", settle)
	if waited := time.Since(placedAt); waited < 3*time.Second {
		t.Errorf("cancelled after %v, before the 3 s reservation deadline", waited)
	}
	checkHistory(t, o, "pending", "cancelled")

	s.Inventory.Start(t)
	poll.UntilNil(t, settle, "inventory.orders to drain", func() error {
		if n := s.QueueMessages(t, "inventory.orders"); n > 0 {
			return fmt.Errorf("%d messages left", n)
		}
		return nil
	})
	s.WaitStock(t, p.SKU, 10, 0)
	waitPaymentsSettled(t, s, o.ID, 3*time.Second)
	if got := s.GetOrder(t, token, o.ID); got.Status != "cancelled" || got.Version != 2 {
		t.Errorf("order after inventory came back = %s v%d, want cancelled v2", got.Status, got.Version)
	}
	// Whatever inventory answered late (a reservation, compensated at
	// once) must not hold units: the next order for all ten goes through.
	o2 := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 10}}, PaymentMethod: "pm_card_ok"})
	s.WaitStatus(t, token, o2.ID, "confirmed", "", settle)
	s.WaitStock(t, p.SKU, 0, 0)
}
