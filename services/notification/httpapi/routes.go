// Package httpapi is the notification service's HTTP API: live order
// status over WebSocket (GET /v1/orders/{id}/ws) and Server-Sent Events
// (GET /v1/orders/{id}/events), the shopper's tracking page (GET
// /track/{id}, served by package web), the operators' dashboard (GET
// /dashboard, its snapshot, tickets and stream under /v1/dashboard/, for
// admins) and the contract (GET /openapi.yaml, the service's openapi.yaml,
// rendered at GET /docs).
//
// A stream is authorized before anything is upgraded, streamed or read
// from the database: the order's tracking token, as ?token= or
// Authorization: Bearer, or a bearer JWT of the order's customer (or an
// admin), in the Authorization header only. A browser's Origin must be in
// the allowed list. Every refusal is an RFC 9457 problem.
package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/apidocs"
	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	notificationservice "github.com/orderly/orderly/services/notification"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/status"
)

// Orders tells who an order belongs to; *postgres.Store is one.
type Orders interface {
	// Current returns the order's latest status (with its customer), or
	// an error wrapping status.ErrUnknownOrder.
	Current(ctx context.Context, orderID string) (status.Change, error)
}

// Options configure an API.
type Options struct {
	// Hub serves the streams. Required.
	Hub *live.Hub
	// Orders tells who owns an order. Required.
	Orders Orders
	// Verifier checks bearer JWTs. Required.
	Verifier *authn.Verifier
	// Tracking checks tracking tokens (TRACKING_SECRET). Required.
	Tracking *authn.TrackingTokens
	// AllowedOrigins are the origins (scheme://host[:port]) whose pages
	// may open a stream; a request without an Origin header (not from a
	// browser) is not checked.
	AllowedOrigins []string
	// RateLimitRPS bounds new streams per client address and second (0
	// turns it off).
	RateLimitRPS int
	// Page, when set, serves the tracking page under /track/ (web.Handler).
	Page http.Handler
	// Board, when set, serves the operators' dashboard: its snapshot,
	// its tickets and its stream under /v1/dashboard/ (admins only), and
	// DashboardPage (web.Dashboard) at /dashboard.
	Board         Board
	DashboardPage http.Handler
	// Log gets refusals and 5xx errors. Required.
	Log *slog.Logger
}

// API serves the notification endpoints.
type API struct {
	o       Options
	origins map[string]bool
}

// New returns the API configured by o.
func New(o Options) *API {
	origins := make(map[string]bool, len(o.AllowedOrigins))
	for _, s := range o.AllowedOrigins {
		origins[s] = true
	}
	return &API{o: o, origins: origins}
}

// Routes adds the whole API to r.
func (a *API) Routes(r chi.Router) {
	apidocs.Routes(r, notificationservice.OpenAPI)
	if a.o.Page != nil {
		r.Handle("/track/*", a.o.Page)
	}
	r.Group(func(r chi.Router) {
		r.Use(httpx.RateLimit(a.o.RateLimitRPS, httpx.CallerKey))
		r.Get("/v1/orders/{id}/ws", a.watchWS)
		r.Get("/v1/orders/{id}/events", a.watchSSE)
		if a.o.Board != nil {
			r.Get("/v1/dashboard/ws", a.watchDashboard)
		}
	})
	if a.o.Board == nil {
		return
	}
	if a.o.DashboardPage != nil {
		r.Handle("/dashboard", a.o.DashboardPage)
		r.Handle("/dashboard/*", a.o.DashboardPage)
	}
	r.Group(func(r chi.Router) {
		r.Use(a.o.Verifier.Middleware(a.o.Log), authn.RequireAdmin)
		r.Use(httpx.RateLimit(a.o.RateLimitRPS, authn.SubjectKey))
		r.Post("/v1/dashboard/tickets", a.mintTicket)
		r.Get("/v1/dashboard/snapshot", a.snapshot)
	})
}
