package httpapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	orderservice "github.com/orderly/orderly/services/order"
	"github.com/orderly/orderly/services/order/httpapi"
	"github.com/orderly/orderly/services/order/internal/ordertest"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

var (
	secret   = []byte("order-test-secret-0123456789abcdefghij")
	tokens   = apitest.Tokens{Secret: secret}
	tracking = authn.NewTrackingTokens([]byte("order-test-tracking-secret-0123456789abcdef"), nil, 30*24*time.Hour)
)

// testServer is the API on a fresh database behind a real HTTP server, with
// every response checked against openapi.yaml.
type testServer struct {
	tb       testing.TB
	url      string
	handler  http.Handler // what srv serves, for the fuzz targets
	store    *postgres.Store
	pool     *pgxpool.Pool
	contract *apitest.Contract
}

func newTestServer(tb testing.TB, rps int) *testServer {
	tb.Helper()
	return newTestServerWith(tb, httpapi.Options{RateLimitRPS: rps})
}

// newTestServerWith is newTestServer with o's settings (its verifier,
// tracking secret and log are the test's own).
func newTestServerWith(tb testing.TB, o httpapi.Options) *testServer {
	tb.Helper()
	store, pool := ordertest.NewStore(tb, nil)
	ordertest.SeedCatalog(tb, pool,
		order.Product{SKU: "WIDGET", Name: "Widget", PriceCents: 1250, Currency: "EUR"},
		order.Product{SKU: "GADGET", Name: "Gadget", PriceCents: 499, Currency: "EUR"},
		order.Product{SKU: "DOLLAR", Name: "Dollar thing", PriceCents: 100, Currency: "USD"})
	log := slog.New(slog.DiscardHandler)
	r, err := httpx.NewRouter(httpx.RouterOptions{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	o.Store, o.Timeouts = store, ordertest.Timeouts
	o.Verifier, o.Tracking, o.Log = authn.NewVerifier(secret, "", ""), tracking, log
	httpapi.New(o).Routes(r)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return &testServer{tb: tb, url: srv.URL, handler: r, store: store, pool: pool, contract: apitest.LoadContract(tb, orderservice.OpenAPI)}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return http.StatusText(r.status) + " " + string(r.body) }

// request describes one call; Header entries are added as given.
type request struct {
	method, path, token, body string
	header                    map[string]string
}

// do sends a request and checks the response against the contract.
func (s *testServer) do(rq request) response {
	s.tb.Helper()
	req := apitest.NewRequest(s.tb, rq.method, s.url+rq.path, rq.token, rq.body)
	for k, v := range rq.header {
		req.Header.Set(k, v)
	}
	r := s.contract.Do(s.tb, req)
	return response{status: r.Status, header: r.Header, body: r.Body}
}

func (s *testServer) get(tok, path string) response {
	s.tb.Helper()
	return s.do(request{method: http.MethodGet, path: path, token: tok})
}

func (s *testServer) post(tok, path, body string) response {
	s.tb.Helper()
	return s.do(request{method: http.MethodPost, path: path, token: tok, body: body})
}

// count returns the rows of table.
func (s *testServer) count(table string) int {
	s.tb.Helper()
	return ordertest.Count(s.tb, s.pool, `SELECT count(*) FROM `+table)
}

// advance drives an order through saga events, as the consumers would.
func (s *testServer) advance(id string, events ...order.Event) {
	s.tb.Helper()
	ctx := context.Background()
	for _, ev := range events {
		if _, err := s.store.Transition(ctx, ordertest.Timeouts, order.Step{OrderID: id, Event: ev, PaymentID: "pay-" + id}); err != nil {
			s.tb.Fatalf("%s: %v", ev, err)
		}
	}
}

type orderBody struct {
	ID         string  `json:"id"`
	CustomerID string  `json:"customer_id"`
	Status     string  `json:"status"`
	Reason     *string `json:"reason"`
	Items      []struct {
		SKU            string `json:"sku"`
		Quantity       int    `json:"quantity"`
		UnitPriceCents int64  `json:"unit_price_cents"`
	} `json:"items"`
	TotalCents    int64     `json:"total_cents"`
	Currency      string    `json:"currency"`
	TrackingToken string    `json:"tracking_token"`
	Version       int64     `json:"version"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	History       []struct {
		Status string    `json:"status"`
		Reason *string   `json:"reason"`
		Seq    int64     `json:"seq"`
		At     time.Time `json:"at"`
	} `json:"history"`
}

type listBody struct {
	Orders     []orderBody `json:"orders"`
	NextCursor *string     `json:"next_cursor"`
}

func decode[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

func problemOf(tb testing.TB, r response) httpx.Problem {
	tb.Helper()
	if ct := r.header.Get("Content-Type"); ct != httpx.ProblemContentType {
		tb.Errorf("Content-Type = %q, want %s (body %s)", ct, httpx.ProblemContentType, r.body)
	}
	return decode[httpx.Problem](tb, r)
}

const validBody = `{"items":[{"sku":"WIDGET","quantity":2},{"sku":"GADGET","quantity":1}],"payment_method":"pm_card_ok"}`

// mustPlace places validBody for tok and returns the order.
func (s *testServer) mustPlace(tok string) orderBody {
	s.tb.Helper()
	r := s.post(tok, "/v1/orders", validBody)
	if r.status != http.StatusCreated {
		s.tb.Fatalf("POST /v1/orders = %s", r)
	}
	return decode[orderBody](s.tb, r)
}
