package authn

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/orderly/orderly/pkg/httpx"
)

// Problem types of authentication failures, stable for clients to compare.
var (
	TypeUnauthorized = httpx.ProblemType("unauthorized")
	TypeForbidden    = httpx.ProblemType("forbidden")
)

// Errors maps ErrUnauthorized and ErrForbidden to their problems; services
// append it to their own error table for WriteError.
var Errors = []httpx.ErrorMapping{
	{Err: ErrUnauthorized, Status: http.StatusUnauthorized, Type: TypeUnauthorized, Title: "Unauthorized"},
	{Err: ErrForbidden, Status: http.StatusForbidden, Type: TypeForbidden, Title: "Forbidden"},
}

// maxTokenLen bounds the tokens worth parsing, in the Authorization header
// or in ?token=; ours are a few hundred bytes, and a huge one is only a way
// to make us spend CPU.
const maxTokenLen = 8 << 10

// Client-facing details of a 401. They say what to fix without saying which
// check failed, so a forger learns nothing.
const (
	detailMissingToken = "a bearer token is required"
	detailInvalidToken = "the bearer token is invalid or expired"
)

type claimsKey struct{}

// WithClaims returns a copy of ctx carrying c, as Middleware does for a
// verified token. Tests use it to call handlers as a given caller.
func WithClaims(ctx context.Context, c Claims) context.Context {
	return context.WithValue(ctx, claimsKey{}, c)
}

// FromContext returns the caller's claims put in ctx by Middleware (or
// WithClaims); ok is false when there are none.
func FromContext(ctx context.Context) (Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(Claims)
	return c, ok
}

// BearerToken returns the token of r's "Authorization: Bearer <token>"
// header (the scheme is case-insensitive). ok is false when the header is
// missing, repeated, of another scheme, empty, or implausibly long.
func BearerToken(r *http.Request) (token string, ok bool) {
	values := r.Header.Values("Authorization")
	if len(values) != 1 {
		return "", false
	}
	scheme, token, found := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenLen {
		return "", false
	}
	return token, true
}

// QueryToken returns the token of r's ?token= parameter, for the live
// streams, which browsers open without headers. ok is false when it is
// missing, repeated, empty, or longer than BearerToken accepts.
func QueryToken(r *http.Request) (token string, ok bool) {
	values := r.URL.Query()["token"]
	if len(values) != 1 || values[0] == "" || len(values[0]) > maxTokenLen {
		return "", false
	}
	return values[0], true
}

// Middleware returns middleware that requires a valid bearer JWT (see
// Verify) in the Authorization header and puts its Claims in the request
// context for FromContext. Otherwise it answers 401 with a problem of type
// TypeUnauthorized and a WWW-Authenticate: Bearer challenge (RFC 6750),
// whose detail does not say which check failed; the reason is logged at
// info level (debug for a missing token) without the token. logger may be
// nil.
func (v *Verifier) Middleware(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := BearerToken(r)
			if !ok {
				if logger != nil {
					logger.DebugContext(r.Context(), "authentication failed",
						"reason", "no bearer token", "method", r.Method, "path", r.URL.Path)
				}
				writeUnauthorized(w, r, false)
				return
			}
			claims, err := v.Verify(token)
			if err != nil {
				if logger != nil {
					logger.InfoContext(r.Context(), "authentication failed",
						"reason", err.Error(), "method", r.Method, "path", r.URL.Path)
				}
				writeUnauthorized(w, r, true)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithClaims(r.Context(), claims)))
		})
	}
}

// WriteUnauthorized answers 401 with a TypeUnauthorized problem and a
// WWW-Authenticate: Bearer challenge, for handlers that authenticate by
// other means than Middleware (a tracking token in the query). A detail
// that names the failed check would help forgers; this one does not.
func WriteUnauthorized(w http.ResponseWriter, r *http.Request) { writeUnauthorized(w, r, true) }

func writeUnauthorized(w http.ResponseWriter, r *http.Request, presented bool) {
	// RFC 6750, section 3: no error code when no credentials were sent.
	challenge, detail := `Bearer realm="orderly"`, detailMissingToken
	if presented {
		challenge, detail = `Bearer realm="orderly", error="invalid_token"`, detailInvalidToken
	}
	w.Header().Set("WWW-Authenticate", challenge)
	httpx.WriteProblem(w, r, http.StatusUnauthorized, TypeUnauthorized, "Unauthorized", detail)
}

// WriteForbidden answers 403 with a TypeForbidden problem.
func WriteForbidden(w http.ResponseWriter, r *http.Request) {
	httpx.WriteProblem(w, r, http.StatusForbidden, TypeForbidden, "Forbidden",
		"this operation requires the admin role")
}

// RequireAdmin lets a request through only when the caller's claims have
// the admin role; others get 403 with a TypeForbidden problem. It goes
// after Middleware; a request with no claims at all (Middleware missing)
// gets 401, so a wiring mistake fails closed.
func RequireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, ok := FromContext(r.Context())
		switch {
		case !ok:
			writeUnauthorized(w, r, false)
		case !c.IsAdmin():
			WriteForbidden(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// SubjectKey is a rate-limit key for httpx.RateLimit: "sub:<subject>" for
// an authenticated caller (so one customer's limit follows them across
// addresses), else httpx.CallerKey's "ip:<address>". Put the rate limiter
// after Middleware for the subject to be known.
func SubjectKey(r *http.Request) string {
	if c, ok := FromContext(r.Context()); ok {
		return "sub:" + c.Subject
	}
	return httpx.CallerKey(r)
}
