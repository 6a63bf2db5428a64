package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	paymentsvc "github.com/orderly/orderly/services/payment"
	"github.com/orderly/orderly/services/payment/httpapi"
	"github.com/orderly/orderly/services/payment/payment"
	"github.com/orderly/orderly/services/payment/postgres"
)

var secret = []byte("payment-httpapi-test-secret-0123456789abcdef")

const (
	issuer   = "orderly-test"
	audience = "orderly"
)

var tokens = apitest.Tokens{Secret: secret, Issuer: issuer, Audience: audience}

// server is the payment API on a fresh database, checked against
// openapi.yaml on every response.
type server struct {
	tb       testing.TB
	pool     *pgxpool.Pool
	router   *chi.Mux
	contract *apitest.Contract
}

func newTestServer(tb testing.TB, rateLimitRPS int) *server {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	log := slog.New(slog.DiscardHandler)
	router, err := httpx.NewRouter(httpx.RouterOptions{Logger: log})
	if err != nil {
		tb.Fatalf("NewRouter: %v", err)
	}
	httpapi.New(httpapi.Options{Store: postgres.New(pool), Verifier: authn.NewVerifier(secret, issuer, audience), RateLimitRPS: rateLimitRPS, Log: log}).Routes(router)
	return &server{tb: tb, pool: pool, router: router, contract: apitest.LoadContract(tb, paymentsvc.OpenAPI)}
}

// get sends GET target with the bearer token (none when empty) and checks
// the response against the OpenAPI document.
func (s *server) get(target, bearer string) *httptest.ResponseRecorder {
	s.tb.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	rec := httptest.NewRecorder()
	s.router.ServeHTTP(rec, req)
	resp := rec.Result()
	defer resp.Body.Close()
	s.contract.Check(s.tb, req, resp, rec.Body.Bytes())
	return rec
}

// mustInsert stores a payment of status for a new order and returns it.
func (s *server) mustInsert(status payment.Status, amount int64) payment.Payment {
	s.tb.Helper()
	p := payment.Payment{
		ID: uuid.New(), OrderID: uuid.New(), CustomerID: "customer-1", AmountCents: amount, Currency: "EUR",
		Method: "pm_card_ok", Status: status,
	}
	switch status {
	case payment.StatusDeclined:
		p.DeclineReason = "card_declined"
	case payment.StatusAuthorized, payment.StatusRefunded:
		p.GatewayReference = "sim_auth_test"
	}
	err := pg.Transact(context.Background(), s.pool, func(tx pgx.Tx) error {
		return postgres.New(s.pool).Save(context.Background(), tx, postgres.Changes{Payments: []*payment.Payment{&p}})
	})
	if err != nil {
		s.tb.Fatalf("insert payment: %v", err)
	}
	return p
}

