package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/order/httpapi"
	"github.com/orderly/orderly/services/order/order"
)

func TestCreateOrder(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")

	r := s.post(alice, "/v1/orders", `{"customer_id":"alice","items":[{"sku":"WIDGET","quantity":2},{"sku":"GADGET","quantity":1}],"payment_method":"pm_card_ok"}`)
	if r.status != http.StatusCreated {
		t.Fatalf("POST = %s", r)
	}
	o := decode[orderBody](t, r)
	if loc := r.header.Get("Location"); loc != "/v1/orders/"+o.ID {
		t.Errorf("Location = %q, want /v1/orders/%s", loc, o.ID)
	}
	if o.CustomerID != "alice" || o.Status != "pending" || o.Reason != nil || o.Version != 1 ||
		o.TotalCents != 2*1250+499 || o.Currency != "EUR" || len(o.Items) != 2 || o.Items[0].UnitPriceCents != 1250 {
		t.Errorf("order = %+v", o)
	}
	if want := tracking.Token(o.ID, o.CreatedAt); o.TrackingToken != want {
		t.Errorf("tracking_token = %q, want %q (minted for the order's creation)", o.TrackingToken, want)
	}
	if err := tracking.Verify(o.TrackingToken, o.ID); err != nil {
		t.Errorf("tracking token does not verify: %v", err)
	}
	if err := authn.NewTrackingTokens(secret, nil, time.Hour).Verify(o.TrackingToken, o.ID); err == nil {
		t.Error("tracking token verifies under the JWT secret")
	}
	if !strings.Contains(string(r.body), `"reason":null`) {
		t.Errorf("reason is not null in %s", r.body)
	}
	// customer_id may be omitted.
	s.mustPlace(alice)

	g := s.get(alice, "/v1/orders/"+o.ID)
	if g.status != http.StatusOK {
		t.Fatalf("GET = %s", g)
	}
	got := decode[orderBody](t, g)
	if len(got.History) != 1 || got.History[0].Seq != 1 || got.History[0].Status != "pending" || got.History[0].Reason != nil {
		t.Errorf("history = %+v", got.History)
	}
	got.History = nil
	if diff := cmp.Diff(o, got); diff != "" {
		t.Errorf("GET differs from the create response (-create +get):\n%s", diff)
	}
	if n := s.count("orders"); n != 2 {
		t.Errorf("orders = %d, want 2", n)
	}
	if n := s.count("outbox"); n != 4 {
		t.Errorf("outbox = %d, want 4 (OrderPlaced and OrderStatusChanged per order)", n)
	}
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice, bob := tokens.For(t, "alice", ""), tokens.For(t, "bob", "")
	place := func(tok, key, body string) response {
		return s.do(request{method: http.MethodPost, path: "/v1/orders", token: tok, body: body, header: map[string]string{"Idempotency-Key": key}})
	}

	first := place(alice, "key-1", validBody)
	if first.status != http.StatusCreated {
		t.Fatalf("first = %s", first)
	}
	// Same body, spelled differently: the same response.
	respaced := `{ "payment_method": "pm_card_ok",
	  "items": [{"quantity":2,"sku":"WIDGET"}, {"sku":"GADGET","quantity":1}] }`
	again := place(alice, "key-1", respaced)
	if again.status != first.status || string(again.body) != string(first.body) {
		t.Errorf("replay = %s\nwant %s", again, first)
	}
	if again.header.Get("Location") != first.header.Get("Location") || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay headers = %v", again.header)
	}
	if n := s.count("orders"); n != 1 {
		t.Errorf("orders after a replay = %d, want 1", n)
	}
	// Another body with the same key.
	other := place(alice, "key-1", `{"items":[{"sku":"WIDGET","quantity":3}],"payment_method":"pm_card_ok"}`)
	if other.status != http.StatusUnprocessableEntity || problemOf(t, other).Type != httpapi.TypeIdempotencyKeyReused {
		t.Errorf("reused key = %s", other)
	}
	// Keys are per customer.
	if b := place(bob, "key-1", validBody); b.status != http.StatusCreated || string(b.body) == string(first.body) {
		t.Errorf("bob's key-1 = %s", b)
	}
	// A refusal is not remembered: the key is free for the corrected body.
	bad := `{"items":[{"sku":"NOPE","quantity":1}],"payment_method":"pm_card_ok"}`
	r1 := place(alice, "key-2", bad)
	r2 := place(alice, "key-2", validBody)
	if r1.status != http.StatusUnprocessableEntity || r1.header.Get("Content-Type") != "application/problem+json" || r2.status != http.StatusCreated {
		t.Errorf("refused then corrected = %s then %s", r1, r2)
	}
	if n := s.count("orders"); n != 3 {
		t.Errorf("orders = %d, want 3", n)
	}
	for _, key := range []string{"", strings.Repeat("k", 256), "tab\there", "é"} {
		r := place(alice, key, validBody)
		if key == "" {
			// An empty header is sent as absent by some clients; Go sends it.
			if r.status != http.StatusBadRequest {
				t.Errorf("empty key = %s, want 400", r)
			}
			continue
		}
		if r.status != http.StatusBadRequest || problemOf(t, r).Type != httpapi.TypeInvalidIdempotencyKey {
			t.Errorf("key %q = %s, want 400 invalid-idempotency-key", key, r)
		}
	}
	if n := s.count("orders"); n != 3 {
		t.Errorf("orders after invalid keys = %d, want 3", n)
	}
}

