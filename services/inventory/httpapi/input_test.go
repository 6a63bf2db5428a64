package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
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

// Every identifier and name the inventory API takes (the SKU in the path,
// the product's name and currency, the list's cursor and limit) is refused
// with a 400 when it holds a control character, and nothing is stored.
func TestControlCharactersAreRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := token(t, authn.RoleAdmin)
	const good = `{"name":"Mug","price_cents":1299,"currency":"EUR","stock":10}`
	if r := s.do(http.MethodPut, "/v1/products/MUG-1", admin, good); r.status != http.StatusCreated {
		t.Fatalf("create = %d %s", r.status, r.body)
	}
	want := decode[product](t, s.do(http.MethodGet, "/v1/products/MUG-1", "", ""))
	events := s.outboxCount()

	for _, c := range apitest.ControlChars {
		body := func(name, currency string) string {
			return `{"name":` + jsonString(t, name) + `,"price_cents":1299,"currency":` + jsonString(t, currency) + `,"stock":10}`
		}
		tests := []struct {
			name, method, path, body string
			typ, field               string
		}{
			{"product name", http.MethodPut, "/v1/products/MUG-1", body("Mug"+c.Char+"!", "EUR"), httpx.TypeInvalidBody, `"name"`},
			{"product name alone", http.MethodPut, "/v1/products/MUG-1", body(c.Char, "EUR"), httpx.TypeInvalidBody, `"name"`},
			{"currency", http.MethodPut, "/v1/products/MUG-1", body("Mug", "EU"+c.Char), httpx.TypeInvalidBody, `"currency"`},
			{"sku of PUT", http.MethodPut, "/v1/products/" + url.PathEscape("MUG-2"+c.Char), good, httpx.TypeInvalidParameter, "path"},
			{"sku of GET", http.MethodGet, "/v1/products/" + url.PathEscape(c.Char+"MUG-1"), "", httpx.TypeInvalidParameter, "path"},
			{"cursor", http.MethodGet, "/v1/products?cursor=" + url.QueryEscape("TVVH"+c.Char), "", httpx.TypeInvalidParameter, `"cursor"`},
			{"limit", http.MethodGet, "/v1/products?limit=" + url.QueryEscape("5"+c.Char), "", httpx.TypeInvalidParameter, `"limit"`},
		}
		for _, tt := range tests {
			tok := ""
			if tt.method == http.MethodPut {
				tok = admin
			}
			p := wantProblem(t, s.do(tt.method, tt.path, tok, tt.body), http.StatusBadRequest, tt.typ)
			if !strings.Contains(p.Detail, tt.field) || !strings.Contains(p.Detail, "control character") {
				t.Errorf("%s with %s: detail %q does not name %s and the control character", tt.name, c.Name, p.Detail, tt.field)
			}
		}
	}

	if diff := cmp.Diff(want, decode[product](t, s.do(http.MethodGet, "/v1/products/MUG-1", "", ""))); diff != "" {
		t.Errorf("product after the refusals (-want +got):\n%s", diff)
	}
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM products`).Scan(&n); err != nil || n != 1 {
		t.Errorf("products = %d (%v), want the one created", n, err)
	}
	if got := s.outboxCount(); got != events {
		t.Errorf("refused requests wrote %d events", got-events)
	}
}

// A product name that is not UTF-8 is refused rather than stored with the
// bad bytes replaced.
func TestInvalidUTF8IsRefused(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := token(t, authn.RoleAdmin)
	p := wantProblem(t, s.do(http.MethodPut, "/v1/products/MUG-1", admin, `{"name":"Mug`+"\xff"+`","price_cents":1,"currency":"EUR","stock":1}`),
		http.StatusBadRequest, httpx.TypeInvalidBody)
	if !strings.Contains(p.Detail, "UTF-8") {
		t.Errorf("detail %q does not name UTF-8", p.Detail)
	}
	wantProblem(t, s.do(http.MethodGet, "/v1/products/%FF", "", ""), http.StatusBadRequest, httpx.TypeInvalidParameter)
	if n := s.outboxCount(); n != 0 {
		t.Errorf("refused requests wrote %d events", n)
	}
}
