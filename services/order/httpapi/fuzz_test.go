package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/services/order/order"
)

// FuzzCreateOrder posts arbitrary bodies, with and without an
// Idempotency-Key, to POST /v1/orders on a real database. Whatever the
// input: never a 5xx, every refusal a problem, every response one the
// contract describes, and an order placed holds exactly the lines that
// were asked for, in text PostgreSQL took as it was sent (a SKU with a NUL
// was a 500).
func FuzzCreateOrder(f *testing.F) {
	s := newTestServer(f, 0)
	alice := tokens.For(f, "alice", "")
	for _, seed := range []struct{ body, key string }{
		{validBody, ""},
		{validBody, "key-1"},
		{`{"customer_id":"alice","items":[{"sku":"WIDGET","quantity":1000}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[{"sku":"WIDGET\u0000","quantity":1}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[{"sku":"WIDGET","quantity":1},{"sku":"DOLLAR","quantity":1}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[{"sku":"WIDGET","quantity":1},{"sku":"WIDGET","quantity":1}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[{"sku":"NOPE","quantity":1}],"payment_method":"pm_card_ok"}`, "key-2"},
		{`{"items":[{"sku":"WIDGET","quantity":1e3}],"payment_method":"pm\u200b"}`, ""},
		{`{"items":[{"sku":"WIDGET","quantity":-1}],"payment_method":" "}`, ""},
		{`{"customer_id":"bob","items":[{"sku":"WIDGET","quantity":1}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[{"sku":"` + strings.Repeat("W", 65) + `","quantity":1}],"payment_method":"pm_card_ok"}`, ""},
		{`{"items":[],"payment_method":"pm_card_ok"}`, "k\x7f"},
		{"{\"items\":[{\"sku\":\"WID\xffGET\",\"quantity\":1}],\"payment_method\":\"pm\"}", ""},
		{`{"items":null}`, ""}, {``, ""}, {`[`, ""},
	} {
		f.Add(seed.body, seed.key)
	}
	f.Fuzz(func(t *testing.T, body, key string) {
		req := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		r := s.contract.Serve(t, s.handler, req)
		if r.Status != http.StatusCreated {
			return
		}
		var (
			asked createBody
			got   orderBody
		)
		if err := json.Unmarshal([]byte(body), &asked); err != nil {
			t.Fatalf("POST %q = 201, but it is not JSON: %v", body, err)
		}
		if err := json.Unmarshal(r.Body, &got); err != nil {
			t.Fatal(err)
		}
		if got.CustomerID != "alice" || len(got.Items) != len(asked.Items) {
			t.Fatalf("POST %q placed %+v", body, got)
		}
		for i, it := range got.Items {
			if it.SKU != asked.Items[i].SKU || it.Quantity != asked.Items[i].Quantity || httpx.CheckText(it.SKU) != nil {
				t.Fatalf("POST %q placed line %+v, asked for %+v", body, it, asked.Items[i])
			}
		}
	})
}

// createBody is the body of POST /v1/orders, as a client writes it.
type createBody struct {
	Items []struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	} `json:"items"`
}

// FuzzListOrders sends arbitrary query strings (status, limit and cursor,
// repeated, empty, percent-encoded or not) to GET /v1/orders. Whatever the
// query: never a 5xx, every refusal a problem, every response one the
// contract describes, and a list of the caller's orders only, of the
// status asked for, at most as many as the limit.
func FuzzListOrders(f *testing.F) {
	s := newTestServer(f, 0)
	alice := tokens.For(f, "alice", "")
	for range 3 {
		s.mustPlace(alice)
	}
	s.mustPlace(tokens.For(f, "bob", ""))
	page := decode[listBody](f, s.get(alice, "/v1/orders?limit=1"))
	if page.NextCursor == nil {
		f.Fatal("no next_cursor after the first of three orders")
	}
	for _, seed := range []string{
		"", "status=pending", "status=cancelled&limit=100", "limit=1&cursor=" + *page.NextCursor,
		"cursor=" + *page.NextCursor + "&cursor=x", "cursor=", "status=", "limit=", "limit=0", "limit=101", "limit=-1",
		"limit=1e2", "status=PENDING", "status=%00", "cursor=%FF", "cursor=abc%07",
		// v1.<max int64 µs>.<uuid> and v1.-1.<uuid>, in base64url.
		"cursor=djEuOTIyMzM3MjAzNjg1NDc3NTgwNy4wMTkyZjBjNC01YjZlLTdhOGItOWMwZC0xZTJmM2E0YjVjNmQ",
		"cursor=djEuLTEuMDE5MmYwYzQtNWI2ZS03YThiLTljMGQtMWUyZjNhNGI1YzZk",
		"limit=2;status=pending", "a=%zz", "status=pending&status=reserved",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		got, q, ok := s.fuzzPage(t, alice, "/v1/orders", query)
		if !ok {
			return
		}
		for _, o := range got.Orders {
			if o.CustomerID != "alice" || q.Has("status") && o.Status != q.Get("status") {
				t.Fatalf("?%s listed %+v", query, o)
			}
		}
	})
}

