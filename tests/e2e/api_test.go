package e2e

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/tests/stack"
)

// TestIdempotency sends one request many times at once with one key: one
// order and one payment come of it, every answer is that order (or "still
// in flight"), a replay is the first answer, and the key with another body
// is refused.
func TestIdempotency(t *testing.T) {
	s := stack.New(t, stack.Options{})
	p := stack.Product{SKU: sku("idem"), PriceCents: 4200, Stock: 100}
	s.Seed(t, p)
	_, token := s.NewCustomer(t)
	key := stack.NewUUID()
	body := stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 2}}, PaymentMethod: "pm_card_ok"}

	const n = 20
	resps := make([]stack.Response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resps[i], errs[i] = s.Call(http.MethodPost, s.Order.URL(), "/v1/orders", token, body, stack.Header{Key: "Idempotency-Key", Value: key})
		})
	}
	wg.Wait()
	var first []byte
	ids := map[string]int{}
	for i, r := range resps {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		switch r.Status {
		case http.StatusCreated:
			var o stack.Order
			r.Decode(t, &o)
			ids[o.ID]++
			if first == nil {
				first = r.Body
			}
		case http.StatusConflict:
			r.Problem(t) // the first is still in flight
		default:
			t.Errorf("request %d = %s, want 201 or 409", i, r)
		}
	}
	if len(ids) != 1 {
		t.Fatalf("the %d identical requests made orders %v, want exactly one", n, ids)
	}
	var id string
	for k := range ids {
		id = k
	}
	t.Logf("%d × 201 for order %s, %d × 409 in flight", ids[id], id, n-ids[id])

	// Once done, a replay returns the first response exactly.
	r := s.PostOrder(t, token, key, body)
	if r.Status != http.StatusCreated || !bytes.Equal(r.Body, first) {
		t.Errorf("replay = %s, want 201 with the first body %s", r, first)
	}
	// The same key with another body is a client error, not a new order.
	other := stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 3}}, PaymentMethod: "pm_card_ok"}
	if r := s.PostOrder(t, token, key, other); r.Status != http.StatusUnprocessableEntity {
		t.Errorf("same key, other body = %s, want 422", r)
	} else {
		r.Problem(t)
	}

	s.WaitStatus(t, token, id, "confirmed", "", settle)
	if l := s.ListOrders(t, token, nil); len(l.Orders) != 1 || l.Orders[0].ID != id {
		t.Errorf("customer's orders = %+v, want only %s", l.Orders, id)
	}
	if ps := s.Payments(t, id); len(ps) != 1 || ps[0].Status != "authorized" || ps[0].AmountCents != 8400 {
		t.Errorf("payments = %+v, want one authorized for 8400", ps)
	}
	s.WaitStock(t, p.SKU, 98, 0)

	// Keys are scoped per customer: another customer's identical key is
	// their own first request.
	_, token2 := s.NewCustomer(t)
	r = s.PostOrder(t, token2, key, body)
	if r.Status != http.StatusCreated {
		t.Fatalf("another customer, same key = %s, want 201", r)
	}
	var o2 stack.Order
	r.Decode(t, &o2)
	if o2.ID == id {
		t.Errorf("another customer's request with the same key returned the first customer's order")
	}
}

