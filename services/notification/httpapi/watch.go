package httpapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/status"
)

// Problem types of the notification API, stable for clients to match on.
var (
	TypeForbiddenOrigin    = httpx.ProblemType("forbidden-origin")
	TypeWebSocketRequired  = httpx.ProblemType("websocket-required")
	TypeTooManyConnections = httpx.ProblemType("too-many-connections")
	TypeShuttingDown       = httpx.ProblemType("shutting-down")
	TypeReplicaFull        = httpx.ProblemType("replica-full")
)

// Errors of the API; errorTable maps them, and the hub's refusals, to
// problems. live.ErrReplicaFull is not in it: refuse writes it itself (see
// there).
var (
	errInvalidOrderID  = errors.New("order id must be a UUID")
	errInvalidSince    = errors.New("since (or Last-Event-ID) must be a non-negative integer")
	errForbiddenOrigin = errors.New("this origin may not open streams")
	errOrderNotFound   = errors.New("order not found")
)

var errorTable = []httpx.ErrorMapping{
	{Err: errInvalidOrderID, Status: http.StatusBadRequest, Type: httpx.TypeInvalidOrderID, Title: "Invalid order id"},
	{Err: errInvalidSince, Status: http.StatusBadRequest, Type: httpx.TypeInvalidQuery, Title: "Invalid query parameter"},
	{Err: errForbiddenOrigin, Status: http.StatusForbidden, Type: TypeForbiddenOrigin, Title: "Origin not allowed"},
	{Err: errOrderNotFound, Status: http.StatusNotFound, Type: httpx.TypeOrderNotFound, Title: "Order not found"},
	{Err: live.ErrNotWebSocket, Status: http.StatusUpgradeRequired, Type: TypeWebSocketRequired, Title: "WebSocket handshake required"},
	{Err: live.ErrTooManyForOrder, Status: http.StatusTooManyRequests, Type: TypeTooManyConnections, Title: "Too many connections"},
	{Err: live.ErrTooManyForCustomer, Status: http.StatusTooManyRequests, Type: TypeTooManyConnections, Title: "Too many connections"},
	{Err: live.ErrTooManyForClient, Status: http.StatusTooManyRequests, Type: TypeTooManyConnections, Title: "Too many connections"},
	{Err: live.ErrShuttingDown, Status: http.StatusServiceUnavailable, Type: TypeShuttingDown, Title: "Shutting down"},
}

func (a *API) watchWS(w http.ResponseWriter, r *http.Request) {
	watch, ok := a.authorize(w, r)
	if !ok {
		return
	}
	// The stream outlives the request bound; its setup above did not.
	if err := a.o.Hub.ServeWS(w, httpx.Unbounded(r), watch); err != nil {
		a.refuse(w, r, err)
	}
}

func (a *API) watchSSE(w http.ResponseWriter, r *http.Request) {
	watch, ok := a.authorize(w, r)
	if !ok {
		return
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		// An allowed page of another origin may read the stream.
		w.Header().Set("Access-Control-Allow-Origin", origin)
		w.Header().Add("Vary", "Origin")
	}
	if err := a.o.Hub.ServeSSE(w, httpx.Unbounded(r), watch); err != nil {
		a.refuse(w, r, err)
	}
}

// refuse writes the problem for err and logs the refusal. A cap of the
// caller's (order, customer, client address) is a 429; a full replica is a
// 503, so that a load balancer or the client tries another replica. Both
// say when to retry: a stream is long-lived, so a slot frees up only when
// someone leaves, and an immediate retry would only add load.
func (a *API) refuse(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, live.ErrNotWebSocket):
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
	case errors.Is(err, live.ErrReplicaFull):
		// Written here rather than through the error table: WriteError
		// logs a 5xx at error level and hides its detail, but a full
		// replica is working as designed, and a reconnect storm would
		// fill the log with errors.
		w.Header().Set("Retry-After", "5")
		a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error())
		httpx.WriteProblem(w, r, http.StatusServiceUnavailable, TypeReplicaFull, "Replica full",
			"this replica holds as many streams as it may; retry, another replica may take it")
		return
	case errors.Is(err, live.ErrTooManyForOrder), errors.Is(err, live.ErrTooManyForCustomer),
		errors.Is(err, live.ErrTooManyForClient), errors.Is(err, live.ErrShuttingDown):
		w.Header().Set("Retry-After", "5")
	}
	a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error())
	httpx.WriteError(w, r, a.o.Log, err, errorTable)
}