// FuzzSearchOrders sends arbitrary query strings to the admin's GET
// /v1/admin/orders. Whatever the query: never a 5xx, every refusal a
// problem, every response one the contract describes, and every order
// listed matches the filters asked for, at most as many as the limit.
func FuzzSearchOrders(f *testing.F) {
	s := newTestServer(f, 0)
	admin := tokens.For(f, "ops", authn.RoleAdmin)
	alice, bob := tokens.For(f, "alice", ""), tokens.For(f, "bob", "")
	for range 3 {
		s.mustPlace(alice)
	}
	s.mustPlace(bob)
	page := decode[listBody](f, s.get(admin, "/v1/admin/orders?limit=1"))
	if page.NextCursor == nil {
		f.Fatal("no next_cursor after the first of four orders")
	}
	now := time.Now().UTC()
	for _, seed := range []string{
		"", "status=pending", "customer_id=alice", "customer_id=bob&status=cancelled&limit=100",
		"limit=1&cursor=" + *page.NextCursor, "customer_id=bob&cursor=" + *page.NextCursor,
		"created_after=" + url.QueryEscape(now.Add(-time.Hour).Format(time.RFC3339Nano)),
		"created_before=" + url.QueryEscape(now.Add(time.Hour).Format(time.RFC3339)) + "&created_after=2000-01-01T00:00:00Z",
		"created_after=2026-01-02T03:04:05.999999999%2B14:00&created_before=2026-01-02T03:04:06-12:00",
		"created_after=0000-01-01T00:00:00Z", "created_before=9999-12-31T23:59:59.999999999Z",
		"created_after=2026-01-02T03:04:05Z&created_before=2026-01-02T03:04:05Z",
		"created_after=2026-01-02T03:04:05+01:00", "created_after=2026-13-02T03:04:05Z", "created_after=",
		"customer_id=", "customer_id=a%00", "customer_id=%C3%A9", "customer_id=alice&customer_id=bob",
		"limit=0", "limit=101", "limit=1e2", "cursor=", "cursor=%FF", "status=PENDING",
		"cursor=djEuLTEuMDE5MmYwYzQtNWI2ZS03YThiLTljMGQtMWUyZjNhNGI1YzZk",
		"a=%zz", "status=pending&status=reserved",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, query string) {
		got, q, ok := s.fuzzPage(t, admin, "/v1/admin/orders", query)
		if !ok {
			return
		}
		after, _ := time.Parse(time.RFC3339Nano, q.Get("created_after"))
		before, _ := time.Parse(time.RFC3339Nano, q.Get("created_before"))
		for i, o := range got.Orders {
			switch {
			case q.Has("status") && o.Status != q.Get("status"),
				q.Has("customer_id") && o.CustomerID != q.Get("customer_id"),
				q.Has("created_after") && o.CreatedAt.Before(after),
				q.Has("created_before") && !o.CreatedAt.Before(before),
				i > 0 && o.CreatedAt.After(got.Orders[i-1].CreatedAt):
				t.Fatalf("?%s listed %+v", query, o)
			}
		}
	})
}

// fuzzPage sends GET path?query as tok through the contract and, for a 200,
// returns the page and the query parsed, having checked that the page is
// at most the query's limit long; ok is false for any other answer (the
// contract has checked it) and for a query no client could send.
func (s *testServer) fuzzPage(t *testing.T, tok, path, query string) (page listBody, q url.Values, ok bool) {
	t.Helper()
	req := apitest.NewQueryRequest(http.MethodGet, path, query)
	if req == nil {
		return listBody{}, nil, false
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	r := s.contract.Serve(t, s.handler, req)
	if r.Status != http.StatusOK {
		return listBody{}, nil, false
	}
	if err := json.Unmarshal(r.Body, &page); err != nil {
		t.Fatal(err)
	}
	q, _ = url.ParseQuery(query)
	limit := order.DefaultListLimit
	if q.Has("limit") {
		limit, _ = strconv.Atoi(q.Get("limit"))
	}
	if len(page.Orders) > limit {
		t.Fatalf("%s?%s listed %d orders, more than %d", path, query, len(page.Orders), limit)
	}
	return page, q, true
}
