package httpx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strings"
)

// MaxBodyBytes caps every JSON request body. Orders are small; anything
// bigger is a mistake or an attack, and must not cost us memory.
const MaxBodyBytes = 64 << 10

// Sentinel errors behind every error DecodeJSON returns; match them with
// errors.Is. DecodeErrors maps them to responses.
var (
	// ErrInvalidBody covers an empty body, malformed JSON, a value of the
	// wrong type, an unknown field and trailing data.
	ErrInvalidBody = errors.New("invalid request body")
	// ErrBodyTooLarge means the body exceeded MaxBodyBytes.
	ErrBodyTooLarge = errors.New("request body too large")
	// ErrUnsupportedMediaType means the request declared a Content-Type
	// other than JSON.
	ErrUnsupportedMediaType = errors.New("unsupported media type")
)

// DecodeErrors maps DecodeJSON's errors to 400, 413 and 415 problems.
// WriteError consults it after the service's own table, so services need not
// repeat it.
var DecodeErrors = []ErrorMapping{
	{Err: ErrBodyTooLarge, Status: http.StatusRequestEntityTooLarge, Type: TypeBodyTooLarge, Title: "Request body too large"},
	{Err: ErrUnsupportedMediaType, Status: http.StatusUnsupportedMediaType, Type: TypeUnsupportedMediaType, Title: "Unsupported media type"},
	{Err: ErrInvalidBody, Status: http.StatusBadRequest, Type: TypeInvalidBody, Title: "Invalid request body"},
}

// DecodeError is what DecodeJSON returns for a bad request body. Its message
// is written for the client (it names the offending field where there is
// one) and becomes the problem detail. It matches one of the sentinel errors
// with errors.Is, and the underlying encoding/json or http error with
// errors.As.
type DecodeError struct {
	kind   error
	detail string
	cause  error
}

// Error returns the client-facing detail.
func (e *DecodeError) Error() string { return e.detail }

// ProblemDetail returns the client-facing detail, for WriteError.
func (e *DecodeError) ProblemDetail() string { return e.detail }

// Unwrap returns the sentinel and, when there is one, the underlying error.
func (e *DecodeError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// DecodeJSON decodes the request body, which must be exactly one JSON value of
// at most MaxBodyBytes, into dst, rejecting fields dst does not declare, a
// body that is not valid UTF-8 (encoding/json would silently replace the
// bad bytes) and a string anywhere in dst that breaks CheckText (a control
// character, \u0000 included). A Content-Type, when present, must be JSON.
//
// It returns a *DecodeError (matching ErrInvalidBody, ErrBodyTooLarge or
// ErrUnsupportedMediaType) for a bad body, naming the field where there is
// one, and another error only when dst is not a non-nil pointer, which is
// a programming error. On error dst may be partly filled and must not be
// used.
func DecodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &DecodeError{kind: ErrUnsupportedMediaType, detail: fmt.Sprintf("Content-Type %q is not supported; send application/json", ct)}
		}
	}
	// The whole body is read first (it is small): its read errors are then
	// told apart from encoding/json's, which returns errors of custom
	// unmarshalers (time.Time, UUIDs) unwrapped, and its bytes can be
	// checked as UTF-8 before encoding/json replaces bad ones.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	switch {
	case isTooLarge(err):
		return &DecodeError{kind: ErrBodyTooLarge, detail: fmt.Sprintf("request body must not exceed %d bytes", MaxBodyBytes), cause: err}
	case err != nil:
		// The client went away or sent a broken chunked body.
		return &DecodeError{kind: ErrInvalidBody, detail: "request body could not be read", cause: err}
	}
	if at := invalidUTF8(string(body)); at >= 0 {
		return &DecodeError{kind: ErrInvalidBody, detail: fmt.Sprintf("request body is not valid UTF-8 (byte %d)", at)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	// A second value, or garbage, after the first is a client bug that would
	// otherwise be silently ignored.
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return &DecodeError{kind: ErrInvalidBody, detail: "request body must contain a single JSON value", cause: err}
	}
	if field, err := checkStrings(reflect.ValueOf(dst), ""); err != nil {
		return &DecodeError{kind: ErrInvalidBody, detail: fmt.Sprintf("field %q %s", field, err)}
	}
	return nil
}

func isTooLarge(err error) bool {
	var tooLarge *http.MaxBytesError
	return errors.As(err, &tooLarge)
}

// decodeError translates an encoding/json error into a DecodeError with a
// detail a client can act on.
func decodeError(err error) error {
	var (
		syntax    *json.SyntaxError
		typ       *json.UnmarshalTypeError
		invalid   *json.InvalidUnmarshalError
		bad       = func(detail string) error { return &DecodeError{kind: ErrInvalidBody, detail: detail, cause: err} }
		fieldName = func(f string) string {
			if f == "" {
				return "request body"
			}
			return fmt.Sprintf("field %q", f)
		}
	)
	switch {
	case errors.As(err, &invalid):
		return fmt.Errorf("httpx: decode JSON: %w", err)
	case errors.Is(err, io.EOF):
		return bad("request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return bad("request body is truncated JSON")
	case errors.As(err, &syntax):
		return bad(fmt.Sprintf("request body is malformed JSON at byte %d", syntax.Offset))
	case errors.As(err, &typ):
		want := jsonKind(typ.Type)
		if num, ok := strings.CutPrefix(typ.Value, "number "); ok && strings.HasPrefix(want, "a number") {
			if strings.ContainsAny(num, ".eE") && want == kindInteger {
				return bad(fmt.Sprintf("%s must be an integer, not %s", fieldName(typ.Field), num))
			}
			return bad(fmt.Sprintf("%s is out of range: %s", fieldName(typ.Field), num))
		}
		return bad(fmt.Sprintf("%s must be %s, not %s", fieldName(typ.Field), want, typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this; the message names the
		// field in quotes.
		return bad("unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		// A custom unmarshaler (time.Time, a UUID type) rejected the value;
		// its message is about the client's input only.
		return bad("request body has an invalid value: " + err.Error())
	}
}

const kindInteger = "a number (integer)"

// jsonKind names the JSON type a client should have sent for a Go type.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a different type"
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return kindInteger
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "a different type"
}
