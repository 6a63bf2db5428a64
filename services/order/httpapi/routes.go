// Package httpapi is the order service's public REST API: placing orders
// (with Idempotency-Key), reading, listing and cancelling a customer's own
// orders, and the admin's ship, deliver and search across customers. The
// contract is services/order/openapi.yaml, also served at GET /openapi.yaml
// and rendered at GET /docs; every error is an RFC 9457 problem (see
// errors.go), and every call under /v1 needs a bearer JWT and counts
// against the caller's rate limit.
package httpapi

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/apidocs"
	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	orderservice "github.com/orderly/orderly/services/order"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// API serves the order endpoints from a store.
type API struct {
	store    *postgres.Store
	timeouts order.Timeouts
	verifier *authn.Verifier
	tracking *authn.TrackingTokens
	rps      int
	admit    Admitter
	log      *slog.Logger
}

// Admitter says whether a new order is taken now, and when not, after how
// long the client should retry (*admission.Gate).
type Admitter interface {
	Admit(ctx context.Context) (bool, time.Duration)
}

// Options configure an API.
type Options struct {
	// Store holds the orders.
	Store *postgres.Store
	// Timeouts are the saga's, for the deadlines of the orders the API
	// places and moves.
	Timeouts order.Timeouts
	// Verifier checks bearer tokens.
	Verifier *authn.Verifier
	// Tracking signs the tracking_token of each order (TRACKING_SECRET).
	Tracking *authn.TrackingTokens
	// RateLimitRPS is the per-caller limit (0 turns it off).
	RateLimitRPS int
	// Admission refuses new orders while the saga is overloaded; nil
	// takes every order.
	Admission Admitter
	// Log gets 5xx errors and authentication failures.
	Log *slog.Logger
}

// New returns the API o describes.
func New(o Options) *API {
	return &API{
		store: o.Store, timeouts: o.Timeouts, verifier: o.Verifier, tracking: o.Tracking,
		rps: o.RateLimitRPS, admit: o.Admission, log: o.Log,
	}
}

// Routes adds the whole API to r.
func (a *API) Routes(r chi.Router) {
	apidocs.Routes(r, orderservice.OpenAPI)

	r.Group(func(r chi.Router) {
		// The limiter keys on the token's subject, so it runs after
		// authentication.
		r.Use(a.verifier.Middleware(a.log), httpx.RateLimit(a.rps, authn.SubjectKey))

		r.Post("/v1/orders", a.createOrder)
		r.Get("/v1/orders", a.listOrders)
		r.Get("/v1/orders/{id}", a.getOrder)
		r.Post("/v1/orders/{id}/cancel", a.cancelOrder)
		r.With(authn.RequireAdmin).Post("/v1/orders/{id}/ship", a.shipOrder)
		r.With(authn.RequireAdmin).Post("/v1/orders/{id}/deliver", a.deliverOrder)
		r.With(authn.RequireAdmin).Get("/v1/admin/orders", a.searchOrders)
	})
}
