// Package httpapi is the payment service's HTTP API, for operators: looking
// up the payment of an order. It is described by services/payment/openapi.yaml,
// and its tests check real responses against that document.
package httpapi

import (
	"log/slog"
	"net/http"
	"slices"

	"github.com/google/uuid"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/payment/payment"
	"github.com/orderly/orderly/services/payment/postgres"
)

// errorTable is the one mapping of the API's errors to problems; anything
// else is a 500.
var errorTable = slices.Concat(httpx.ParameterErrors, authn.Errors)

// Options configure an API.
type Options struct {
	// Store holds the payments. Required.
	Store *postgres.Store
	// Verifier checks the bearer tokens. Required.
	Verifier *authn.Verifier
	// RateLimitRPS bounds each caller's requests per second (0 turns it
	// off).
	RateLimitRPS int
	// Log gets 5xx errors and authentication failures. Required.
	Log *slog.Logger
}

// API serves the payment endpoints.
type API struct {
	store        *postgres.Store
	verifier     *authn.Verifier
	rateLimitRPS int
	log          *slog.Logger
}

// New returns the API configured by o.
func New(o Options) *API {
	return &API{store: o.Store, verifier: o.Verifier, rateLimitRPS: o.RateLimitRPS, log: o.Log}
}

// paymentJSON is a payment as the API shows it.
type paymentJSON struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	Status      string `json:"status"`
}

// paymentList is the body of GET /v1/payments.
type paymentList struct {
	Payments []paymentJSON `json:"payments"`
}

// listPayments answers GET /v1/payments?order_id=<uuid> with the order's
// payment, if any: a list of zero or one element. Voided markers (an order
// cancelled before its payment ran) are not payments, nor is a charge
// whose answer is not recorded yet; the store leaves them out, so an order
// that was never charged lists nothing.
func (a *API) listPayments(w http.ResponseWriter, r *http.Request) {
	orderID, err := orderIDParam(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	list, err := a.store.ListByOrder(r.Context(), orderID)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := paymentList{Payments: make([]paymentJSON, 0, len(list))}
	for _, p := range list {
		out.Payments = append(out.Payments, paymentJSON{
			ID:          p.ID.String(),
			OrderID:     p.OrderID.String(),
			AmountCents: p.AmountCents,
			Currency:    p.Currency,
			Status:      string(shownStatus(p.Status)),
		})
	}
	// Payment data of whichever order an operator looked up: no cache
	// keeps it.
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, out)
}

// shownStatus is the status the API shows: a payment whose refund is in
// flight is still authorized until the gateway's refund is recorded.
func shownStatus(s payment.Status) payment.Status {
	if s == payment.StatusRefunding {
		return payment.StatusAuthorized
	}
	return s
}

// orderIDParam returns the order_id query parameter, which must be given
// once, as a UUID in its canonical 36-character form.
func orderIDParam(r *http.Request) (uuid.UUID, error) {
	values := r.URL.Query()["order_id"]
	switch len(values) {
	case 0:
		return uuid.Nil, httpx.InvalidParameter("order_id", "is required")
	case 1:
	default:
		return uuid.Nil, httpx.InvalidParameter("order_id", "must be given once")
	}
	id, err := httpx.ParseID(values[0])
	if err != nil {
		return uuid.Nil, httpx.InvalidParameter("order_id", "must be a UUID")
	}
	return id, nil
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, err, errorTable)
}
