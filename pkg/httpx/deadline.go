package httpx

import (
	"context"
	"net/http"
	"time"
)

// DefaultRequestTimeout is the request bound of a router whose
// RouterOptions set none. It sits above the database's statement timeout
// (5s by default), so that a busy but answering database still reports
// its own timeout, and below WriteTimeout, so that the 503 still reaches
// the client.
const DefaultRequestTimeout = 10 * time.Second

// Deadline returns middleware that bounds each request's context by d
// (d <= 0: no bound). The database's statement_timeout is enforced by the
// server, so it never fires when the statement does not reach it (a
// network black hole, a server that stopped answering): without a
// deadline of its own the request, its pooled connection and its client
// would wait for good. Work that runs out of time fails with an error
// wrapping context.DeadlineExceeded, which WriteError answers with 503.
//
// Streams that stay open by design (WebSocket, Server-Sent Events) are
// bounded too while they are set up; their handler lifts the bound with
// Unbounded once the checks that touch the database are done.
func Deadline(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if d <= 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			parent := r.Context()
			ctx, cancel := context.WithTimeout(context.WithValue(parent, unboundedKey{}, parent), d)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

type unboundedKey struct{}

// Unbounded returns r with Deadline's bound lifted: its context ends when
// the client goes away or the server shuts the connection, as before
// Deadline, and keeps every value the request gathered on its way (route,
// span, credentials). A request that Deadline never bounded is returned
// as is.
func Unbounded(r *http.Request) *http.Request {
	parent, ok := r.Context().Value(unboundedKey{}).(context.Context)
	if !ok {
		return r
	}
	return r.WithContext(unbounded{Context: r.Context(), life: parent})
}

// unbounded takes its values from the bounded context and its lifetime
// from the one before the bound.
type unbounded struct {
	context.Context
	life context.Context
}

func (u unbounded) Deadline() (time.Time, bool) { return u.life.Deadline() }
func (u unbounded) Done() <-chan struct{}       { return u.life.Done() }
func (u unbounded) Err() error                  { return u.life.Err() }
