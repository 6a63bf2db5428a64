package httpapi

import (
	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/apidocs"
	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	paymentsvc "github.com/orderly/orderly/services/payment"
)

// Routes adds the whole payment API to r, the service's router (which
// already serves /healthz, /readyz and /metrics). The payment endpoints are
// for operators and need an admin bearer token; callers are rate limited by
// token subject, after authentication.
//
//	GET /openapi.yaml                  the API contract (public)
//	GET /docs                          the contract rendered (public)
//	GET /v1/payments?order_id=<uuid>   the order's payments (admin)
func (a *API) Routes(r chi.Router) {
	apidocs.Routes(r, paymentsvc.OpenAPI)
	r.Group(func(r chi.Router) {
		r.Use(a.verifier.Middleware(a.log), httpx.RateLimit(a.rateLimitRPS, authn.SubjectKey), authn.RequireAdmin)
		r.Get("/v1/payments", a.listPayments)
	})
}
