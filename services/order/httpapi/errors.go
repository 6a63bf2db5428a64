package httpapi

import (
	"errors"
	"net/http"

	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/order/order"
)

// Errors of the HTTP layer itself; the domain's are in package order.
var (
	errInvalidOrderID        = errors.New("order id must be a UUID")
	errInvalidIdempotencyKey = errors.New("Idempotency-Key must be 1 to 255 printable ASCII characters")
)

// Problem types of the order API, stable for clients to match on.
var (
	TypeNotCancellable        = httpx.ProblemType("order-not-cancellable")
	TypeInvalidTransition     = httpx.ProblemType("invalid-transition")
	TypeInvalidOrder          = httpx.ProblemType("invalid-order")
	TypeUnknownSKU            = httpx.ProblemType("unknown-sku")
	TypeMixedCurrency         = httpx.ProblemType("mixed-currency")
	TypeForbiddenCustomer     = httpx.ProblemType("forbidden-customer")
	TypeInvalidIdempotencyKey = httpx.ProblemType("invalid-idempotency-key")
	TypeIdempotencyKeyInUse   = httpx.ProblemType("idempotency-key-in-use")
	TypeIdempotencyKeyReused  = httpx.ProblemType("idempotency-key-reused")
	TypeOverloaded            = httpx.ProblemType("overloaded")
)

// errorTable is the one place errors become HTTP statuses. Order matters:
// a refused cancel matches both ErrNotCancellable and ErrInvalidTransition.
var errorTable = []httpx.ErrorMapping{
	{Err: order.ErrNotFound, Status: http.StatusNotFound, Type: httpx.TypeOrderNotFound, Title: "Order not found"},
	{Err: order.ErrNotCancellable, Status: http.StatusConflict, Type: TypeNotCancellable, Title: "Order cannot be cancelled"},
	{Err: order.ErrInvalidTransition, Status: http.StatusConflict, Type: TypeInvalidTransition, Title: "Not allowed in the order's status"},
	{Err: order.ErrInvalidOrder, Status: http.StatusBadRequest, Type: TypeInvalidOrder, Title: "Invalid order"},
	{Err: order.ErrUnknownSKU, Status: http.StatusUnprocessableEntity, Type: TypeUnknownSKU, Title: "Unknown SKU"},
	{Err: order.ErrMixedCurrency, Status: http.StatusUnprocessableEntity, Type: TypeMixedCurrency, Title: "Mixed currencies"},
	{Err: order.ErrForbiddenCustomer, Status: http.StatusForbidden, Type: TypeForbiddenCustomer, Title: "Not your customer id"},
	{Err: errInvalidOrderID, Status: http.StatusBadRequest, Type: httpx.TypeInvalidOrderID, Title: "Invalid order id"},
	{Err: order.ErrInvalidStatus, Status: http.StatusBadRequest, Type: httpx.TypeInvalidQuery, Title: "Invalid query parameter"},
	{Err: order.ErrInvalidCursor, Status: http.StatusBadRequest, Type: httpx.TypeInvalidQuery, Title: "Invalid query parameter"},
	{Err: order.ErrInvalidQuery, Status: http.StatusBadRequest, Type: httpx.TypeInvalidQuery, Title: "Invalid query parameter"},
	{Err: errInvalidIdempotencyKey, Status: http.StatusBadRequest, Type: TypeInvalidIdempotencyKey, Title: "Invalid Idempotency-Key"},
	{Err: order.ErrIdempotencyKeyInUse, Status: http.StatusConflict, Type: TypeIdempotencyKeyInUse, Title: "Request in progress"},
	{Err: order.ErrIdempotencyKeyReused, Status: http.StatusUnprocessableEntity, Type: TypeIdempotencyKeyReused, Title: "Idempotency-Key reused"},
	{Err: order.ErrOverloaded, Status: http.StatusServiceUnavailable, Type: TypeOverloaded, Title: "Overloaded"},
}

// detailed gives a sentinel a client-facing detail naming the bad value.
func detailed(kind error, detail string) error {
	return &order.ValidationError{Kind: kind, Detail: detail}
}
