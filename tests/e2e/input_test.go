package e2e

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/orderly/orderly/tests/stack"
)

// TestControlCharactersAreRefused sends, through the running services, the
// two inputs a review found: a NUL in a SKU (the order API answered 500,
// PostgreSQL refusing the string) and a BEL in a product name (stored as
// is). Both get a 400 problem, and nothing is written anywhere.
func TestControlCharactersAreRefused(t *testing.T) {
	s := stack.New(t, stack.Options{})
	p := stack.Product{SKU: sku("ctl"), Name: "Mug", PriceCents: 100, Stock: 10}
	s.Seed(t, p)
	s.WaitCatalog(t, p.SKU, p.PriceCents)
	_, token := s.NewCustomer(t)
	before := s.Counts(t)

	order := map[string]any{"items": []any{map[string]any{"sku": p.SKU + "\x00", "quantity": 1}}, "payment_method": "pm_card_ok"}
	for _, key := range []string{"", stack.NewUUID()} {
		var hs []stack.Header
		if key != "" {
			hs = append(hs, stack.Header{Key: "Idempotency-Key", Value: key})
		}
		r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders", token, order, hs...)
		if r.Status != http.StatusBadRequest {
			t.Errorf("POST /v1/orders with a NUL in a SKU (key %q) = %s, want 400", key, r)
		}
		r.Problem(t)
	}

	body := map[string]any{"name": "Mug\abell", "price_cents": 100, "currency": "EUR", "stock": 10}
	for _, target := range []string{p.SKU, sku("ctl-new")} {
		r := s.Do(t, http.MethodPut, s.Inventory.URL(), "/v1/products/"+url.PathEscape(target), s.AdminToken(t), body)
		if r.Status != http.StatusBadRequest {
			t.Errorf("PUT /v1/products/%s with a BEL in the name = %s, want 400", target, r)
		}
		r.Problem(t)
	}
	if got := s.Product(t, p.SKU); got.Name != "Mug" {
		t.Errorf("product name = %q after the refused PUT, want %q", got.Name, "Mug")
	}
	if r := s.Do(t, http.MethodGet, s.Inventory.URL(), "/v1/products/"+url.PathEscape(sku("ctl-new")), "", nil); r.Status != http.StatusNotFound {
		t.Errorf("GET of the product the refused PUT would have created = %s, want 404", r)
	}
	if d := stack.DiffCounts(before, s.Counts(t)); d != "" {
		t.Errorf("rows written for the refused requests: %s", d)
	}
}
