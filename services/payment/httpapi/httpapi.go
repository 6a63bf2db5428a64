// Package httpapi is the payment service's HTTP API, for operators: looking
// up the payment of an order. It is described by services/payment/openapi.yaml,
// and its tests check real responses against that document.
package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"github.com/google/uuid"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/payment/postgres"
)

// TypeInvalidParameter is the problem type of a missing or malformed query
// parameter (400).
var TypeInvalidParameter = httpx.ProblemType("invalid-parameter")

// errBadParameter is behind every parameterError.
var errBadParameter = errors.New("invalid parameter")

// errorTable is the one mapping of the API's errors to problems; anything
// else is a 500.
var errorTable = append([]httpx.ErrorMapping{
	{Err: errBadParameter, Status: http.StatusBadRequest, Type: TypeInvalidParameter, Title: "Invalid parameter"},
}, authn.Errors...)

// parameterError names a bad parameter for the client.
type parameterError struct {
	name, problem string
}

func (e *parameterError) Error() string         { return e.name + " " + e.problem }
func (e *parameterError) ProblemDetail() string { return e.Error() }
func (e *parameterError) Unwrap() error         { return errBadParameter }

// API serves the payment endpoints.
type API struct {
	store        *postgres.Store
	verifier     *authn.Verifier
	rateLimitRPS int
	log          *slog.Logger
}

// New returns the API reading payments from store, authenticating callers
// with verifier and letting each make rateLimitRPS requests per second (0
// turns limiting off). log receives 5xx errors and authentication failures.
func New(store *postgres.Store, verifier *authn.Verifier, rateLimitRPS int, log *slog.Logger) *API {
	return &API{store: store, verifier: verifier, rateLimitRPS: rateLimitRPS, log: log}
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
// cancelled before its payment ran) are not payments; the store leaves them
// out, so an order that was never charged lists nothing.
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
			Status:      string(p.Status),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// orderIDParam returns the order_id query parameter, which must be given
// once, as a UUID in its canonical 36-character form.
func orderIDParam(r *http.Request) (uuid.UUID, error) {
	values := r.URL.Query()["order_id"]
	switch len(values) {
	case 0:
		return uuid.Nil, &parameterError{"order_id", "is required"}
	case 1:
	default:
		return uuid.Nil, &parameterError{"order_id", "must be given once"}
	}
	if len(values[0]) != 36 {
		return uuid.Nil, &parameterError{"order_id", "must be a UUID"}
	}
	id, err := uuid.Parse(values[0])
	if err != nil {
		return uuid.Nil, &parameterError{"order_id", "must be a UUID"}
	}
	return id, nil
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, err, errorTable)
}

// writeJSON writes v, one of this package's plain structs (so encoding
// cannot fail), as the JSON response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
