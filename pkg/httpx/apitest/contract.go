// Package apitest tests a service's HTTP API against its OpenAPI contract:
// it loads the service's embedded openapi.yaml, fails the test on every
// response the contract does not describe, and issues the bearer tokens the
// API's verifier accepts. Only _test.go files import it.
package apitest

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Contract is a validated OpenAPI document that finds the operation of a
// request.
type Contract struct {
	routes routers.Router
}

// LoadContract parses and validates spec, an OpenAPI document, and fails the
// test when it is invalid.
func LoadContract(tb testing.TB, spec []byte) *Contract {
	tb.Helper()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		tb.Fatalf("load the OpenAPI document: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		tb.Fatalf("the OpenAPI document is invalid: %v", err)
	}
	// Without servers, requests match whatever address the test server has.
	doc.Servers = nil
	routes, err := legacy.NewRouter(doc)
	if err != nil {
		tb.Fatalf("OpenAPI router: %v", err)
	}
	return &Contract{routes: routes}
}

// Check fails the test, without stopping it, when resp (whose body was read
// into body) is not a response the contract describes for req: an operation
// or status it does not document, or a header or body that does not match
// its schema.
func (c *Contract) Check(tb testing.TB, req *http.Request, resp *http.Response, body []byte) {
	tb.Helper()
	route, params, err := c.routes.FindRoute(req)
	if err != nil {
		tb.Errorf("%s %s is not in the OpenAPI document: %v", req.Method, req.URL.Path, err)
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		tb.Errorf("%s %s → %d %s\ndoes not match the OpenAPI document: %v", req.Method, req.URL.Path, resp.StatusCode, body, err)
	}
}

// Response is a response read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends req with http.DefaultClient, reads the whole response and Checks
// it. A request that gets no response fails the test.
func (c *Contract) Do(tb testing.TB, req *http.Request) Response {
	tb.Helper()
	resp, err := http.DefaultClient.Do(req) //nolint:gosec // the test's own server
	if err != nil {
		tb.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read the body: %v", req.Method, req.URL.Path, err)
	}
	c.Check(tb, req, resp, body)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

// NewRequest returns a request to url with a JSON body, when body is not
// empty, and a bearer token, when token is not empty.
func NewRequest(tb testing.TB, method, url, token, body string) *http.Request {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.Background(), method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req
}