type paymentBody struct {
	ID          string `json:"id"`
	OrderID     string `json:"order_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	Status      string `json:"status"`
}

func mustPayments(tb testing.TB, rec *httptest.ResponseRecorder) []paymentBody {
	tb.Helper()
	if rec.Code != http.StatusOK {
		tb.Fatalf("status = %d, want 200; body %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Payments []paymentBody `json:"payments"`
	}
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		tb.Fatalf("decode body: %v", err)
	}
	if body.Payments == nil {
		tb.Fatal(`"payments" is null or missing, want an array`)
	}
	return body.Payments
}

func mustProblem(tb testing.TB, rec *httptest.ResponseRecorder, status int, typ string) httpx.Problem {
	tb.Helper()
	if rec.Code != status {
		tb.Fatalf("status = %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != httpx.ProblemContentType {
		tb.Errorf("Content-Type = %q, want %s", ct, httpx.ProblemContentType)
	}
	var p httpx.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		tb.Fatalf("decode problem: %v", err)
	}
	if p.Type != typ || p.Status != status || p.Title == "" {
		tb.Errorf("problem = %+v, want type %s, status %d and a title", p, typ, status)
	}
	return p
}

func TestListPaymentsAsAdmin(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	for _, status := range []payment.Status{payment.StatusAuthorized, payment.StatusDeclined, payment.StatusRefunded} {
		t.Run(string(status), func(t *testing.T) {
			p := s.mustInsert(status, 4200)
			got := mustPayments(t, s.get("/v1/payments?order_id="+p.OrderID.String(), admin))
			want := []paymentBody{{ID: p.ID.String(), OrderID: p.OrderID.String(), AmountCents: 4200, Currency: "EUR", Status: string(status)}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("payments (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListPaymentsLeavesOutVoidedAndUnknownOrders(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	voided := s.mustInsert(payment.StatusVoided, 0)
	authorizing := s.mustInsert(payment.StatusAuthorizing, 4200) // a charge whose answer is not recorded
	for name, id := range map[string]uuid.UUID{"voided": voided.OrderID, "authorizing": authorizing.OrderID, "unknown": uuid.New()} {
		if got := mustPayments(t, s.get("/v1/payments?order_id="+id.String(), admin)); len(got) != 0 {
			t.Errorf("%s order: payments = %+v, want none", name, got)
		}
	}
}

// A payment whose refund is in flight is still authorized until the
// gateway's refund is recorded.
func TestListPaymentsShowsARefundInFlightAsAuthorized(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	p := s.mustInsert(payment.StatusRefunding, 4200)
	if got := mustPayments(t, s.get("/v1/payments?order_id="+p.OrderID.String(), admin)); len(got) != 1 || got[0].Status != "authorized" {
		t.Errorf("payments = %+v, want one authorized", got)
	}
}

func TestListPaymentsRefusesNonAdmins(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	p := s.mustInsert(payment.StatusAuthorized, 4200)
	target := "/v1/payments?order_id=" + p.OrderID.String()

	rec := s.get(target, "")
	mustProblem(t, rec, http.StatusUnauthorized, authn.TypeUnauthorized)
	if rec.Header().Get("WWW-Authenticate") == "" {
		t.Error("401 without a WWW-Authenticate challenge")
	}

	forged, err := authn.Issue([]byte("another-secret-another-secret-0123456789"),
		authn.Claims{Subject: "operator-1", Role: authn.RoleAdmin, ExpiresAt: time.Now().Add(time.Hour)}, issuer, audience)
	if err != nil {
		t.Fatal(err)
	}
	mustProblem(t, s.get(target, forged), http.StatusUnauthorized, authn.TypeUnauthorized)

	// The customer who placed the order is still not an operator.
	mustProblem(t, s.get(target, tokens.For(t, "customer-1", "")), http.StatusForbidden, authn.TypeForbidden)
}

func TestListPaymentsRejectsBadOrderID(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	id := uuid.NewString()
	tests := []struct {
		name, query, detail string
	}{
		{"missing", "", "order_id is required"},
		{"empty", "?order_id=", "order_id must be a UUID"},
		{"not a uuid", "?order_id=42", "order_id must be a UUID"},
		{"not hex", "?order_id=zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz", "order_id must be a UUID"},
		{"without dashes", "?order_id=" + strings.ReplaceAll(id, "-", ""), "order_id must be a UUID"},
		{"twice", "?order_id=" + id + "&order_id=" + id, "order_id must be given once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustProblem(t, s.get("/v1/payments"+tt.query, admin), http.StatusBadRequest, httpx.TypeInvalidParameter)
			if p.Detail != tt.detail {
				t.Errorf("detail = %q, want %q", p.Detail, tt.detail)
			}
		})
	}
}

func TestListPaymentsIsRateLimitedPerSubject(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 1)
	admin := tokens.For(t, "operator-1", authn.RoleAdmin)
	target := "/v1/payments?order_id=" + uuid.NewString()
	if code := s.get(target, admin).Code; code != http.StatusOK {
		t.Fatalf("first request: status %d, want 200", code)
	}
	rec := s.get(target, admin)
	mustProblem(t, rec, http.StatusTooManyRequests, httpx.TypeRateLimited)
	if rec.Header().Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Another operator has a budget of their own.
	if code := s.get(target, tokens.For(t, "operator-2", authn.RoleAdmin)).Code; code != http.StatusOK {
		t.Errorf("another subject got %d, want 200", code)
	}
}

func TestServesOpenAPIDocument(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	req := httptest.NewRequest(http.MethodGet, "/openapi.yaml", nil)
	rec := httptest.NewRecorder()
	s.router.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !bytes.Equal(rec.Body.Bytes(), paymentsvc.OpenAPI) {
		t.Errorf("GET /openapi.yaml = %d, %d bytes; want 200 and the document", rec.Code, rec.Body.Len())
	}
}