// Twenty identical requests at once with one key make exactly one order;
// every other answer is the replayed 201 or a 409 while it is in flight.
func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		responses []response
	)
	for range 20 {
		wg.Go(func() {
			r := s.do(request{method: http.MethodPost, path: "/v1/orders", token: alice, body: validBody,
				header: map[string]string{"Idempotency-Key": "burst"}})
			mu.Lock()
			responses = append(responses, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	var created []string
	for _, r := range responses {
		switch r.status {
		case http.StatusCreated:
			created = append(created, string(r.body))
		case http.StatusConflict:
			if p := problemOf(t, r); p.Type != httpapi.TypeIdempotencyKeyInUse || r.header.Get("Retry-After") == "" {
				t.Errorf("409 = %s", r)
			}
		default:
			t.Errorf("unexpected response %s", r)
		}
	}
	if len(created) == 0 {
		t.Fatal("no request got 201")
	}
	for _, c := range created[1:] {
		if c != created[0] {
			t.Errorf("201 bodies differ:\n%s\n%s", c, created[0])
		}
	}
	if n := s.count("orders"); n != 1 {
		t.Errorf("orders = %d, want exactly 1", n)
	}
	if n := s.count("outbox"); n != 2 {
		t.Errorf("outbox = %d, want 2", n)
	}
}

// admitter is an admission gate whose answer the test sets.
type admitter struct{ retry atomic.Int64 }

func (a *admitter) Admit(context.Context) (bool, time.Duration) {
	d := time.Duration(a.retry.Load())
	return d == 0, d
}

// While the saga is overloaded a new order is refused with 503 and
// Retry-After, and nothing is stored, key included: the same request is
// taken once the backlog is gone.
func TestOverloadRefusesNewOrders(t *testing.T) {
	t.Parallel()
	gate := &admitter{}
	s := newTestServerWith(t, httpapi.Options{Admission: gate})
	alice := tokens.For(t, "alice", "")
	gate.retry.Store(int64(7 * time.Second))
	key := map[string]string{"Idempotency-Key": "after-the-storm"}
	r := s.do(request{method: http.MethodPost, path: "/v1/orders", token: alice, body: validBody, header: key})
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "7" {
		t.Fatalf("POST while overloaded = %s (Retry-After %q), want 503 with Retry-After 7", r, r.header.Get("Retry-After"))
	}
	if p := problemOf(t, r); p.Type != httpapi.TypeOverloaded {
		t.Errorf("problem type = %s, want %s", p.Type, httpapi.TypeOverloaded)
	}
	if n := s.count("orders") + s.count("outbox") + s.count("idempotency_keys"); n != 0 {
		t.Errorf("a refused order left %d rows", n)
	}
	// Reading is not refused.
	if r := s.get(alice, "/v1/orders"); r.status != http.StatusOK {
		t.Errorf("GET /v1/orders while overloaded = %s", r)
	}
	gate.retry.Store(0)
	r = s.do(request{method: http.MethodPost, path: "/v1/orders", token: alice, body: validBody, header: key})
	if r.status != http.StatusCreated || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("POST after the overload = %s, want a new order", r)
	}
}

// Bad input gets a clear 4xx problem and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	lines := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"sku":"S%d","quantity":1}`, i)
		}
		return `{"items":[` + b.String() + `],"payment_method":"pm_card_ok"}`
	}
	tests := []struct {
		name   string
		body   string
		header map[string]string
		status int
		typ    string
	}{
		{"unknown field", `{"items":[{"sku":"WIDGET","quantity":1}],"payment_method":"pm","coupon":"x"}`, nil, 400, "invalid-body"},
		{"unknown item field", `{"items":[{"sku":"WIDGET","quantity":1,"price":1}],"payment_method":"pm"}`, nil, 400, "invalid-body"},
		{"quantity as string", `{"items":[{"sku":"WIDGET","quantity":"1"}],"payment_method":"pm"}`, nil, 400, "invalid-body"},
		{"quantity fraction", `{"items":[{"sku":"WIDGET","quantity":1.5}],"payment_method":"pm"}`, nil, 400, "invalid-body"},
		{"items not array", `{"items":{"sku":"WIDGET"},"payment_method":"pm"}`, nil, 400, "invalid-body"},
		{"malformed JSON", `{"items":[`, nil, 400, "invalid-body"},
		{"empty body", ``, nil, 400, "invalid-body"},
		{"two values", validBody + validBody, nil, 400, "invalid-body"},
		{"null body", `null`, nil, 400, "invalid-order"},
		{"not JSON content type", validBody, map[string]string{"Content-Type": "text/plain"}, 415, "unsupported-media-type"},
		{"over 64 KiB", `{"items":[],"payment_method":"` + strings.Repeat("p", 70<<10) + `"}`, nil, 413, "body-too-large"},
		{"no items", `{"items":[],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"items missing", `{"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"101 lines", lines(101), nil, 400, "invalid-order"},
		{"duplicate sku", `{"items":[{"sku":"WIDGET","quantity":1},{"sku":"WIDGET","quantity":2}],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"quantity 0", `{"items":[{"sku":"WIDGET","quantity":0}],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"quantity 1001", `{"items":[{"sku":"WIDGET","quantity":1001}],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"negative quantity", `{"items":[{"sku":"WIDGET","quantity":-5}],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"empty sku", `{"items":[{"sku":"","quantity":1}],"payment_method":"pm"}`, nil, 400, "invalid-order"},
		{"no payment method", `{"items":[{"sku":"WIDGET","quantity":1}]}`, nil, 400, "invalid-order"},
		{"payment method too long", `{"items":[{"sku":"WIDGET","quantity":1}],"payment_method":"` + strings.Repeat("p", 65) + `"}`, nil, 400, "invalid-order"},
		{"unknown sku", `{"items":[{"sku":"WIDGET","quantity":1},{"sku":"NOPE","quantity":1}],"payment_method":"pm"}`, nil, 422, "unknown-sku"},
		{"mixed currencies", `{"items":[{"sku":"WIDGET","quantity":1},{"sku":"DOLLAR","quantity":1}],"payment_method":"pm"}`, nil, 422, "mixed-currency"},
		{"someone else's customer_id", `{"customer_id":"bob","items":[{"sku":"WIDGET","quantity":1}],"payment_method":"pm"}`, nil, 403, "forbidden-customer"},
	}
	for i, tt := range tests {
		for _, withKey := range []bool{false, true} {
			h := map[string]string{}
			for k, v := range tt.header {
				h[k] = v
			}
			if withKey {
				h["Idempotency-Key"] = "bad-" + strconv.Itoa(i)
			}
			r := s.do(request{method: http.MethodPost, path: "/v1/orders", token: alice, body: tt.body, header: h})
			if r.status != tt.status {
				t.Errorf("%s (key %v): status = %s, want %d", tt.name, withKey, r, tt.status)
				continue
			}
			p := problemOf(t, r)
			if p.Type != "https://orderly.dev/problems/"+tt.typ || p.Status != tt.status || p.Title == "" || p.Detail == "" {
				t.Errorf("%s: problem = %+v, want type %s", tt.name, p, tt.typ)
			}
		}
	}
	if n := s.count("orders") + s.count("order_items") + s.count("order_history") + s.count("outbox"); n != 0 {
		t.Errorf("bad input wrote %d rows", n)
	}
	if n := s.count("idempotency_keys"); n != 0 {
		t.Errorf("idempotency_keys = %d, want 0: a refusal is not remembered", n)
	}
}

func TestSomeoneElsesOrderIsNotFound(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice, bob, admin := tokens.For(t, "alice", ""), tokens.For(t, "bob", ""), tokens.For(t, "ops", authn.RoleAdmin)
	bobs := s.mustPlace(bob)
	s.mustPlace(alice)

	for _, r := range []response{s.get(alice, "/v1/orders/"+bobs.ID), s.post(alice, "/v1/orders/"+bobs.ID+"/cancel", "")} {
		if r.status != http.StatusNotFound || problemOf(t, r).Type != httpx.TypeOrderNotFound {
			t.Errorf("alice on bob's order = %s, want 404", r)
		}
	}
	list := decode[listBody](t, s.get(alice, "/v1/orders"))
	for _, o := range list.Orders {
		if o.ID == bobs.ID || o.CustomerID != "alice" {
			t.Errorf("alice's list shows %+v", o)
		}
	}
	if len(list.Orders) != 1 {
		t.Errorf("alice's list has %d orders, want 1", len(list.Orders))
	}
	if r := s.get(admin, "/v1/orders/"+bobs.ID); r.status != http.StatusOK {
		t.Errorf("admin GET = %s, want 200", r)
	}
	// An unknown id and a malformed one.
	if r := s.get(alice, "/v1/orders/0190a6b4-0000-7000-8000-000000000000"); r.status != http.StatusNotFound {
		t.Errorf("unknown id = %s", r)
	}
	for _, bad := range []string{"not-a-uuid", "123", "0190a6b40000700080000000000000001"} {
		for _, r := range []response{s.get(alice, "/v1/orders/"+bad), s.post(alice, "/v1/orders/"+bad+"/cancel", "")} {
			if r.status != http.StatusBadRequest || problemOf(t, r).Type != httpx.TypeInvalidOrderID {
				t.Errorf("id %q = %s, want 400", bad, r)
			}
		}
	}
	if got := decode[orderBody](t, s.get(bob, "/v1/orders/"+bobs.ID)); got.Status != "pending" {
		t.Errorf("bob's order changed: %s", got.Status)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	for _, reach := range [][]order.Event{
		nil, // pending
		{order.EventStockReserved},
		{order.EventStockReserved, order.EventPaymentAuthorized},
	} {
		o := s.mustPlace(alice)
		s.advance(o.ID, reach...)
		r := s.post(alice, "/v1/orders/"+o.ID+"/cancel", "")
		if r.status != http.StatusAccepted {
			t.Fatalf("cancel after %v = %s", reach, r)
		}
		got := decode[orderBody](t, r)
		if got.Status != "cancelled" || got.Reason == nil || *got.Reason != "customer_request" || got.Version != int64(len(reach)+2) || len(got.Items) != 2 {
			t.Errorf("cancelled = %+v", got)
		}
		again := s.post(alice, "/v1/orders/"+o.ID+"/cancel", "")
		if again.status != http.StatusConflict || problemOf(t, again).Type != httpapi.TypeNotCancellable {
			t.Errorf("second cancel = %s, want 409", again)
		}
		h := decode[orderBody](t, s.get(alice, "/v1/orders/"+o.ID)).History
		if last := h[len(h)-1]; last.Status != "cancelled" || last.Reason == nil || *last.Reason != "customer_request" || last.Seq != int64(len(h)) {
			t.Errorf("last history entry = %+v", last)
		}
	}
	// Shipped orders can no longer be cancelled.
	o := s.mustPlace(alice)
	s.advance(o.ID, order.EventStockReserved, order.EventPaymentAuthorized, order.EventShip)
	if r := s.post(alice, "/v1/orders/"+o.ID+"/cancel", ""); r.status != http.StatusConflict {
		t.Errorf("cancel shipped = %s, want 409", r)
	}
}

func TestShipAndDeliverAreForAdmins(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice, admin := tokens.For(t, "alice", ""), tokens.For(t, "ops", authn.RoleAdmin)
	o := s.mustPlace(alice)
	for _, action := range []string{"ship", "deliver"} {
		r := s.post(alice, "/v1/orders/"+o.ID+"/"+action, "")
		if r.status != http.StatusForbidden || problemOf(t, r).Type != authn.TypeForbidden {
			t.Errorf("customer %s = %s, want 403", action, r)
		}
	}
	// Not yet confirmed.
	if r := s.post(admin, "/v1/orders/"+o.ID+"/ship", ""); r.status != http.StatusConflict || problemOf(t, r).Type != httpapi.TypeInvalidTransition {
		t.Errorf("ship pending = %s, want 409", r)
	}
	s.advance(o.ID, order.EventStockReserved, order.EventPaymentAuthorized)
	if r := s.post(admin, "/v1/orders/"+o.ID+"/deliver", ""); r.status != http.StatusConflict {
		t.Errorf("deliver confirmed = %s, want 409", r)
	}
	if r := s.post(admin, "/v1/orders/"+o.ID+"/ship", ""); r.status != http.StatusOK || decode[orderBody](t, r).Status != "shipped" {
		t.Errorf("ship = %s", r)
	}
	if r := s.post(admin, "/v1/orders/"+o.ID+"/ship", ""); r.status != http.StatusConflict {
		t.Errorf("ship twice = %s, want 409", r)
	}
	r := s.post(admin, "/v1/orders/"+o.ID+"/deliver", "")
	if r.status != http.StatusOK {
		t.Fatalf("deliver = %s", r)
	}
	if got := decode[orderBody](t, r); got.Status != "delivered" || got.Version != 5 {
		t.Errorf("delivered = %+v", got)
	}
	var seqs []string
	for _, h := range decode[orderBody](t, s.get(alice, "/v1/orders/"+o.ID)).History {
		seqs = append(seqs, fmt.Sprintf("%d:%s", h.Seq, h.Status))
	}
	if diff := cmp.Diff([]string{"1:pending", "2:reserved", "3:confirmed", "4:shipped", "5:delivered"}, seqs); diff != "" {
		t.Errorf("history (-want +got):\n%s", diff)
	}
	if r := s.post(admin, "/v1/orders/0190a6b4-0000-7000-8000-000000000000/ship", ""); r.status != http.StatusNotFound {
		t.Errorf("ship unknown = %s", r)
	}
}

func TestListPages(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	var want []string
	for range 7 {
		want = append([]string{s.mustPlace(alice).ID}, want...)
	}
	s.mustPlace(tokens.For(t, "bob", ""))

	var got []string
	path := "/v1/orders?limit=3"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		r := s.get(alice, path)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s = %s", path, r)
		}
		page := decode[listBody](t, r)
		for _, o := range page.Orders {
			got = append(got, o.ID)
		}
		if page.NextCursor == nil {
			if !strings.Contains(string(r.body), `"next_cursor":null`) {
				t.Errorf("last page body lacks next_cursor null: %s", r.body)
			}
			break
		}
		path = "/v1/orders?limit=3&cursor=" + *page.NextCursor
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ids newest first (-want +got):\n%s", diff)
	}
	// Default limit and status filter.
	if page := decode[listBody](t, s.get(alice, "/v1/orders")); len(page.Orders) != 7 || page.NextCursor != nil {
		t.Errorf("default page = %d orders, cursor %v", len(page.Orders), page.NextCursor)
	}
	s.post(alice, "/v1/orders/"+want[2]+"/cancel", "")
	page := decode[listBody](t, s.get(alice, "/v1/orders?status=cancelled"))
	if len(page.Orders) != 1 || page.Orders[0].ID != want[2] {
		t.Errorf("cancelled filter = %+v", page.Orders)
	}
	if page := decode[listBody](t, s.get(alice, "/v1/orders?status=delivered")); len(page.Orders) != 0 {
		t.Errorf("delivered filter = %d orders", len(page.Orders))
	}
	for _, q := range []string{"status=paid", "status=", "status=pending&status=reserved", "limit=0", "limit=101", "limit=x", "limit=", "cursor=garbage", "cursor=", "cursor=djEuMS4y"} {
		r := s.get(alice, "/v1/orders?"+q)
		if r.status != http.StatusBadRequest || problemOf(t, r).Type != httpx.TypeInvalidQuery {
			t.Errorf("?%s = %s, want 400 invalid-query", q, r)
		}
	}
}

// Authentication is authn's job; this checks it guards every route here.
func TestTokensAreChecked(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	valid := tokens.For(t, "alice", "")
	forged, _ := authn.Issue([]byte("some-other-secret-0123456789abcdef"), authn.Claims{Subject: "alice", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	expired, _ := authn.Issue(secret, authn.Claims{Subject: "alice", ExpiresAt: time.Now().Add(-time.Hour)}, "", "")
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(secret)
	tampered := valid[:len(valid)-4] + "AAAA"
	// Valid signatures, but a lifetime or a subject no caller may have:
	// a NUL in sub reached Postgres and made a 500.
	farFuture, _ := authn.Issue(secret, authn.Claims{Subject: "alice", ExpiresAt: time.Now().Add(400 * 24 * time.Hour)}, "", "")
	nulSub, _ := authn.Issue(secret, authn.Claims{Subject: "alice\x00", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	belSub, _ := authn.Issue(secret, authn.Claims{Subject: "ali\ace", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	o := s.mustPlace(valid)

	routes := []struct{ method, path, body string }{
		{http.MethodPost, "/v1/orders", validBody},
		{http.MethodGet, "/v1/orders", ""},
		{http.MethodGet, "/v1/orders/" + o.ID, ""},
		{http.MethodPost, "/v1/orders/" + o.ID + "/cancel", ""},
		{http.MethodPost, "/v1/orders/" + o.ID + "/ship", ""},
		{http.MethodPost, "/v1/orders/" + o.ID + "/deliver", ""},
	}
	for _, tok := range []struct{ name, token string }{
		{"missing", ""}, {"forged", forged}, {"expired", expired}, {"alg none", none}, {"HS512", hs512},
		{"tampered", tampered}, {"garbage", "not.a.jwt"},
		{"400 days to live", farFuture}, {"NUL in sub", nulSub}, {"BEL in sub", belSub},
	} {
		for _, rt := range routes {
			r := s.do(request{method: rt.method, path: rt.path, token: tok.token, body: rt.body})
			if r.status != http.StatusUnauthorized || problemOf(t, r).Type != authn.TypeUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s token on %s %s = %s, want 401", tok.name, rt.method, rt.path, r)
			}
		}
	}
	if n := s.count("orders"); n != 1 {
		t.Errorf("orders = %d, want 1", n)
	}
	if got := decode[orderBody](t, s.get(valid, "/v1/orders/"+o.ID)); got.Status != "pending" {
		t.Errorf("order changed by unauthenticated calls: %s", got.Status)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 5)
	alice, bob := tokens.For(t, "alice", ""), tokens.For(t, "bob", "")
	// A burst at once: even on a slow machine it lands within one second.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		burst []response
	)
	for range 30 {
		wg.Go(func() {
			r := s.get(alice, "/v1/orders")
			mu.Lock()
			burst = append(burst, r)
			mu.Unlock()
		})
	}
	wg.Wait()
	limited := 0
	for _, r := range burst {
		if r.status == http.StatusTooManyRequests {
			limited++
			if p := problemOf(t, r); p.Type != "https://orderly.dev/problems/rate-limited" {
				t.Errorf("429 problem = %+v", p)
			}
			if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
				t.Errorf("Retry-After = %q", r.header.Get("Retry-After"))
			}
		} else if r.status != http.StatusOK {
			t.Errorf("GET = %s", r)
		}
	}
	if limited == 0 {
		t.Error("30 requests in a burst at 5 rps were never limited")
	}
	// The limit is per caller.
	if r := s.get(bob, "/v1/orders"); r.status != http.StatusOK {
		t.Errorf("bob limited by alice's burst: %s", r)
	}
}

func TestServesContract(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	resp, err := http.Get(s.url + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/yaml") {
		t.Errorf("GET /openapi.yaml = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}
