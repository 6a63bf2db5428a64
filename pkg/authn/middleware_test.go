package authn_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
)

var farFuture = time.Now().Add(24 * time.Hour)

// claimsEcho answers 200 with the caller's claims as JSON, or 500 when the
// middleware let a request through without them.
var claimsEcho = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	c, ok := authn.FromContext(r.Context())
	if !ok {
		http.Error(w, "no claims", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"sub": c.Subject, "role": c.Role})
})

func mustProblem(tb testing.TB, rec *httptest.ResponseRecorder) httpx.Problem {
	tb.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != httpx.ProblemContentType {
		tb.Fatalf("Content-Type = %q, want %q; body %s", ct, httpx.ProblemContentType, rec.Body)
	}
	var p httpx.Problem
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		tb.Fatalf("problem body %s: %v", rec.Body, err)
	}
	if p.Status != rec.Code {
		tb.Errorf("problem status %d, response status %d", p.Status, rec.Code)
	}
	return p
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	customer := mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: farFuture}, "", "")
	expired := mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: time.Now().Add(-time.Hour)}, "", "")
	forged, _ := authn.Issue([]byte("forger-secret-0123456789-0123456789"), authn.Claims{Subject: "c-1", Role: "admin", ExpiresAt: farFuture}, "", "")

	tests := []struct {
		name          string
		authorization []string
		wantStatus    int
		wantSub       string
		wantChallenge string // WWW-Authenticate on a 401
	}{
		{name: "valid", authorization: []string{"Bearer " + customer}, wantStatus: 200, wantSub: "c-1"},
		{name: "scheme is case-insensitive", authorization: []string{"bearer " + customer}, wantStatus: 200, wantSub: "c-1"},
		{name: "missing", wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "empty", authorization: []string{""}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "bearer without token", authorization: []string{"Bearer "}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "basic scheme", authorization: []string{"Basic YWRtaW46YWRtaW4="}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "token without scheme", authorization: []string{customer}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "two headers", authorization: []string{"Bearer " + customer, "Bearer " + forged}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "huge token", authorization: []string{"Bearer " + strings.Repeat("a", 10<<10)}, wantStatus: 401, wantChallenge: `Bearer realm="orderly"`},
		{name: "forged", authorization: []string{"Bearer " + forged}, wantStatus: 401, wantChallenge: `Bearer realm="orderly", error="invalid_token"`},
		{name: "expired", authorization: []string{"Bearer " + expired}, wantStatus: 401, wantChallenge: `Bearer realm="orderly", error="invalid_token"`},
		{name: "garbage", authorization: []string{"Bearer x.y.z"}, wantStatus: 401, wantChallenge: `Bearer realm="orderly", error="invalid_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			h := authn.NewVerifier(testSecret, "", "").Middleware(logger)(claimsEcho)
			req := httptest.NewRequest(http.MethodGet, "/v1/orders?token=secret-query", nil)
			for _, a := range tt.authorization {
				req.Header.Add("Authorization", a)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)

			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus == 200 {
				var got map[string]string
				if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || got["sub"] != tt.wantSub {
					t.Errorf("handler saw %s (%v), want sub %q", rec.Body, err, tt.wantSub)
				}
				return
			}
			body := rec.Body.String()
			p := mustProblem(t, rec)
			if p.Type != authn.TypeUnauthorized || p.Type != httpx.ProblemType("unauthorized") {
				t.Errorf("type = %q, want %q", p.Type, authn.TypeUnauthorized)
			}
			if p.Title == "" || p.Detail == "" {
				t.Errorf("problem %+v lacks title or detail", p)
			}
			if got := rec.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			// The response says nothing about why the token failed (every
			// bad token gets the same detail), and echoes neither the token
			// nor the query.
			wantDetail := "a bearer token is required"
			if strings.Contains(tt.wantChallenge, "invalid_token") {
				wantDetail = "the bearer token is invalid or expired"
			}
			if p.Detail != wantDetail {
				t.Errorf("detail = %q, want %q", p.Detail, wantDetail)
			}
			for _, leak := range []string{"signature", "malformed", "claim", "secret", "alg", "hs256", "is expired", "unverifiable", "secret-query"} {
				if strings.Contains(strings.ToLower(body), strings.ToLower(leak)) {
					t.Errorf("body leaks %q: %s", leak, body)
				}
			}
			for _, a := range tt.authorization {
				if tok := strings.TrimPrefix(a, "Bearer "); len(tok) > 10 && strings.Contains(body+logs.String(), tok) {
					t.Errorf("token appears in the body or the log")
				}
			}
			if !strings.Contains(logs.String(), "authentication failed") {
				t.Errorf("no log line for the failure; logs: %s", logs.String())
			}
		})
	}
}

func TestMiddlewareNilLogger(t *testing.T) {
	t.Parallel()
	h := authn.NewVerifier(testSecret, "", "").Middleware(nil)(claimsEcho)
	for _, auth := range []string{"", "Bearer nope"} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Errorf("Authorization %q: status %d, want 401", auth, rec.Code)
		}
	}
}

func TestRequireAdmin(t *testing.T) {
	t.Parallel()
	v := authn.NewVerifier(testSecret, "", "")
	tests := []struct {
		name       string
		claims     *authn.Claims // nil: through Middleware with no token
		wantStatus int
		wantType   string
	}{
		{name: "admin", claims: &authn.Claims{Subject: "ops", Role: "admin", ExpiresAt: farFuture}, wantStatus: 200},
		{name: "customer", claims: &authn.Claims{Subject: "c-1", ExpiresAt: farFuture}, wantStatus: 403, wantType: authn.TypeForbidden},
		{name: "other role", claims: &authn.Claims{Subject: "c-1", Role: "support", ExpiresAt: farFuture}, wantStatus: 403, wantType: authn.TypeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := v.Middleware(nil)(authn.RequireAdmin(claimsEcho))
			req := httptest.NewRequest(http.MethodPost, "/v1/orders/x/ship", nil)
			req.Header.Set("Authorization", "Bearer "+mustIssue(t, *tt.claims, "", ""))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if tt.wantStatus == 200 {
				return
			}
			if p := mustProblem(t, rec); p.Type != tt.wantType || p.Type != httpx.ProblemType("forbidden") {
				t.Errorf("type = %q, want %q", p.Type, tt.wantType)
			}
		})
	}
	t.Run("without Middleware fails closed", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		authn.RequireAdmin(claimsEcho).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("status = %d, want 401", rec.Code)
		}
		if p := mustProblem(t, rec); p.Type != authn.TypeUnauthorized {
			t.Errorf("type = %q, want %q", p.Type, authn.TypeUnauthorized)
		}
	})
	t.Run("WithClaims admin", func(t *testing.T) {
		t.Parallel()
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req = req.WithContext(authn.WithClaims(req.Context(), authn.Claims{Subject: "ops", Role: authn.RoleAdmin}))
		rec := httptest.NewRecorder()
		authn.RequireAdmin(claimsEcho).ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Errorf("status = %d, want 200", rec.Code)
		}
	})
}

func TestFromContext(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	if c, ok := authn.FromContext(req.Context()); ok {
		t.Errorf("FromContext on a bare context = %+v, true", c)
	}
	want := authn.Claims{Subject: "c-1", Role: "admin", ExpiresAt: farFuture}
	got, ok := authn.FromContext(authn.WithClaims(req.Context(), want))
	if !ok || got != want {
		t.Errorf("FromContext = %+v, %v; want %+v, true", got, ok, want)
	}
}

func TestSubjectKey(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "192.0.2.7:54321"
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	if got, want := authn.SubjectKey(req), "ip:192.0.2.7"; got != want {
		t.Errorf("SubjectKey without claims = %q, want %q", got, want)
	}
	req = req.WithContext(authn.WithClaims(req.Context(), authn.Claims{Subject: "c-1"}))
	if got, want := authn.SubjectKey(req), "sub:c-1"; got != want {
		t.Errorf("SubjectKey with claims = %q, want %q", got, want)
	}
}

// TestSubjectKeyBehindProxy checks that an anonymous caller behind a
// trusted proxy is keyed by the address the proxy forwarded, not by the
// proxy's.
func TestSubjectKeyBehindProxy(t *testing.T) {
	t.Parallel()
	proxies, err := httpx.ParseTrustedProxies("192.0.2.0/24")
	if err != nil {
		t.Fatal(err)
	}
	var got string
	h := proxies.Middleware(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = authn.SubjectKey(r) }))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.RemoteAddr = "192.0.2.7:54321"
	req.Header.Set("X-Forwarded-For", "198.51.100.1, 203.0.113.9")
	h.ServeHTTP(httptest.NewRecorder(), req)
	if want := "ip:203.0.113.9"; got != want {
		t.Errorf("SubjectKey behind a trusted proxy = %q, want %q", got, want)
	}
}

func TestErrorsTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err        error
		wantStatus int
		wantType   string
	}{
		{authn.ErrUnauthorized, 401, authn.TypeUnauthorized},
		{authn.ErrForbidden, 403, authn.TypeForbidden},
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		rec := httptest.NewRecorder()
		httpx.WriteError(rec, req, nil, tc.err, authn.Errors)
		if rec.Code != tc.wantStatus {
			t.Errorf("%v: status %d, want %d", tc.err, rec.Code, tc.wantStatus)
			continue
		}
		if p := mustProblem(t, rec); p.Type != tc.wantType {
			t.Errorf("%v: type %q, want %q", tc.err, p.Type, tc.wantType)
		}
	}
}

func TestQueryToken(t *testing.T) {
	t.Parallel()
	longest := strings.Repeat("a", 8<<10)
	tests := []struct {
		query  string
		want   string
		wantOK bool
	}{
		{query: "token=abc", want: "abc", wantOK: true},
		{query: "since=3&token=abc", want: "abc", wantOK: true},
		{query: "token=" + longest, want: longest, wantOK: true},
		{query: "token=" + longest + "a"},
		{query: ""},
		{query: "token="},
		{query: "token"},
		{query: "token=abc&token=abc"},
		{query: "Token=abc"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodGet, "/v1/orders/x/ws?"+tt.query, nil)
		got, ok := authn.QueryToken(req)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("QueryToken(?%.40s) = %.20q, %v; want %.20q, %v", tt.query, got, ok, tt.want, tt.wantOK)
		}
	}
}
