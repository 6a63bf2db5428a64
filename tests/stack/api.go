package stack

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
)

// Order is an order as the order API returns it.
type Order struct {
	ID            string         `json:"id"`
	CustomerID    string         `json:"customer_id"`
	Status        string         `json:"status"`
	Reason        string         `json:"reason"`
	Items         []Item         `json:"items"`
	TotalCents    int64          `json:"total_cents"`
	Currency      string         `json:"currency"`
	TrackingToken string         `json:"tracking_token"`
	Version       int            `json:"version"`
	CreatedAt     time.Time      `json:"created_at"`
	UpdatedAt     time.Time      `json:"updated_at"`
	History       []HistoryEntry `json:"history,omitempty"`
}

// Item is one line of an order.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents,omitempty"`
}

// HistoryEntry is one status transition of an order.
type HistoryEntry struct {
	Status string    `json:"status"`
	Reason string    `json:"reason"`
	Seq    int       `json:"seq"`
	At     time.Time `json:"at"`
}

// OrderRequest is the body of POST /v1/orders.
type OrderRequest struct {
	CustomerID    string `json:"customer_id,omitempty"`
	Items         []Item `json:"items"`
	PaymentMethod string `json:"payment_method"`
}

// OrderList is the body of GET /v1/orders.
type OrderList struct {
	Orders     []Order `json:"orders"`
	NextCursor string  `json:"next_cursor"`
}

