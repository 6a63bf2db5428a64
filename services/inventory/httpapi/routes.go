// Package httpapi is the inventory service's HTTP API: the public catalog
// (GET /v1/products, GET /v1/products/{sku}) and the admin upsert
// (PUT /v1/products/{sku}). The contract is services/inventory/openapi.yaml,
// also served at GET /openapi.yaml and rendered at GET /docs; every error
// is an RFC 9457 problem.
package httpapi

import (
	"log/slog"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/apidocs"
	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/inventory"
	"github.com/orderly/orderly/services/inventory/postgres"
)

// Options configure an API.
type Options struct {
	// Store holds the catalog and stock. Required.
	Store *postgres.Store
	// Verifier checks the bearer tokens of admin calls. Required.
	Verifier *authn.Verifier
	// RateLimitRPS bounds each caller's requests per second (0 turns it
	// off).
	RateLimitRPS int
	// Log gets 5xx errors and authentication failures. Required.
	Log *slog.Logger
}

// API serves the inventory endpoints from a store.
type API struct {
	store    *postgres.Store
	verifier *authn.Verifier
	rps      int
	log      *slog.Logger
}

// New returns the API configured by o.
func New(o Options) *API {
	return &API{store: o.Store, verifier: o.Verifier, rps: o.RateLimitRPS, log: o.Log}
}

// Routes adds the whole API to r. One rate limiter counts every call of a
// caller: by token subject for admins, by client address for anonymous
// catalog reads.
func (a *API) Routes(r chi.Router) {
	limit := httpx.RateLimit(a.rps, authn.SubjectKey)
	authenticate := a.verifier.Middleware(a.log)

	apidocs.Routes(r, inventory.OpenAPI)

	r.With(limit).Get("/v1/products", a.listProducts)
	r.With(limit).Get("/v1/products/{sku}", a.getProduct)
	r.With(authenticate, limit, authn.RequireAdmin).Put("/v1/products/{sku}", a.putProduct)
}
