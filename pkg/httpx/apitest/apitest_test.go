package apitest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx/apitest"
)

const spec = `openapi: 3.0.3
info: {title: items, version: "1"}
paths:
  /items/{id}:
    parameters:
      - {name: id, in: path, required: true, schema: {type: string}}
    put:
      requestBody:
        content:
          application/json:
            schema: {type: object}
      responses:
        "200":
          description: the item
          content:
            application/json:
              schema:
                type: object
                required: [id]
                properties: {id: {type: string}}
        "404":
          description: no such item
`

// failures runs f with a testing.TB that records what would fail the test,
// in a goroutine of its own so that a Fatal ends only f.
func failures(t *testing.T, f func(tb testing.TB)) []string {
	t.Helper()
	r := &recorder{TB: t}
	var done sync.WaitGroup
	done.Go(func() { f(r) })
	done.Wait()
	return r.failed
}

type recorder struct {
	testing.TB
	failed []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.FailNow()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// FailNow ends f's goroutine, as testing.T's does the test's.
func (r *recorder) FailNow() { runtime.Goexit() }

func TestCheckFailsOnResponsesTheContractDoesNotDescribe(t *testing.T) {
	t.Parallel()
	c := apitest.LoadContract(t, []byte(spec))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/items/good", "/nowhere":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"good"}`)
		case "/items/bad-body":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"name":"no id"}`)
		case "/items/bad-type":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, `{"id":"x"}`)
		case "/items/teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()

	tests := []struct {
		path, method string
		fails        string // in the failure; "" for none
	}{
		{"/items/good", http.MethodPut, ""},
		{"/items/missing", http.MethodPut, ""},
		{"/items/bad-body", http.MethodPut, "does not match the OpenAPI document"},
		{"/items/bad-type", http.MethodPut, "does not match the OpenAPI document"},
		{"/items/teapot", http.MethodPut, "status is not supported"},
		{"/items/good", http.MethodGet, "is not in the OpenAPI document"},
		{"/nowhere", http.MethodPut, "is not in the OpenAPI document"},
	}
	for _, tt := range tests {
		got := failures(t, func(tb testing.TB) {
			r := c.Do(tb, apitest.NewRequest(tb, tt.method, srv.URL+tt.path, "tok", `{}`))
			if r.Status == 0 || r.Header == nil {
				tb.Errorf("Do returned %+v", r)
			}
		})
		switch {
		case tt.fails == "" && len(got) > 0:
			t.Errorf("%s %s failed: %q", tt.method, tt.path, got)
		case tt.fails != "" && (len(got) != 1 || !strings.Contains(got[0], tt.fails)):
			t.Errorf("%s %s failures = %q, want one saying %q", tt.method, tt.path, got, tt.fails)
		}
	}

	// A request that gets no response stops the test.
	srv.Close()
	got := failures(t, func(tb testing.TB) {
		c.Do(tb, apitest.NewRequest(tb, http.MethodPut, srv.URL+"/items/good", "", ""))
		tb.Errorf("Do returned")
	})
	if len(got) != 1 || !strings.Contains(got[0], "PUT /items/good") {
		t.Errorf("failures = %q, want only the failed request", got)
	}
}

func TestLoadContractFailsOnAnInvalidDocument(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"not YAML":        "openapi: [",
		"invalid OpenAPI": strings.Replace(spec, "type: object\n                required", "type: thing\n                required", 1),
	} {
		got := failures(t, func(tb testing.TB) { apitest.LoadContract(tb, []byte(doc)) })
		if len(got) != 1 {
			t.Errorf("%s: failures = %q, want one", name, got)
		}
	}
}

func TestNewRequest(t *testing.T) {
	t.Parallel()
	req := apitest.NewRequest(t, http.MethodPost, "http://example.test/x", "tok", `{"a":1}`)
	if req.Header.Get("Authorization") != "Bearer tok" || req.Header.Get("Content-Type") != "application/json" || req.ContentLength != 7 {
		t.Errorf("request with token and body: %v, length %d", req.Header, req.ContentLength)
	}
	req = apitest.NewRequest(t, http.MethodGet, "http://example.test/x", "", "")
	if len(req.Header) != 0 || req.Body != nil {
		t.Errorf("request without token and body: %v, body %v", req.Header, req.Body)
	}
}

func TestTokensAreAcceptedByTheVerifier(t *testing.T) {
	t.Parallel()
	secret := []byte("apitest-secret-0123456789abcdef0123456789")
	for _, k := range []apitest.Tokens{{Secret: secret}, {Secret: secret, Issuer: "orderly-test", Audience: "orderly"}} {
		c, err := authn.NewVerifier(secret, k.Issuer, k.Audience).Verify(k.For(t, "alice", authn.RoleAdmin))
		if err != nil || c.Subject != "alice" || !c.IsAdmin() {
			t.Errorf("Verify(%+v token) = %+v, %v", k, c, err)
		}
	}
	if _, err := authn.NewVerifier(secret, "someone-else", "").Verify(apitest.Tokens{Secret: secret}.For(t, "alice", "")); err == nil {
		t.Error("a token without the issuer passed a verifier that wants one")
	}
}
