package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/httpx/apitest"
)

// jsonString is s as a JSON string literal: control characters escaped
// (\u0000), DEL as is.
func jsonString(tb testing.TB, s string) string {
	tb.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Every identifier the order API takes, in the body, the query, the path or
// a header, is refused with a 400 when it holds a control character, and
// nothing is stored.
func TestControlCharactersAreRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	admin := tokens.For(t, "root", "admin")
	placed := s.mustPlace(alice)
	before := s.count("orders")

	for _, c := range apitest.ControlChars {
		body := func(customer, sku, method string) string {
			return `{"customer_id":` + jsonString(t, customer) + `,"items":[{"sku":` + jsonString(t, sku) +
				`,"quantity":1}],"payment_method":` + jsonString(t, method) + `}`
		}
		bad := "WID" + c.Char + "GET"
		tests := []struct {
			name, method, path, token, body string
			field                           string // named in the detail
		}{
			{"sku", http.MethodPost, "/v1/orders", alice, body("alice", bad, "pm_card_ok"), "items[0].sku"},
			{"sku at the end", http.MethodPost, "/v1/orders", alice, body("alice", "WIDGET"+c.Char, "pm_card_ok"), "items[0].sku"},
			{"payment_method", http.MethodPost, "/v1/orders", alice, body("alice", "WIDGET", "pm_card"+c.Char+"ok"), "payment_method"},
			{"customer_id", http.MethodPost, "/v1/orders", alice, body("alice"+c.Char, "WIDGET", "pm_card_ok"), "customer_id"},
			{"status filter", http.MethodGet, "/v1/orders?status=" + url.QueryEscape("pending"+c.Char), alice, "", `"status"`},
			{"cursor", http.MethodGet, "/v1/orders?cursor=" + url.QueryEscape("abc"+c.Char), alice, "", `"cursor"`},
			{"limit", http.MethodGet, "/v1/orders?limit=" + url.QueryEscape("1"+c.Char), alice, "", `"limit"`},
			{"order id", http.MethodGet, "/v1/orders/" + url.PathEscape(placed.ID+c.Char), alice, "", "path"},
			{"order id of cancel", http.MethodPost, "/v1/orders/" + url.PathEscape(c.Char+placed.ID) + "/cancel", alice, "", "path"},
			{"order id of ship", http.MethodPost, "/v1/orders/" + url.PathEscape(placed.ID+c.Char) + "/ship", admin, "", "path"},
		}
		for _, tt := range tests {
			for _, key := range []string{"", "key-" + c.Name + "-" + tt.name} {
				h := map[string]string{}
				if key != "" {
					h["Idempotency-Key"] = key
				}
				r := s.do(request{method: tt.method, path: tt.path, token: tt.token, body: tt.body, header: h})
				if r.status != http.StatusBadRequest {
					t.Errorf("%s with %s: status = %s, want 400", tt.name, c.Name, r)
					continue
				}
				if p := problemOf(t, r); !strings.Contains(p.Detail, tt.field) || !strings.Contains(p.Detail, "control character") {
					t.Errorf("%s with %s: detail %q does not name %s and the control character", tt.name, c.Name, p.Detail, tt.field)
				}
			}
		}

		// Go's server refuses a control character in a header (but a tab)
		// before any handler runs.
		if got := apitest.RawStatus(t, s.url, http.MethodPost, "/v1/orders", "Idempotency-Key", "key"+c.Char+"x"); got != http.StatusBadRequest {
			t.Errorf("Idempotency-Key with %s: status = %d, want 400", c.Name, got)
		}
	}
	// A tab does reach the handler, which takes printable ASCII only.
	r := s.do(request{method: http.MethodPost, path: "/v1/orders", token: alice, body: validBody, header: map[string]string{"Idempotency-Key": "key\tx"}})
	if p := problemOf(t, r); r.status != http.StatusBadRequest || p.Type != "https://orderly.dev/problems/invalid-idempotency-key" {
		t.Errorf("Idempotency-Key with a tab: %s, want 400 invalid-idempotency-key", r)
	}

	if n := s.count("orders"); n != before {
		t.Errorf("orders = %d, want %d: a refused request stored an order", n, before)
	}
	if n := s.count("idempotency_keys"); n != 0 {
		t.Errorf("idempotency_keys = %d, want 0", n)
	}
	if got := decode[orderBody](t, s.get(alice, "/v1/orders/"+placed.ID)); got.Status != "pending" || got.Version != 1 {
		t.Errorf("order after the refusals = %+v, want it pending and unchanged", got)
	}
}

// A body that is not UTF-8 is refused, not stored with the bad bytes
// replaced (encoding/json's way), nor passed on to PostgreSQL, which
// rejects it.
func TestInvalidUTF8IsRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	for _, tt := range []struct{ name, path, body string }{
		{"sku", "/v1/orders", `{"items":[{"sku":"WID` + "\xff" + `GET","quantity":1}],"payment_method":"pm_card_ok"}`},
		{"payment_method", "/v1/orders", `{"items":[{"sku":"WIDGET","quantity":1}],"payment_method":"pm_` + "\xc3\x28" + `"}`},
	} {
		r := s.post(alice, tt.path, tt.body)
		if p := problemOf(t, r); r.status != http.StatusBadRequest || !strings.Contains(p.Detail, "UTF-8") {
			t.Errorf("%s: %s, want 400 naming UTF-8", tt.name, r)
		}
	}
	r := s.get(alice, "/v1/orders?status=%FF")
	if p := problemOf(t, r); r.status != http.StatusBadRequest || !strings.Contains(p.Detail, "UTF-8") {
		t.Errorf("status filter: %s, want 400 naming UTF-8", r)
	}
	if n := s.count("orders") + s.count("outbox"); n != 0 {
		t.Errorf("invalid UTF-8 wrote %d rows", n)
	}
}
