package apitest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/httpx"
)

// Serve has h answer req in memory (a network round trip per input would
// cost the fuzz targets of the APIs more than the handler does) and reads
// the response. It fails tb on what no input, however bad, may get: a 5xx,
// a refusal (4xx) that is not an RFC 9457 problem with the response's
// status, and a response the contract does not describe.
func (c *Contract) Serve(tb testing.TB, h http.Handler, req *http.Request) Response {
	tb.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body := rec.Body.Bytes()
	c.Check(tb, req, resp, body)
	var p httpx.Problem
	switch {
	case resp.StatusCode >= 500:
		tb.Fatalf("%s %s → %d %s", req.Method, req.URL, resp.StatusCode, body)
	case resp.StatusCode >= 400 && (resp.Header.Get("Content-Type") != httpx.ProblemContentType ||
		json.Unmarshal(body, &p) != nil || p.Status != resp.StatusCode || p.Type == ""):
		tb.Fatalf("%s %s → %d %s %s, not a problem", req.Method, req.URL, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// NewQueryRequest returns a request for path with the raw query string
// query, as a fuzz target sends it, or nil for a query that no request
// line carries: Go's server refuses a control character or a space in one,
// and a client keeps a fragment (#) to itself. Percent-encoded, all of
// them do reach handlers.
func NewQueryRequest(method, path, query string) *http.Request {
	if strings.ContainsFunc(query, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
		return nil
	}
	req := httptest.NewRequest(method, path, nil)
	req.URL.RawQuery = query
	return req
}
