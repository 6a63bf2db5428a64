package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
)

// FuzzPutProduct sends arbitrary SKUs (in the path) and bodies to PUT
// /v1/products/{sku} on a real database. Whatever the input: never a 5xx,
// every refusal a problem, every response one the contract describes, and
// a product stored is exactly the one sent, in text PostgreSQL took as it
// was sent.
func FuzzPutProduct(f *testing.F) {
	s := newTestServer(f, 0)
	admin := token(f, authn.RoleAdmin)
	const good = `{"name":"Mug","price_cents":1299,"currency":"EUR","stock":10}`
	for _, seed := range []struct{ sku, body string }{
		{"MUG-1", good},
		{"MUG-1", `{"name":"Tasse à café ☕","price_cents":0,"currency":"EUR","stock":0}`},
		{"MUG-1", `{"name":"Mug\u0000","price_cents":1299,"currency":"EUR","stock":10}`},
		{"MUG-1", `{"name":" ","price_cents":-1,"currency":"eur","stock":-1}`},
		{"MUG-1", `{"name":"` + strings.Repeat("é", 201) + `","price_cents":1,"currency":"EUR","stock":1}`},
		{"MUG-1", `{"name":"Mug","price_cents":1e20,"currency":"EUR","stock":1}`},
		{"MUG-1", `{"name":"Mug","currency":"EUR","stock":1}`},
		{"MUG-1", `{"name":"Mug","price_cents":1,"currency":"EUR","stock":1,"reserved":5}`},
		{"mug-1", good}, {"-MUG", good}, {"MUG\x00", good}, {"MUG%1", good}, {strings.Repeat("M", 65), good},
		{"MUG-1", ""}, {"MUG-1", "null"}, {"MUG-1", "{\"name\":\"\xff\"}"},
	} {
		f.Add(seed.sku, seed.body)
	}
	f.Fuzz(func(t *testing.T, sku, body string) {
		if sku == "" || strings.Contains(sku, "/") {
			// Not the operation: /v1/products/ has no route, and the
			// contract's router matches the decoded path, where %2F is a
			// separator.
			return
		}
		req := httptest.NewRequest(http.MethodPut, "/v1/products/"+url.PathEscape(sku), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		r := s.contract.Serve(t, s.handler, req)
		if r.Status != http.StatusOK && r.Status != http.StatusCreated {
			return
		}
		var sent, got product
		if err := json.Unmarshal([]byte(body), &sent); err != nil {
			t.Fatalf("PUT %q %q = %d, but it is not JSON: %v", sku, body, r.Status, err)
		}
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		sent.SKU, sent.Reserved = sku, got.Reserved
		if got != sent || httpx.CheckText(got.Name) != nil {
			t.Fatalf("PUT %q %q stored %+v", sku, body, got)
		}
	})
}

// FuzzListProducts sends arbitrary query strings (limit and cursor,
// repeated, empty, percent-encoded or not) to GET /v1/products. Whatever
// the query: never a 5xx, every refusal a problem, every response one the
// contract describes, and a page of at most limit products, after the
// cursor's SKU.
func FuzzListProducts(f *testing.F) {
	s := newTestServer(f, 0)
	admin := token(f, authn.RoleAdmin)
	for _, sku := range []string{"A-1", "B-2", "C-3"} {
		if r := s.do(http.MethodPut, "/v1/products/"+sku, admin, `{"name":"Item","price_cents":1,"currency":"EUR","stock":1}`); r.status != http.StatusCreated {
			f.Fatalf("PUT %s = %d %s", sku, r.status, r.body)
		}
	}
	page := decode[productPage](f, s.do(http.MethodGet, "/v1/products?limit=1", "", ""))
	for _, seed := range []string{
		"", "limit=1", "limit=1&cursor=" + page.NextCursor, "cursor=" + page.NextCursor + "&limit=100",
		"limit=0", "limit=101", "limit=-1", "limit=", "cursor=", "cursor=%00", "cursor=TVVH", "cursor=bXVn", "cursor=AA",
		"cursor=QS0x%07", "cursor=====", "limit=1&limit=x",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		req := apitest.NewQueryRequest(http.MethodGet, "/v1/products", query)
		if req == nil {
			return
		}
		r := s.contract.Serve(t, s.handler, req)
		if r.Status != http.StatusOK {
			return
		}
		var got productPage
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		q, _ := url.ParseQuery(query)
		limit := 100
		if q.Get("limit") != "" {
			limit, _ = strconv.Atoi(q.Get("limit"))
		}
		if len(got.Products) > limit {
			t.Fatalf("?%s listed %d products, more than %d", query, len(got.Products), limit)
		}
	})
}

// productPage is the body of GET /v1/products.
type productPage struct {
	Products   []product `json:"products"`
	NextCursor string    `json:"next_cursor"`
}
