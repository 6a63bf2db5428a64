package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/google/uuid"
)

// WriteJSON writes v as the JSON response with status. v is one of a
// service's response structs; if it cannot be encoded (a bug), the client
// gets a 500 problem instead of half a body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		WriteProblem(w, nil, http.StatusInternalServerError, TypeInternal, "Internal Server Error", "internal error")
		return
	}
	WriteBody(w, status, "application/json", append(body, '\n'))
}

// WriteBody writes an encoded response. Every response of the APIs carries
// nosniff, so that a browser never reads JSON as something it could run;
// caching headers are the handler's to set before.
func WriteBody(w http.ResponseWriter, status int, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// A write error means the client is gone and there is nobody left to
	// tell.
	_, _ = w.Write(body) //nolint:gosec // encoded JSON served as JSON with nosniff: not an XSS sink
}

// ParseID parses s as an id in the canonical 36-character UUID form, the
// only form the APIs hand out: uuid.Parse alone would also take braces, a
// urn:uuid: prefix or no dashes, and so make one order reachable under
// several URLs.
func ParseID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return uuid.Nil, fmt.Errorf("%q is not a UUID", truncate(s, 64))
	}
	return id, nil
}

// Parameter problems: a path or query parameter that is missing or
// malformed (400), as opposed to a bad field of a well-formed body.
var (
	// ErrInvalidParameter is behind every InvalidParameter error.
	ErrInvalidParameter = errors.New("invalid parameter")
	// TypeInvalidParameter is its problem type.
	TypeInvalidParameter = ProblemType("invalid-parameter")
	// ParameterErrors maps it; append it to a service's error table.
	ParameterErrors = []ErrorMapping{
		{Err: ErrInvalidParameter, Status: http.StatusBadRequest, Type: TypeInvalidParameter, Title: "Invalid parameter"},
	}
)

// InvalidParameter is the error of parameter name, with problem told to
// the client ("limit must be an integer from 1 to 100").
func InvalidParameter(name, problem string) error { return &parameterError{name, problem} }

type parameterError struct{ name, problem string }

func (e *parameterError) Error() string         { return e.name + " " + e.problem }
func (e *parameterError) ProblemDetail() string { return e.Error() }
func (e *parameterError) Unwrap() error         { return ErrInvalidParameter }

// truncate bounds what an error repeats of a client's input.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
