package httpx_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/httpx"
)

// FuzzDecodeJSON sends arbitrary bodies to DecodeJSON with a struct shaped
// like the APIs' (strings, numbers, a nested list). Whatever the body, it
// must not panic, a refusal must be a *DecodeError (which WriteError turns
// into a 4xx; anything else would be a 500), and what it accepts must hold
// no string that CheckText refuses: handlers and the database never see
// control characters.
func FuzzDecodeJSON(f *testing.F) {
	for _, seed := range []string{
		`{"customer_id":"c-1","items":[{"sku":"SKU-1","quantity":2}],"payment_method":"pm_card_ok"}`,
		`{"items":[{"sku":"SKU\u0000","quantity":1}]}`,
		`{"name":"bell\u0007"}`,
		`{"items":[{"sku":"a","quantity":1e400}]}`,
		`{"unknown":1}`,
		`{"items":null}`,
		`[]`, `null`, ``, `{`, `{"items":[{"sku":"\ud800"}]}`,
		"{\"name\":\"\xff\"}",
		`{"name":"a"}{"name":"b"}`,
		strings.Repeat(`[`, 10000),
	} {
		f.Add(seed)
	}
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	type body struct {
		CustomerID    string   `json:"customer_id"`
		Name          string   `json:"name"`
		PaymentMethod string   `json:"payment_method"`
		Items         []item   `json:"items"`
		Tags          []string `json:"tags"`
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(raw))
		r.Header.Set("Content-Type", "application/json")
		var dst body
		err := httpx.DecodeJSON(httptest.NewRecorder(), r, &dst)
		if err != nil {
			var de *httpx.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("DecodeJSON(%q) = %v, not a *DecodeError", raw, err)
			}
			return
		}
		texts := []string{dst.CustomerID, dst.Name, dst.PaymentMethod}
		texts = append(texts, dst.Tags...)
		for _, it := range dst.Items {
			texts = append(texts, it.SKU)
		}
		for _, s := range texts {
			if err := httpx.CheckText(s); err != nil {
				t.Fatalf("DecodeJSON(%q) accepted %q: %v", raw, s, err)
			}
		}
	})
}
