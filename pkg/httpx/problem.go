// Package httpx is the HTTP plumbing shared by the Orderly services: RFC 9457
// problem responses and the one-table error mapping, strict JSON decoding,
// health and readiness endpoints, a server with graceful shutdown, and a chi
// router with tracing, metrics, request logging and panic recovery already
// applied. Every service builds its API on NewRouter so that all four look
// and behave the same to clients and operators.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/pg"
)

// ProblemBase prefixes every problem type URI. The URIs are identifiers that
// clients compare; they need not resolve.
const ProblemBase = "https://orderly.dev/problems/"

// ProblemType returns the problem type URI for slug, e.g.
// ProblemType("not-found") is "https://orderly.dev/problems/not-found".
func ProblemType(slug string) string { return ProblemBase + slug }

// Problem types that httpx itself produces. Services declare their own with
// ProblemType.
var (
	TypeInternal             = ProblemType("internal")
	TypeNotFound             = ProblemType("not-found")
	TypeMethodNotAllowed     = ProblemType("method-not-allowed")
	TypeInvalidBody          = ProblemType("invalid-body")
	TypeBodyTooLarge         = ProblemType("body-too-large")
	TypeUnsupportedMediaType = ProblemType("unsupported-media-type")
	TypeNotReady             = ProblemType("not-ready")
	// TypeUnavailable is a request the database could not serve in time
	// (pg.IsTimeout, or the request's own bound, Deadline) or at all
	// (pg.IsUnavailable): 503 with Retry-After.
	TypeUnavailable = ProblemType("unavailable")
)

// Problem types of more than one service's API (the order and notification
// services both serve /v1/orders/{id}…), defined once so that they stay
// the same for clients.
var (
	TypeOrderNotFound  = ProblemType("order-not-found")
	TypeInvalidOrderID = ProblemType("invalid-order-id")
	TypeInvalidQuery   = ProblemType("invalid-query")
)

// Problem is an RFC 9457 problem details object, the body of every 4xx and
// 5xx response. Clients and tests can decode error responses into it.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// ProblemContentType is the media type of problem responses.
const ProblemContentType = "application/problem+json"

// WriteProblem writes a problem+json response with the given status, type,
// title and detail; instance is the request path (never the query, which may
// hold tokens). r may be nil, in which case instance is left out.
func WriteProblem(w http.ResponseWriter, r *http.Request, status int, typ, title, detail string) {
	p := Problem{Type: typ, Title: title, Status: status, Detail: detail}
	if r != nil && r.URL != nil {
		p.Instance = r.URL.Path
	}
	body, _ := json.Marshal(p) // a plain struct of strings and an int always marshals
	WriteBody(w, status, ProblemContentType, append(body, '\n'))
}

// ErrorMapping is one row of a service's error table: an error matched with
// errors.Is, and the status, problem type and title it turns into.
type ErrorMapping struct {
	Err    error
	Status int
	Type   string
	Title  string
}

// Detailer is implemented by errors whose own message is written for clients,
// such as a validation error naming the offending field. WriteError uses it
// for the detail of a 4xx response; other errors get the matched sentinel's
// message, so that operation names and wrapped causes never leak.
type Detailer interface {
	ProblemDetail() string
}

// WriteError writes the problem response for err using the service's error
// table, searched in order with errors.Is, then DecodeErrors, so a handler
// can pass DecodeJSON's error straight through.
//
// A matched 4xx gets the mapping's type and title and a detail from the
// error chain's Detailer, or else the mapping's Err message. A statement
// or lock wait that hit its timeout (pg.IsTimeout), a database that
// could not be reached or went away (pg.IsUnavailable), and work that ran
// out of time (context.DeadlineExceeded: the request's bound, Deadline),
// is a 503 unavailable problem with Retry-After: 1, logged at warn level: the same
// request may well succeed a moment later, and one with an idempotency key
// learns then whether its first try took effect. Anything
// unmatched, and anything mapped to 5xx, is answered with detail
// "internal error" while the full error is logged at error level with the
// request context (so a telemetry logger adds the trace id) and recorded on
// the request's span; an error caused by the client hanging up is logged at
// info level instead. logger may be nil.
func WriteError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, err error, table []ErrorMapping) {
	m, ok := lookup(err, table)
	outOfTime := errors.Is(err, context.DeadlineExceeded)
	if !ok && (pg.IsTimeout(err) || pg.IsUnavailable(err) || outOfTime) {
		msg, detail := "database timeout", "the database is busy; retry shortly"
		switch {
		case outOfTime:
			// Most often a database that stopped answering (Deadline),
			// which the retry may find back, as with the cases below.
			msg, detail = "request timed out", "the request ran out of time; retry shortly"
		case !pg.IsTimeout(err):
			msg, detail = "database unavailable", "the database is unavailable; retry shortly"
		}
		if logger != nil {
			logger.WarnContext(r.Context(), msg, "err", err, "method", r.Method, "path", r.URL.Path, "status", http.StatusServiceUnavailable)
		}
		trace.SpanFromContext(r.Context()).RecordError(err)
		w.Header().Set("Retry-After", "1")
		WriteProblem(w, r, http.StatusServiceUnavailable, TypeUnavailable, "Service Unavailable", detail)
		return
	}
	if !ok {
		m = ErrorMapping{Status: http.StatusInternalServerError, Type: TypeInternal, Title: http.StatusText(http.StatusInternalServerError)}
	}
	if m.Status >= 500 {
		ctx := r.Context()
		span := trace.SpanFromContext(ctx)
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		if logger != nil {
			level, msg := slog.LevelError, "request failed"
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				// The client hung up and its work was cancelled: nothing
				// is broken, and nobody will read the response.
				level, msg = slog.LevelInfo, "request cancelled by client"
			}
			logger.Log(ctx, level, msg, "err", err, "method", r.Method, "path", r.URL.Path, "status", m.Status)
		}
		WriteProblem(w, r, m.Status, m.Type, m.Title, "internal error")
		return
	}
	detail := ""
	var d Detailer
	switch {
	case errors.As(err, &d):
		detail = d.ProblemDetail()
	case m.Err != nil:
		detail = m.Err.Error()
	}
	WriteProblem(w, r, m.Status, m.Type, m.Title, detail)
}

func lookup(err error, table []ErrorMapping) (ErrorMapping, bool) {
	for _, t := range [][]ErrorMapping{table, DecodeErrors} {
		for _, m := range t {
			if m.Err != nil && errors.Is(err, m.Err) {
				return m, true
			}
		}
	}
	return ErrorMapping{}, false
}