// authorize checks the request, in this order: the order id, the Origin,
// the credentials (tracking token or JWT), since, and only then, once the
// caller has proved to hold a valid token, what the database says about
// the order, so that a refused caller costs no query. On failure it has
// written the problem and returns false. A JWT may watch an order only
// once this service knows the order and its customer, while a valid
// tracking token may watch an order whose first status is still on its
// way (it was just placed). The live caps are checked after it, when the
// hub takes the connection: what a connection counts against depends on
// whose it is, which only verified credentials tell.
func (a *API) authorize(w http.ResponseWriter, r *http.Request) (live.Watch, bool) {
	raw := chi.URLParam(r, "id")
	id, err := httpx.ParseID(raw)
	if err != nil {
		a.refuse(w, r, errInvalidOrderID)
		return live.Watch{}, false
	}
	watch := live.Watch{OrderID: id.String(), Since: -1}
	if origin := r.Header.Get("Origin"); origin != "" && !a.origins[origin] && !sameOrigin(r, origin) {
		a.refuse(w, r, errForbiddenOrigin)
		return live.Watch{}, false
	}

	cred, err := credentials(r)
	if err != nil {
		a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error())
		authn.WriteUnauthorized(w, r)
		return live.Watch{}, false
	}
	if cred.token == "" {
		a.o.Log.DebugContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", "no credentials")
		w.Header().Set("WWW-Authenticate", `Bearer realm="orderly"`)
		httpx.WriteProblem(w, r, http.StatusUnauthorized, authn.TypeUnauthorized, "Unauthorized",
			"a tracking token (?token= or Authorization: Bearer) or a bearer JWT (Authorization only) is required")
		return live.Watch{}, false
	}
	// A JWT (header.payload.signature) counts only from the header: URLs
	// end up in proxy logs and browser history, and a JWT is worth far
	// more than one order's tracking token. Anything else is a tracking
	// token, which Verify refuses when it is a JWT.
	var claims *authn.Claims
	if cred.header && strings.Count(cred.token, ".") == 2 {
		c, err := a.o.Verifier.Verify(cred.token)
		if err != nil {
			a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error())
			authn.WriteUnauthorized(w, r)
			return live.Watch{}, false
		}
		claims = &c
	} else if err := a.o.Tracking.Verify(cred.token, watch.OrderID); err != nil {
		a.o.Log.InfoContext(r.Context(), "stream refused", "path", r.URL.Path, "reason", err.Error(), "query", !cred.header)
		authn.WriteUnauthorized(w, r)
		return live.Watch{}, false
	}

	since := r.URL.Query().Get("since")
	if since == "" {
		since = r.Header.Get("Last-Event-ID")
	}
	if since != "" {
		n, err := strconv.ParseInt(since, 10, 64)
		if err != nil || n < 0 {
			a.refuse(w, r, errInvalidSince)
			return live.Watch{}, false
		}
		watch.Since = n
	}

	cur, err := a.o.Orders.Current(r.Context(), watch.OrderID)
	known := err == nil
	if err != nil && !errors.Is(err, status.ErrUnknownOrder) {
		httpx.WriteError(w, r, a.o.Log, err, errorTable)
		return live.Watch{}, false
	}
	if claims != nil {
		if !known || !claims.IsAdmin() && claims.Subject != cur.CustomerID {
			// Someone else's order is as good as missing.
			a.refuse(w, r, errOrderNotFound)
			return live.Watch{}, false
		}
		// The JWT's own streams, counted per subject: never per order,
		// so that viewers of a shared tracking link cannot lock the owner
		// out. A tracking token leaves Subject empty and counts among the
		// order's viewers, never against the customer.
		watch.Subject = claims.Subject
	}
	watch.Client = httpx.CallerKey(r)
	return watch, true
}

// credential is the token a stream request presents; header is whether it
// came in the Authorization header rather than ?token=.
type credential struct {
	token  string
	header bool
}

// credentials returns the token of the Authorization: Bearer header or of
// ?token=, or a zero credential when there is neither. Its error (for
// logs) means that credentials were presented but are unusable: a
// malformed header, ?token= empty, repeated or longer than a bearer token
// may be, or both a header and ?token= (which one counts would be a guess).
func credentials(r *http.Request) (credential, error) {
	inHeader := len(r.Header.Values("Authorization")) > 0
	_, inQuery := r.URL.Query()["token"]
	switch {
	case inHeader && inQuery:
		return credential{}, errors.New("both an Authorization header and ?token=")
	case inHeader:
		t, ok := authn.BearerToken(r)
		if !ok {
			return credential{}, errors.New("malformed Authorization header")
		}
		return credential{token: t, header: true}, nil
	case inQuery:
		t, ok := authn.QueryToken(r)
		if !ok {
			return credential{}, errors.New("?token= empty, repeated or too long")
		}
		return credential{token: t}, nil
	}
	return credential{}, nil
}

// sameOrigin reports whether origin is the service's own (the tracking
// page it serves), whatever the configured list says.
func sameOrigin(r *http.Request, origin string) bool {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return r.Host != "" && strings.EqualFold(origin, scheme+"://"+r.Host)
}
