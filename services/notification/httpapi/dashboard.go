package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/notification/dashboard"
	"github.com/orderly/orderly/services/notification/live"
)

// Board gives the dashboard's snapshot; *dashboard.Board is one.
type Board interface {
	Snapshot(ctx context.Context) dashboard.Snapshot
}

// ticketScope is the scope of the tickets that open the dashboard's stream.
const ticketScope = "dashboard"

// TicketTTL is how long a dashboard ticket may be used to open the stream:
// long enough for the page to open it, short enough that one copied from
// a proxy log is worthless.
const TicketTTL = 30 * time.Second

// ticketResponse is POST /v1/dashboard/tickets' answer.
type ticketResponse struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

// mintTicket answers an admin (Middleware and RequireAdmin ran) with a
// ticket for the dashboard's stream.
func (a *API) mintTicket(w http.ResponseWriter, r *http.Request) {
	c, _ := authn.FromContext(r.Context())
	t, exp, err := a.o.Tracking.Ticket(ticketScope, c.Subject, TicketTTL)
	if err != nil {
		httpx.WriteError(w, r, a.o.Log, err, errorTable)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusCreated, ticketResponse{Ticket: t, ExpiresAt: exp.UTC()})
}

// snapshot answers an admin with the dashboard now.
func (a *API) snapshot(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, a.o.Board.Snapshot(r.Context()))
}

// watchDashboard streams the dashboard over a WebSocket: the snapshot now,
// then one per second or so. It takes a ticket (?ticket=, from a browser,
// which cannot set headers on a WebSocket) or an admin's JWT in the
// Authorization header; like an order's stream, everything is checked
// before the upgrade: the Origin, then the credentials (401), then the
// role (403).
func (a *API) watchDashboard(w http.ResponseWriter, r *http.Request) {
	if origin := r.Header.Get("Origin"); origin != "" && !a.origins[origin] && !sameOrigin(r, origin) {
		a.refuse(w, r, errForbiddenOrigin)
		return
	}
	_, inQuery := r.URL.Query()["ticket"]
	inHeader := len(r.Header.Values("Authorization")) > 0
	var subject string
	switch {
	case inQuery && inHeader:
		a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", "both an Authorization header and ?ticket=")
		authn.WriteUnauthorized(w, r)
		return
	case inQuery:
		s, err := a.o.Tracking.VerifyTicket(ticketScope, r.URL.Query().Get("ticket"))
		if err != nil {
			a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error())
			authn.WriteUnauthorized(w, r)
			return
		}
		subject = s
	case inHeader:
		tok, ok := authn.BearerToken(r)
		c, err := a.o.Verifier.Verify(tok)
		if !ok || err != nil {
			a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", "invalid bearer token")
			authn.WriteUnauthorized(w, r)
			return
		}
		if !c.IsAdmin() {
			authn.WriteForbidden(w, r)
			return
		}
		subject = c.Subject
	default:
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderly"`)
		httpx.WriteProblem(w, r, http.StatusUnauthorized, authn.TypeUnauthorized, "Unauthorized",
			"a dashboard ticket (?ticket=, from POST /v1/dashboard/tickets) or an admin's bearer JWT (Authorization only) is required")
		return
	}
	watch := live.Watch{Topic: dashboard.Topic, Subject: strings.TrimSpace(subject), Client: httpx.CallerKey(r), Since: -1}
	if err := a.o.Hub.ServeWS(w, httpx.Unbounded(r), watch); err != nil {
		a.refuse(w, r, err)
	}
}
