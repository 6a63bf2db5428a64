package httpapi

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// createRequest is the body of POST /v1/orders.
type createRequest struct {
	CustomerID    *string      `json:"customer_id,omitempty"`
	Items         []createItem `json:"items"`
	PaymentMethod string       `json:"payment_method"`
}

type createItem struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// orderJSON is an order as the API shows it. reason is null unless the
// order is cancelled; history is present only on GET /v1/orders/{id}.
type orderJSON struct {
	ID            string        `json:"id"`
	CustomerID    string        `json:"customer_id"`
	Status        order.Status  `json:"status"`
	Reason        *order.Reason `json:"reason"`
	Items         []itemJSON    `json:"items"`
	TotalCents    int64         `json:"total_cents"`
	Currency      string        `json:"currency"`
	TrackingToken string        `json:"tracking_token"`
	Version       int64         `json:"version"`
	CreatedAt     time.Time     `json:"created_at"`
	UpdatedAt     time.Time     `json:"updated_at"`
	History       []historyJSON `json:"history,omitempty"`
}

type itemJSON struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

type historyJSON struct {
	Status order.Status  `json:"status"`
	Reason *order.Reason `json:"reason"`
	Seq    int64         `json:"seq"`
	At     time.Time     `json:"at"`
}

type listJSON struct {
	Orders     []orderJSON `json:"orders"`
	NextCursor *string     `json:"next_cursor"`
}

func reasonOf(r order.Reason) *order.Reason {
	if r == order.ReasonNone {
		return nil
	}
	return &r
}

func (a *API) render(o order.Order, withHistory bool) orderJSON {
	out := orderJSON{
		ID:            o.ID,
		CustomerID:    o.CustomerID,
		Status:        o.Status,
		Reason:        reasonOf(o.Reason),
		Items:         make([]itemJSON, len(o.Items)),
		TotalCents:    o.TotalCents,
		Currency:      o.Currency,
		TrackingToken: a.tracking.Token(o.ID, o.CreatedAt),
		Version:       o.Version,
		CreatedAt:     o.CreatedAt.UTC(),
		UpdatedAt:     o.UpdatedAt.UTC(),
	}
	for i, it := range o.Items {
		out.Items[i] = itemJSON{SKU: it.SKU, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents}
	}
	if withHistory {
		out.History = make([]historyJSON, len(o.History))
		for i, h := range o.History {
			out.History[i] = historyJSON{Status: h.Status, Reason: reasonOf(h.Reason), Seq: h.Seq, At: h.At.UTC()}
		}
	}
	return out
}

// caller returns the authenticated caller; the middleware guarantees one.
func caller(r *http.Request) authn.Claims {
	c, _ := authn.FromContext(r.Context())
	return c
}

// owner is the customer an order must belong to for the caller to see or
// change it: the caller, or anyone for an admin.
func owner(c authn.Claims) string {
	if c.IsAdmin() {
		return ""
	}
	return c.Subject
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, err, errorTable)
}

// orderID returns the {id} path parameter, or errInvalidOrderID.
func orderID(r *http.Request) (string, error) {
	id, err := httpx.ParseID(chi.URLParam(r, "id"))
	if err != nil {
		return "", detailed(errInvalidOrderID, "order id "+err.Error())
	}
	return id.String(), nil
}

// idempotencyKey returns the Idempotency-Key header, "" when absent, or
// errInvalidIdempotencyKey.
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header.Values("Idempotency-Key")
	switch {
	case len(vals) == 0:
		return "", nil
	case len(vals) > 1:
		return "", detailed(errInvalidIdempotencyKey, "send a single Idempotency-Key header")
	}
	k := vals[0]
	if k == "" || len(k) > 255 {
		return "", errInvalidIdempotencyKey
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", errInvalidIdempotencyKey
		}
	}
	return k, nil
}