// Product is a product as the inventory API returns it.
type Product struct {
	SKU        string `json:"sku,omitempty"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Stock      int    `json:"stock"`
	Reserved   int    `json:"reserved,omitempty"`
}

// Payment is a payment as the payment API returns it.
type Payment struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	Status      string `json:"status"`
}

// Problem is an RFC 9457 problem document.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// Response is an HTTP response, read whole.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r Response) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

// Decode unmarshals the body into v, failing tb when it is not that JSON.
func (r Response) Decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %T from %s: %v", v, r, err)
	}
}

// Problem checks that r is an application/problem+json document with
// type, title, status (equal to the HTTP status) and detail, and returns it.
func (r Response) Problem(tb testing.TB) Problem {
	tb.Helper()
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		tb.Errorf("Content-Type = %q, want application/problem+json (%s)", r.Header.Get("Content-Type"), r)
	}
	var p Problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		tb.Errorf("problem body: %v (%s)", err, r)
		return p
	}
	if p.Type == "" || p.Title == "" || p.Detail == "" || p.Status != r.Status {
		tb.Errorf("problem %+v: want type, title, detail and status %d", p, r.Status)
	}
	return p
}

// Header is one extra request header.
type Header struct{ Key, Value string }

// Call makes one request to base+path with an optional bearer token
// (token "" sends none) and body (nil for none; []byte or string sent as
// they are with Content-Type application/json; anything else as JSON). It
// returns the response read whole, or an error for a transport failure.
func (s *Stack) Call(method, base, path, token string, body any, headers ...Header) (Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return Response{}, err
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := callContext(30 * time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return Response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for _, h := range headers {
		req.Header.Set(h.Key, h.Value)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return Response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return Response{}, err
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// Do is Call that fails tb on a transport error.
func (s *Stack) Do(tb testing.TB, method, base, path, token string, body any, headers ...Header) Response {
	tb.Helper()
	r, err := s.Call(method, base, path, token, body, headers...)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// PostOrder sends POST /v1/orders with body and, unless key is "", an
// Idempotency-Key.
func (s *Stack) PostOrder(tb testing.TB, token, key string, body any) Response {
	tb.Helper()
	var hs []Header
	if key != "" {
		hs = append(hs, Header{"Idempotency-Key", key})
	}
	return s.Do(tb, http.MethodPost, s.Order.URL(), "/v1/orders", token, body, hs...)
}

// PlaceOrder places an order with a fresh idempotency key and returns it;
// anything but 201 fails tb.
func (s *Stack) PlaceOrder(tb testing.TB, token string, req OrderRequest) Order {
	tb.Helper()
	r := s.PostOrder(tb, token, NewUUID(), req)
	if r.Status != http.StatusCreated {
		tb.Fatalf("POST /v1/orders = %s, want 201", r)
	}
	var o Order
	r.Decode(tb, &o)
	return o
}

// GetOrder returns GET /v1/orders/{id} as token's caller; anything but 200
// fails tb.
func (s *Stack) GetOrder(tb testing.TB, token, id string) Order {
	tb.Helper()
	r := s.Do(tb, http.MethodGet, s.Order.URL(), "/v1/orders/"+id, token, nil)
	if r.Status != http.StatusOK {
		tb.Fatalf("GET /v1/orders/%s = %s, want 200", id, r)
	}
	var o Order
	r.Decode(tb, &o)
	return o
}

// ListOrders returns GET /v1/orders?query as token's caller; anything but
// 200 fails tb.
func (s *Stack) ListOrders(tb testing.TB, token string, query url.Values) OrderList {
	tb.Helper()
	path := "/v1/orders"
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	r := s.Do(tb, http.MethodGet, s.Order.URL(), path, token, nil)
	if r.Status != http.StatusOK {
		tb.Fatalf("GET %s = %s, want 200", path, r)
	}
	var l OrderList
	r.Decode(tb, &l)
	return l
}

// terminal are the statuses an order never leaves on its own (confirmed
// waits for an admin, so it counts here too).
var terminal = []string{"confirmed", "cancelled", "delivered"}

// WaitStatus polls the order until its status is want (and, for
// "cancelled", its reason is reason when reason is not "") and returns it.
// It fails tb at once when the order settles in another status, and after
// d otherwise.
func (s *Stack) WaitStatus(tb testing.TB, token, id, want, reason string, d time.Duration) Order {
	tb.Helper()
	var o Order
	poll.UntilNil(tb, d, "order "+id+" to become "+want, func() error {
		o = s.GetOrder(tb, token, id)
		if o.Status == want && (reason == "" || o.Reason == reason) {
			return nil
		}
		if slices.Contains(terminal, o.Status) && o.Status != want {
			tb.Fatalf("order %s settled as %s/%s, want %s/%s; history %+v", id, o.Status, o.Reason, want, reason, o.History)
		}
		return fmt.Errorf("status %s/%s", o.Status, o.Reason)
	})
	if o.Status == want && reason != "" && o.Reason != reason {
		tb.Fatalf("order %s is %s with reason %q, want %q", id, o.Status, o.Reason, reason)
	}
	return o
}

// PutProduct creates or updates a product through the inventory admin API
// and returns it; anything but 200 or 201 fails tb.
func (s *Stack) PutProduct(tb testing.TB, p Product) Product {
	tb.Helper()
	body := map[string]any{"name": p.Name, "price_cents": p.PriceCents, "currency": p.Currency, "stock": p.Stock}
	r := s.Do(tb, http.MethodPut, s.Inventory.URL(), "/v1/products/"+url.PathEscape(p.SKU), s.AdminToken(tb), body)
	if r.Status != http.StatusOK && r.Status != http.StatusCreated {
		tb.Fatalf("PUT /v1/products/%s = %s, want 200 or 201", p.SKU, r)
	}
	var got Product
	r.Decode(tb, &got)
	return got
}

// Product returns GET /v1/products/{sku}; anything but 200 fails tb.
func (s *Stack) Product(tb testing.TB, sku string) Product {
	tb.Helper()
	r := s.Do(tb, http.MethodGet, s.Inventory.URL(), "/v1/products/"+url.PathEscape(sku), "", nil)
	if r.Status != http.StatusOK {
		tb.Fatalf("GET /v1/products/%s = %s, want 200", sku, r)
	}
	var p Product
	r.Decode(tb, &p)
	return p
}

// WaitProduct polls the product until cond returns nil, and returns it.
func (s *Stack) WaitProduct(tb testing.TB, sku, what string, cond func(Product) error) Product {
	tb.Helper()
	var p Product
	poll.UntilNil(tb, 30*time.Second, "product "+sku+": "+what, func() error {
		p = s.Product(tb, sku)
		return cond(p)
	})
	return p
}

// WaitStock waits until the product's stock and reserved units are as
// given.
func (s *Stack) WaitStock(tb testing.TB, sku string, stock, reserved int) Product {
	tb.Helper()
	return s.WaitProduct(tb, sku, fmt.Sprintf("stock %d reserved %d", stock, reserved), func(p Product) error {
		if p.Stock != stock || p.Reserved != reserved {
			return fmt.Errorf("stock %d reserved %d", p.Stock, p.Reserved)
		}
		return nil
	})
}

// Payments returns GET /v1/payments?order_id= with the admin token;
// anything but 200 fails tb.
func (s *Stack) Payments(tb testing.TB, orderID string) []Payment {
	tb.Helper()
	r := s.Do(tb, http.MethodGet, s.Payment.URL(), "/v1/payments?order_id="+url.QueryEscape(orderID), s.AdminToken(tb), nil)
	if r.Status != http.StatusOK {
		tb.Fatalf("GET /v1/payments?order_id=%s = %s, want 200", orderID, r)
	}
	var body struct {
		Payments []Payment `json:"payments"`
	}
	r.Decode(tb, &body)
	return body.Payments
}

// Seed creates the products through the inventory admin API and waits
// until the order service's catalog replica knows every one of them at its
// new price, so that orders for them are accepted.
func (s *Stack) Seed(tb testing.TB, products ...Product) {
	tb.Helper()
	for _, p := range products {
		if p.Currency == "" {
			p.Currency = "EUR"
		}
		if p.Name == "" {
			p.Name = "Product " + p.SKU
		}
		s.PutProduct(tb, p)
	}
	for _, p := range products {
		s.WaitCatalog(tb, p.SKU, p.PriceCents)
	}
}
