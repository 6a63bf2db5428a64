package httpx

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

type testItem struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type testOrder struct {
	CustomerID string     `json:"customer_id"`
	Items      []testItem `json:"items"`
}

// decodeHandler decodes into testOrder and answers the way services do:
// WriteError with the service's (here empty) table.
func decodeHandler(w http.ResponseWriter, r *http.Request) {
	var o testOrder
	if err := DecodeJSON(w, r, &o); err != nil {
		WriteError(w, r, nil, err, nil)
		return
	}
	WriteJSON(w, http.StatusOK, o)
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	// pad builds a valid body of exactly n bytes by padding with spaces,
	// which JSON allows after the value.
	pad := func(n int) string {
		v := `{"customer_id":"c-1"}`
		return v + strings.Repeat(" ", n-len(v))
	}
	tests := []struct {
		name        string
		body        string
		contentType string
		wantStatus  int
		wantType    string
		wantDetail  string // substring
	}{
		{name: "valid", body: `{"customer_id":"c-1","items":[{"sku":"A","quantity":2}]}`, wantStatus: 200},
		{name: "json with charset", body: `{}`, contentType: "application/json; charset=utf-8", wantStatus: 200},
		{name: "no content type", body: `{}`, contentType: "-", wantStatus: 200},
		{name: "exactly 64 KiB", body: pad(MaxBodyBytes), wantStatus: 200},
		{name: "64 KiB + 1", body: pad(MaxBodyBytes + 1), wantStatus: 413, wantType: TypeBodyTooLarge, wantDetail: "must not exceed 65536 bytes"},
		{name: "huge single value", body: `{"customer_id":"` + strings.Repeat("x", 2*MaxBodyBytes) + `"}`, wantStatus: 413, wantType: TypeBodyTooLarge},
		{name: "unknown field", body: `{"customer_id":"c-1","coupon":"FREE"}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `unknown field "coupon"`},
		{name: "unknown nested field", body: `{"items":[{"sku":"A","shade":"red"}]}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `unknown field "shade"`},
		{name: "wrong type", body: `{"items":[{"sku":"A","quantity":"two"}]}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `field "items.quantity" must be a number (integer), not string`},
		{name: "fraction for integer", body: `{"items":[{"sku":"A","quantity":1.5}]}`, wantStatus: 400, wantDetail: `field "items.quantity" must be an integer`},
		{name: "integer overflow", body: `{"items":[{"sku":"A","quantity":1e40}]}`, wantStatus: 400, wantDetail: `field "items.quantity"`},
		{name: "object for array", body: `{"items":{}}`, wantStatus: 400, wantDetail: `field "items" must be an array, not object`},
		{name: "array for object", body: `[]`, wantStatus: 400, wantDetail: `request body must be an object, not array`},
		{name: "trailing garbage", body: `{"customer_id":"c-1"} xyz`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: "single JSON value"},
		{name: "second value", body: `{"customer_id":"c-1"}{"customer_id":"c-2"}`, wantStatus: 400, wantDetail: "single JSON value"},
		{name: "malformed", body: `{"customer_id" "c-1"}`, wantStatus: 400, wantDetail: "malformed JSON at byte"},
		{name: "truncated", body: `{"customer_id":`, wantStatus: 400, wantDetail: "truncated"},
		{name: "empty", body: ``, wantStatus: 400, wantDetail: "empty"},
		{name: "form content type", body: `customer_id=c-1`, contentType: "application/x-www-form-urlencoded", wantStatus: 415, wantType: TypeUnsupportedMediaType},
		{name: "NUL in a string", body: `{"customer_id":"c\u0000"}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `field "customer_id" contains a control character (U+0000)`},
		{name: "BEL in a nested string", body: `{"items":[{"sku":"A"},{"sku":"B\u0007"}]}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `field "items[1].sku" contains a control character (U+0007)`},
		{name: "raw DEL in a string", body: "{\"customer_id\":\"c\x7f\"}", wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `field "customer_id" contains a control character (U+007F)`},
		{name: "escaped newline", body: `{"customer_id":"c\n1"}`, wantStatus: 400, wantType: TypeInvalidBody, wantDetail: `field "customer_id" contains a control character (U+000A)`},
		{name: "newlines between values are whitespace", body: "{\n\t\"customer_id\": \"c-1\"\r\n}\n", wantStatus: 200},
		{name: "non-ASCII text", body: `{"customer_id":"Zoë ☕ \ufffd"}`, wantStatus: 200},
		{name: "invalid UTF-8", body: "{\"customer_id\":\"c\xff\"}", wantStatus: 400, wantType: TypeInvalidBody, wantDetail: "request body is not valid UTF-8 (byte 17)"},
		{name: "truncated UTF-8", body: "{\"customer_id\":\"\xc3\"}", wantStatus: 400, wantType: TypeInvalidBody, wantDetail: "not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodPost, "/v1/orders", strings.NewReader(tt.body))
			switch tt.contentType {
			case "":
				req.Header.Set("Content-Type", "application/json")
			case "-":
			default:
				req.Header.Set("Content-Type", tt.contentType)
			}
			rec := httptest.NewRecorder()
			decodeHandler(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus == 200 {
				return
			}
			p := mustProblem(t, rec)
			if tt.wantType != "" && p.Type != tt.wantType {
				t.Errorf("type = %q, want %q", p.Type, tt.wantType)
			}
			if !strings.Contains(p.Detail, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", p.Detail, tt.wantDetail)
			}
		})
	}
}

func TestDecodeErrorMatchesSentinels(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{"x":1}`))
	err := DecodeJSON(httptest.NewRecorder(), req, &testOrder{})
	if !errors.Is(err, ErrInvalidBody) || errors.Is(err, ErrBodyTooLarge) {
		t.Errorf("err %v: want ErrInvalidBody only", err)
	}
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Errorf("err %T is not a *DecodeError", err)
	}

	req = httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
	if err := DecodeJSON(httptest.NewRecorder(), req, testOrder{}); err == nil || errors.As(err, &de) {
		t.Errorf("non-pointer dst: err = %v, want a plain (500) error", err)
	}
}

func mustProblem(tb testing.TB, rec *httptest.ResponseRecorder) Problem {
	tb.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != ProblemContentType {
		tb.Fatalf("Content-Type = %q, want %q", ct, ProblemContentType)
	}
	var p Problem
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		tb.Fatalf("problem body: %v", err)
	}
	if p.Status != rec.Code {
		tb.Errorf("problem status %d, response status %d", p.Status, rec.Code)
	}
	return p
}