// createOrder is POST /v1/orders. With an Idempotency-Key the 201 is stored
// in the same transaction as the order and replayed for a retry with the
// same body. A refusal (4xx) or a failure (5xx) stores nothing under the
// key: bad input changes nothing, and the client may retry with the body
// corrected.
func (a *API) createOrder(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	key, err := idempotencyKey(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if a.admit != nil {
		// Refused before the body is even read: shedding load must cost
		// as little as possible.
		if ok, retry := a.admit.Admit(r.Context()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(retry/time.Second)))
			a.fail(w, r, order.ErrOverloaded)
			return
		}
	}
	var body createRequest
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	if body.CustomerID != nil && *body.CustomerID != c.Subject {
		a.fail(w, r, detailed(order.ErrForbiddenCustomer, "customer_id must be omitted or equal to the caller's id"))
		return
	}
	req := order.Request{CustomerID: c.Subject, PaymentMethod: body.PaymentMethod, Lines: make([]order.Line, len(body.Items))}
	for i, it := range body.Items {
		req.Lines[i] = order.Line{SKU: it.SKU, Quantity: it.Quantity}
	}
	if key == "" {
		o, err := a.store.Create(r.Context(), a.timeouts, req)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		w.Header().Set("Location", location(o.ID))
		httpx.WriteJSON(w, http.StatusCreated, a.render(o, false))
		return
	}

	// The fingerprint is of the decoded body, so whitespace and key order
	// do not make a retry "different".
	canonical, _ := json.Marshal(body)
	sum := sha256.Sum256(canonical)
	k := postgres.IdempotencyKey{CustomerID: c.Subject, Key: key, Hash: sum[:]}
	stored, replayed, err := a.store.CreateOnce(r.Context(), a.timeouts, req, k, func(o order.Order) ([]byte, error) {
		body, err := json.Marshal(a.render(o, false))
		if err != nil {
			return nil, fmt.Errorf("encode response: %w", err)
		}
		return append(body, '\n'), nil // as httpx.WriteJSON ends a body
	})
	if err != nil {
		if errors.Is(err, order.ErrIdempotencyKeyInUse) {
			w.Header().Set("Retry-After", "1")
		}
		a.fail(w, r, err)
		return
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("Location", location(stored.OrderID))
	httpx.WriteBody(w, http.StatusCreated, "application/json", stored.Body)
}

// location is the path of order id, the Location of its create response.
func location(id string) string { return "/v1/orders/" + id }

// getOrder is GET /v1/orders/{id}: the order with its history. Another
// customer's order is a 404.
func (a *API) getOrder(w http.ResponseWriter, r *http.Request) {
	id, err := orderID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.store.Get(r.Context(), id, owner(caller(r)))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, a.render(o, true))
}

// listOrders is GET /v1/orders?status=&limit=&cursor=: the caller's orders,
// newest first.
func (a *API) listOrders(w http.ResponseWriter, r *http.Request) {
	q, err := order.CustomerList(caller(r).Subject, r.URL.Query())
	a.list(w, r, q, err)
}

// searchOrders is GET /v1/admin/orders (admin): every customer's orders,
// newest first, filtered by status, customer_id and a created_at range.
func (a *API) searchOrders(w http.ResponseWriter, r *http.Request) {
	q, err := order.AdminList(r.URL.Query())
	a.list(w, r, q, err)
}

// list answers with the page q asks for, or with err, the refusal of the
// request's parameters.
func (a *API) list(w http.ResponseWriter, r *http.Request, q order.ListQuery, err error) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	orders, next, err := a.store.List(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := listJSON{Orders: make([]orderJSON, len(orders))}
	for i, o := range orders {
		out.Orders[i] = a.render(o, false)
	}
	if next != nil {
		s := next.String()
		out.NextCursor = &s
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// cancelOrder is POST /v1/orders/{id}/cancel: 202 with the cancelled order,
// 409 once it is shipped, delivered or cancelled.
func (a *API) cancelOrder(w http.ResponseWriter, r *http.Request) {
	a.transition(w, r, order.EventCancel, http.StatusAccepted)
}

// shipOrder is POST /v1/orders/{id}/ship (admin).
func (a *API) shipOrder(w http.ResponseWriter, r *http.Request) {
	a.transition(w, r, order.EventShip, http.StatusOK)
}

// deliverOrder is POST /v1/orders/{id}/deliver (admin).
func (a *API) deliverOrder(w http.ResponseWriter, r *http.Request) {
	a.transition(w, r, order.EventDeliver, http.StatusOK)
}

func (a *API) transition(w http.ResponseWriter, r *http.Request, ev order.Event, status int) {
	id, err := orderID(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.store.Transition(r.Context(), a.timeouts, order.Step{OrderID: id, Event: ev, Owner: owner(caller(r))})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, status, a.render(o, false))
}