// TestAuthorization checks who may see and do what: a customer never
// learns of another's orders, bad tokens are refused, customers cannot call
// admin routes.
func TestAuthorization(t *testing.T) {
	s := stack.New(t, stack.Options{})
	p := stack.Product{SKU: sku("secure"), PriceCents: 100, Stock: 100}
	s.Seed(t, p)
	alice, aliceToken := s.NewCustomer(t)
	_, bobToken := s.NewCustomer(t)
	order := s.PlaceOrder(t, aliceToken, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
	s.WaitStatus(t, aliceToken, order.ID, "confirmed", "", settle)
	bobsOwn := s.PlaceOrder(t, bobToken, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})

	t.Run("another customer's order is not found", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{http.MethodGet, "/v1/orders/" + order.ID},
			{http.MethodPost, "/v1/orders/" + order.ID + "/cancel"},
		} {
			r := s.Do(t, c.method, s.Order.URL(), c.path, bobToken, nil)
			if r.Status != http.StatusNotFound {
				t.Errorf("bob: %s %s = %s, want 404", c.method, c.path, r)
				continue
			}
			r.Problem(t)
			// Indistinguishable from an order that does not exist.
			missing := s.Do(t, c.method, s.Order.URL(), strings.Replace(c.path, order.ID, stack.NewUUID(), 1), bobToken, nil)
			var a, b stack.Problem
			_ = json.Unmarshal(r.Body, &a)
			_ = json.Unmarshal(missing.Body, &b)
			if missing.Status != r.Status || a.Type != b.Type || a.Detail != b.Detail {
				t.Errorf("someone else's order (%s) differs from a missing one (%s)", r, missing)
			}
		}
		if l := s.ListOrders(t, bobToken, nil); len(l.Orders) != 1 || l.Orders[0].ID != bobsOwn.ID {
			t.Errorf("bob's list = %+v, want only his own order %s", l.Orders, bobsOwn.ID)
		}
		if o := s.GetOrder(t, aliceToken, order.ID); o.Status != "confirmed" || o.CustomerID != alice {
			t.Errorf("alice's order after bob's attempts = %s of %s, want confirmed of %s", o.Status, o.CustomerID, alice)
		}
	})

	t.Run("a customer lists their own orders, newest first, in pages", func(t *testing.T) {
		_, token := s.NewCustomer(t)
		var ids []string
		for range 5 {
			ids = append(ids, s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"}).ID)
		}
		slices.Reverse(ids)
		var got []string
		cursor := ""
		for page := 0; ; page++ {
			q := url.Values{"limit": {"2"}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			l := s.ListOrders(t, token, q)
			if len(l.Orders) > 2 {
				t.Fatalf("page %d has %d orders, limit 2", page, len(l.Orders))
			}
			for _, o := range l.Orders {
				got = append(got, o.ID)
			}
			if l.NextCursor == "" || page > 5 {
				break
			}
			cursor = l.NextCursor
		}
		if !slices.Equal(got, ids) {
			t.Errorf("pages = %v, want %v (newest first, each once)", got, ids)
		}
		// Filtered by status: once all are confirmed, "confirmed" lists all
		// five and "pending" none.
		for _, id := range ids {
			s.WaitStatus(t, token, id, "confirmed", "", settle)
		}
		if l := s.ListOrders(t, token, url.Values{"status": {"confirmed"}, "limit": {"100"}}); len(l.Orders) != 5 {
			t.Errorf("status=confirmed lists %d orders, want 5", len(l.Orders))
		}
		if l := s.ListOrders(t, token, url.Values{"status": {"pending"}}); len(l.Orders) != 0 {
			t.Errorf("status=pending lists %+v, want none", l.Orders)
		}
	})

	t.Run("bad tokens are refused", func(t *testing.T) {
		now := time.Now()
		forged, _ := authn.Issue([]byte("not-the-secret-not-the-secret-xx"), authn.Claims{Subject: alice, ExpiresAt: now.Add(time.Hour)}, "", "")
		expired, _ := authn.Issue(s.Secret, authn.Claims{Subject: alice, ExpiresAt: now.Add(-time.Hour)}, "", "")
		tokens := map[string]string{
			"forged signature":      forged,
			"expired":               expired,
			"alg none":              unsignedToken(`{"alg":"none","typ":"JWT"}`, map[string]any{"sub": alice, "role": "admin", "exp": now.Add(time.Hour).Unix()}),
			"alg none, admin claim": unsignedToken(`{"alg":"none"}`, map[string]any{"sub": "x", "role": "admin", "exp": now.Add(time.Hour).Unix()}) + "e30",
			"HS512 with the secret": hmacToken(t, s.Secret, "HS512", map[string]any{"sub": alice, "exp": now.Add(time.Hour).Unix()}),
			"no exp":                hmacToken(t, s.Secret, "HS256", map[string]any{"sub": alice}),
			"no sub":                hmacToken(t, s.Secret, "HS256", map[string]any{"exp": now.Add(time.Hour).Unix()}),
			"not a JWT":             "not-a-jwt",
			"tampered payload":      tamper(s.Token(t, stack.NewUUID()), alice),
			"400 days to live":      hmacToken(t, s.Secret, "HS256", map[string]any{"sub": alice, "exp": now.Add(400 * 24 * time.Hour).Unix()}),
			"NUL in sub":            hmacToken(t, s.Secret, "HS256", map[string]any{"sub": alice + "\x00", "exp": now.Add(time.Hour).Unix()}),
			"newline in sub":        hmacToken(t, s.Secret, "HS256", map[string]any{"sub": alice + "\nrole: admin", "exp": now.Add(time.Hour).Unix()}),
		}
		routes := []struct{ method, base, path string }{
			{http.MethodGet, s.Order.URL(), "/v1/orders/" + order.ID},
			{http.MethodGet, s.Order.URL(), "/v1/orders"},
			{http.MethodPost, s.Order.URL(), "/v1/orders/" + order.ID + "/cancel"},
			{http.MethodPost, s.Order.URL(), "/v1/orders/" + order.ID + "/ship"},
			{http.MethodPut, s.Inventory.URL(), "/v1/products/" + p.SKU},
			{http.MethodGet, s.Payment.URL(), "/v1/payments?order_id=" + order.ID},
		}
		for name, tok := range tokens {
			for _, rt := range routes {
				var body any
				if rt.method == http.MethodPut {
					body = map[string]any{"name": "x", "price_cents": 1, "currency": "EUR", "stock": 0}
				}
				r := s.Do(t, rt.method, rt.base, rt.path, tok, body)
				if r.Status != http.StatusUnauthorized {
					t.Errorf("%s: %s %s = %s, want 401", name, rt.method, rt.path, r)
					continue
				}
				r.Problem(t)
			}
		}
		for _, rt := range routes {
			r := s.Do(t, rt.method, rt.base, rt.path, "", nil)
			if r.Status != http.StatusUnauthorized {
				t.Errorf("no token: %s %s = %s, want 401", rt.method, rt.path, r)
				continue
			}
			r.Problem(t)
		}
		if o := s.GetOrder(t, aliceToken, order.ID); o.Status != "confirmed" {
			t.Errorf("order after refused calls is %s, want confirmed", o.Status)
		}
		if got := s.Product(t, p.SKU); got.Name != "Product "+p.SKU || got.PriceCents != 100 {
			t.Errorf("product after refused PUTs = %+v", got)
		}
	})

	t.Run("customers cannot call admin routes", func(t *testing.T) {
		for _, rt := range []struct {
			method, base, path string
			body               any
		}{
			{http.MethodPost, s.Order.URL(), "/v1/orders/" + order.ID + "/ship", nil},
			{http.MethodPost, s.Order.URL(), "/v1/orders/" + order.ID + "/deliver", nil},
			{http.MethodPut, s.Inventory.URL(), "/v1/products/" + p.SKU, map[string]any{"name": "free", "price_cents": 0, "currency": "EUR", "stock": 1_000_000}},
			{http.MethodPut, s.Inventory.URL(), "/v1/products/" + sku("new"), map[string]any{"name": "new", "price_cents": 1, "currency": "EUR", "stock": 1}},
			{http.MethodGet, s.Payment.URL(), "/v1/payments?order_id=" + order.ID, nil},
		} {
			r := s.Do(t, rt.method, rt.base, rt.path, aliceToken, rt.body)
			if r.Status != http.StatusForbidden {
				t.Errorf("customer: %s %s = %s, want 403", rt.method, rt.path, r)
				continue
			}
			r.Problem(t)
		}
		if o := s.GetOrder(t, aliceToken, order.ID); o.Status != "confirmed" {
			t.Errorf("order after a customer's ship = %s, want confirmed", o.Status)
		}
		if got := s.Product(t, p.SKU); got.PriceCents != 100 {
			t.Errorf("product after a customer's PUT = %+v", got)
		}
	})
}

// TestBadInputsChangeNothing sends POST /v1/orders requests that are wrong
// in every way the contract names: each gets a 4xx problem, and no row
// appears in any of the three databases (no order, no idempotency record,
// no outbox event, so no message published).
func TestBadInputsChangeNothing(t *testing.T) {
	s := stack.New(t, stack.Options{})
	p := stack.Product{SKU: sku("valid"), PriceCents: 100, Stock: 10}
	s.Seed(t, p)
	_, token := s.NewCustomer(t)
	other, _ := s.NewCustomer(t)
	forged, _ := authn.Issue([]byte("not-the-secret-not-the-secret-xx"), authn.Claims{Subject: "mallory", ExpiresAt: time.Now().Add(time.Hour)}, "", "")

	line := func(sku string, q any) map[string]any { return map[string]any{"sku": sku, "quantity": q} }
	order := func(items ...any) map[string]any {
		return map[string]any{"items": items, "payment_method": "pm_card_ok"}
	}
	var manyLines []any
	for i := range 101 {
		manyLines = append(manyLines, line(fmt.Sprintf("%s-%d", p.SKU, i), 1))
	}
	huge := fmt.Sprintf(`{"items":[{"sku":%q,"quantity":1}],"payment_method":"pm_card_ok","pad":"%s"}`, p.SKU, strings.Repeat("x", 70<<10))

	cases := []struct {
		name   string
		token  string
		body   any
		header []stack.Header
	}{
		{"unknown field", token, map[string]any{"items": []any{line(p.SKU, 1)}, "payment_method": "pm_card_ok", "coupon": "FREE"}, nil},
		{"unknown field in a line", token, order(map[string]any{"sku": p.SKU, "quantity": 1, "unit_price_cents": 1}), nil},
		{"quantity as a string", token, order(line(p.SKU, "1")), nil},
		{"quantity as a fraction", token, order(line(p.SKU, 1.5)), nil},
		{"items as an object", token, map[string]any{"items": line(p.SKU, 1), "payment_method": "pm_card_ok"}, nil},
		{"items null", token, map[string]any{"items": nil, "payment_method": "pm_card_ok"}, nil},
		{"no items field", token, map[string]any{"payment_method": "pm_card_ok"}, nil},
		{"empty items", token, order(), nil},
		{"duplicate lines", token, order(line(p.SKU, 1), line(p.SKU, 2)), nil},
		{"quantity 0", token, order(line(p.SKU, 0)), nil},
		{"quantity -1", token, order(line(p.SKU, -1)), nil},
		{"quantity 1001", token, order(line(p.SKU, 1001)), nil},
		{"quantity beyond int64", token, `{"items":[{"sku":"` + p.SKU + `","quantity":99999999999999999999}],"payment_method":"pm_card_ok"}`, nil},
		{"101 lines", token, order(manyLines...), nil},
		{"unknown SKU", token, order(line("NO-SUCH-SKU", 1)), nil},
		{"empty SKU", token, order(line("", 1)), nil},
		{"known and unknown SKU", token, order(line(p.SKU, 1), line("NO-SUCH-SKU", 1)), nil},
		{"no payment method", token, map[string]any{"items": []any{line(p.SKU, 1)}}, nil},
		{"someone else's customer_id", token, map[string]any{"customer_id": other, "items": []any{line(p.SKU, 1)}, "payment_method": "pm_card_ok"}, nil},
		{"body over 64 KiB", token, huge, nil},
		{"malformed JSON", token, `{"items":[{"sku":`, nil},
		{"trailing data", token, `{"items":[{"sku":"` + p.SKU + `","quantity":1}],"payment_method":"pm_card_ok"} {}`, nil},
		{"JSON array", token, `[]`, nil},
		{"empty body", token, ``, nil},
		{"text/plain body", token, `{"items":[{"sku":"` + p.SKU + `","quantity":1}],"payment_method":"pm_card_ok"}`, []stack.Header{{Key: "Content-Type", Value: "text/plain"}}},
		{"no token", "", order(line(p.SKU, 1)), nil},
		{"forged token", forged, order(line(p.SKU, 1)), nil},
	}

	// With or without an Idempotency-Key a bad request writes nothing at
	// all, in any service (a refusal does not take the key).
	before := s.Counts(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, withKey := range []bool{false, true} {
				hs := c.header
				if withKey {
					hs = append([]stack.Header{{Key: "Idempotency-Key", Value: stack.NewUUID()}}, hs...)
				}
				r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders", c.token, c.body, hs...)
				if r.Status < 400 || r.Status > 499 {
					t.Fatalf("POST (key %v) = %s, want 4xx", withKey, r)
				}
				r.Problem(t)
				after := s.Counts(t)
				if d := stack.DiffCounts(before, after); d != "" {
					t.Errorf("rows written for a bad request (key %v): %s", withKey, d)
					before = after
				}
			}
		})
	}

	// Malformed ids and query parameters on the read and cancel routes.
	for _, path := range []string{
		"/v1/orders/not-a-uuid",
		"/v1/orders/not-a-uuid/cancel",
		"/v1/orders?limit=0",
		"/v1/orders?limit=101",
		"/v1/orders?limit=ten",
		"/v1/orders?cursor=garbage",
		"/v1/orders?status=lost",
	} {
		method := http.MethodGet
		if strings.HasSuffix(path, "/cancel") {
			method = http.MethodPost
		}
		r := s.Do(t, method, s.Order.URL(), path, token, nil)
		if r.Status < 400 || r.Status > 499 {
			t.Errorf("%s %s = %s, want 4xx", method, path, r)
			continue
		}
		r.Problem(t)
	}

	// Nothing trickled in later either (an event published after all
	// would show as a row in another service's inbox), and a good request
	// still works.
	s.WaitCatalog(t, p.SKU, p.PriceCents)
	if d := stack.DiffCounts(before, s.Counts(t)); d != "" {
		t.Errorf("rows written by the bad requests: %s", d)
	}
	o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: p.SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
	s.WaitStatus(t, token, o.ID, "confirmed", "", settle)
}

// unsignedToken returns an "alg: none" style JWT: header and claims with an
// empty signature.
func unsignedToken(header string, claims map[string]any) string {
	c, _ := json.Marshal(claims)
	return b64(header) + "." + b64(string(c)) + "."
}

// hmacToken signs claims with secret using HS256 or HS512, built by hand
// so that the claims can be anything (authn.Issue refuses bad ones).
func hmacToken(t *testing.T, secret []byte, alg string, claims map[string]any) string {
	t.Helper()
	c, _ := json.Marshal(claims)
	unsigned := b64(`{"alg":"`+alg+`","typ":"JWT"}`) + "." + b64(string(c))
	return unsigned + "." + base64.RawURLEncoding.EncodeToString(sign(alg, secret, unsigned))
}

// tamper swaps the subject of a valid token for sub, keeping the old
// signature.
func tamper(token, sub string) string {
	parts := strings.Split(token, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims map[string]any
	_ = json.Unmarshal(raw, &claims)
	claims["sub"] = sub
	c, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(c)
	return strings.Join(parts, ".")
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// sign returns the HMAC of msg with secret for alg (HS256 or HS512).
func sign(alg string, secret []byte, msg string) []byte {
	h := sha256.New
	if alg == "HS512" {
		h = sha512.New
	}
	m := hmac.New(h, secret)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// TestRateLimit checks the per-caller limit: a customer over it gets 429
// problems with Retry-After, another customer is not slowed down by them.
func TestRateLimit(t *testing.T) {
	s := stack.New(t, stack.Options{RateLimitRPS: 5})
	_, greedy := s.NewCustomer(t)
	_, other := s.NewCustomer(t)
	var limited int
	for range 20 {
		r := s.Do(t, http.MethodGet, s.Order.URL(), "/v1/orders", greedy, nil)
		switch r.Status {
		case http.StatusOK:
		case http.StatusTooManyRequests:
			limited++
			r.Problem(t)
			if r.Header.Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After")
			}
		default:
			t.Fatalf("GET /v1/orders = %s, want 200 or 429", r)
		}
	}
	if limited == 0 {
		t.Errorf("20 requests at once under a limit of 5/s: none refused")
	}
	if r := s.Do(t, http.MethodGet, s.Order.URL(), "/v1/orders", other, nil); r.Status != http.StatusOK {
		t.Errorf("another customer = %s, want 200", r)
	}
}
