package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
	"github.com/orderly/orderly/services/inventory"
	"github.com/orderly/orderly/services/inventory/httpapi"
	"github.com/orderly/orderly/services/inventory/postgres"
	"github.com/orderly/orderly/services/inventory/stock"
)

var secret = []byte("inventory-test-secret-0123456789abcdef")

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
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	return newTestServerOn(tb, pool, rps)
}

// newTestServerOn is newTestServer on pool, a migrated database.
func newTestServerOn(tb testing.TB, pool *pgxpool.Pool, rps int) *testServer {
	tb.Helper()
	store := postgres.New(pool)
	log := slog.New(slog.DiscardHandler)
	r, err := httpx.NewRouter(httpx.RouterOptions{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	httpapi.New(httpapi.Options{Store: store, Verifier: authn.NewVerifier(secret, "", ""), RateLimitRPS: rps, Log: log}).Routes(r)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	return &testServer{tb: tb, url: srv.URL, handler: r, store: store, pool: pool, contract: apitest.LoadContract(tb, inventory.OpenAPI)}
}

// token issues a token for role, whose subject is named after the role.
func token(tb testing.TB, role string) string {
	tb.Helper()
	return apitest.Tokens{Secret: secret}.For(tb, "user-"+role, role)
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request and checks the response against the contract.
func (s *testServer) do(method, path, tok, body string) response {
	s.tb.Helper()
	r := s.contract.Do(s.tb, apitest.NewRequest(s.tb, method, s.url+path, tok, body))
	return response{status: r.Status, header: r.Header, body: r.Body}
}

type product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Stock      int64  `json:"stock"`
	Reserved   int64  `json:"reserved"`
}

func decode[T any](tb testing.TB, r response) T {
	tb.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		tb.Fatalf("decode %T from %s: %v", v, r.body, err)
	}
	return v
}

// wantProblem checks a problem+json response's status and type.
func wantProblem(tb testing.TB, r response, status int, typ string) httpx.Problem {
	tb.Helper()
	if r.status != status {
		tb.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != httpx.ProblemContentType {
		tb.Errorf("Content-Type = %q, want %q", ct, httpx.ProblemContentType)
	}
	p := decode[httpx.Problem](tb, r)
	if p.Type != typ || p.Status != status {
		tb.Errorf("problem = %+v, want type %s, status %d", p, typ, status)
	}
	return p
}

func (s *testServer) outboxCount() int {
	s.tb.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		s.tb.Fatal(err)
	}
	return n
}

func TestPublicReads(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	for _, sku := range []string{"C-3", "A-1", "E-5", "B-2", "D-4"} {
		if _, _, err := s.store.PutProduct(context.Background(), stock.Product{SKU: sku, Name: "Item " + sku, PriceCents: 250, Currency: "USD", Stock: 7}); err != nil {
			t.Fatal(err)
		}
	}

	r := s.do(http.MethodGet, "/v1/products/B-2", "", "")
	if r.status != http.StatusOK {
		t.Fatalf("GET B-2 = %d %s", r.status, r.body)
	}
	want := product{SKU: "B-2", Name: "Item B-2", PriceCents: 250, Currency: "USD", Stock: 7}
	if diff := cmp.Diff(want, decode[product](t, r)); diff != "" {
		t.Errorf("GET B-2 (-want +got):\n%s", diff)
	}

	type list struct {
		Products   []product `json:"products"`
		NextCursor string    `json:"next_cursor"`
	}
	all := decode[list](t, s.do(http.MethodGet, "/v1/products", "", ""))
	if len(all.Products) != 5 || all.NextCursor != "" || all.Products[0].SKU != "A-1" || all.Products[4].SKU != "E-5" {
		t.Errorf("GET /v1/products = %+v, want all five by SKU and no cursor", all)
	}
	var got []string
	path := "/v1/products?limit=2"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		page := decode[list](t, s.do(http.MethodGet, path, "", ""))
		for _, p := range page.Products {
			got = append(got, p.SKU)
		}
		path = ""
		if page.NextCursor != "" {
			path = "/v1/products?limit=2&cursor=" + page.NextCursor
		}
	}
	if diff := cmp.Diff([]string{"A-1", "B-2", "C-3", "D-4", "E-5"}, got); diff != "" {
		t.Errorf("pages (-want +got):\n%s", diff)
	}

	wantProblem(t, s.do(http.MethodGet, "/v1/products/NOPE", "", ""), http.StatusNotFound, httpapi.TypeProductNotFound)
	wantProblem(t, s.do(http.MethodGet, "/v1/products/lower", "", ""), http.StatusBadRequest, httpx.TypeInvalidParameter)
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "cursor=%21%21", "cursor=bG93ZXI"} {
		wantProblem(t, s.do(http.MethodGet, "/v1/products?"+q, "", ""), http.StatusBadRequest, httpx.TypeInvalidParameter)
	}

	empty := newTestServer(t, 0)
	if r := empty.do(http.MethodGet, "/v1/products", "", ""); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"products":[]`)) {
		t.Errorf("empty catalog = %d %s, want an empty array", r.status, r.body)
	}
}

func TestAdminPut(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := token(t, authn.RoleAdmin)

	r := s.do(http.MethodPut, "/v1/products/MUG-1", admin, `{"name":"Mug","price_cents":1299,"currency":"EUR","stock":10}`)
	if r.status != http.StatusCreated {
		t.Fatalf("create = %d %s", r.status, r.body)
	}
	if loc := r.header.Get("Location"); loc != "/v1/products/MUG-1" {
		t.Errorf("Location = %q", loc)
	}
	want := product{SKU: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Stock: 10}
	if diff := cmp.Diff(want, decode[product](t, r)); diff != "" {
		t.Errorf("create (-want +got):\n%s", diff)
	}

	r = s.do(http.MethodPut, "/v1/products/MUG-1", admin, `{"name":"Mug (large)","price_cents":1499,"currency":"EUR","stock":12}`)
	if r.status != http.StatusOK {
		t.Fatalf("update = %d %s", r.status, r.body)
	}
	want = product{SKU: "MUG-1", Name: "Mug (large)", PriceCents: 1499, Currency: "EUR", Stock: 12}
	if diff := cmp.Diff(want, decode[product](t, r)); diff != "" {
		t.Errorf("update (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, decode[product](t, s.do(http.MethodGet, "/v1/products/MUG-1", "", ""))); diff != "" {
		t.Errorf("GET after update (-want +got):\n%s", diff)
	}

	// Each change wrote its ProductUpserted event, with the version.
	rows, err := s.pool.Query(context.Background(), `SELECT routing_key, aggregate_id, exchange FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	events, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByPos[struct{ RoutingKey, AggregateID, Exchange string }])
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("outbox has %d events, want 2", len(events))
	}
	for _, e := range events {
		if e.RoutingKey != "product.upserted" || e.AggregateID != "MUG-1" || e.Exchange != "inventory.events" {
			t.Errorf("event %+v", *e)
		}
	}

	// Stock below what orders hold → 409, nothing changes.
	err = pg.Transact(context.Background(), s.pool, func(tx pgx.Tx) error {
		st := stock.Step{Kind: stock.StepReserve, OrderID: uuid.New(), Lines: []stock.Line{{SKU: "MUG-1", Quantity: 5}}}
		book, err := s.store.LockBook(context.Background(), tx, st)
		if err != nil {
			return err
		}
		if _, err := book.Apply(st, time.Now()); err != nil {
			return err
		}
		return s.store.Save(context.Background(), tx, book)
	})
	if err != nil {
		t.Fatal(err)
	}
	before := s.outboxCount()
	wantProblem(t, s.do(http.MethodPut, "/v1/products/MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":4}`),
		http.StatusConflict, httpapi.TypeStockBelowReserved)
	if got := decode[product](t, s.do(http.MethodGet, "/v1/products/MUG-1", "", "")); got.Stock != 12 || got.Reserved != 5 || got.PriceCents != 1499 {
		t.Errorf("after refused update: %+v", got)
	}
	if n := s.outboxCount(); n != before {
		t.Errorf("refused update wrote %d events", n-before)
	}
}

func TestAdminPutRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := token(t, authn.RoleAdmin)
	forged, err := authn.Issue([]byte("some-other-secret-0123456789abcdef"), authn.Claims{Subject: "x", Role: "admin", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	expired, err := authn.Issue(secret, authn.Claims{Subject: "x", Role: "admin", ExpiresAt: time.Now().Add(-time.Hour)}, "", "")
	if err != nil {
		t.Fatal(err)
	}
	const good = `{"name":"Mug","price_cents":1299,"currency":"EUR","stock":10}`
	big := `{"name":"` + strings.Repeat("x", httpx.MaxBodyBytes) + `","price_cents":1,"currency":"EUR","stock":1}`

	tests := []struct {
		name     string
		sku      string
		token    string
		body     string
		ctype    string
		status   int
		typ      string
		inDetail string
	}{
		{"no token", "MUG-1", "", good, "", 401, authn.TypeUnauthorized, ""},
		{"forged token", "MUG-1", forged, good, "", 401, authn.TypeUnauthorized, ""},
		{"expired token", "MUG-1", expired, good, "", 401, authn.TypeUnauthorized, ""},
		{"customer token", "MUG-1", token(t, ""), good, "", 403, authn.TypeForbidden, ""},
		{"unknown field", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":1,"color":"red"}`, "", 400, httpx.TypeInvalidBody, `"color"`},
		{"wrong type", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":"ten"}`, "", 400, httpx.TypeInvalidBody, `"stock"`},
		{"fractional price", "MUG-1", admin, `{"name":"Mug","price_cents":1.5,"currency":"EUR","stock":1}`, "", 400, httpx.TypeInvalidBody, `"price_cents"`},
		{"not an object", "MUG-1", admin, `[]`, "", 400, httpx.TypeInvalidBody, ""},
		{"malformed", "MUG-1", admin, `{"name":`, "", 400, httpx.TypeInvalidBody, ""},
		{"empty body", "MUG-1", admin, ``, "", 400, httpx.TypeInvalidBody, ""},
		{"lower-case sku", "mug-1", admin, good, "", 400, httpx.TypeInvalidParameter, "sku"},
		{"sku with underscore", "MUG_1", admin, good, "", 400, httpx.TypeInvalidParameter, "sku"},
		{"sku too long", strings.Repeat("A", 65), admin, good, "", 400, httpx.TypeInvalidParameter, "sku"},
		{"negative stock", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":-1}`, "", 422, httpapi.TypeInvalidProduct, "stock"},
		{"stock too big", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":1000000001}`, "", 422, httpapi.TypeInvalidProduct, "stock"},
		{"negative price", "MUG-1", admin, `{"name":"Mug","price_cents":-5,"currency":"EUR","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "price_cents"},
		{"price too big", "MUG-1", admin, `{"name":"Mug","price_cents":1000000001,"currency":"EUR","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "price_cents"},
		{"empty name", "MUG-1", admin, `{"name":"","price_cents":1,"currency":"EUR","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "name"},
		{"long name", "MUG-1", admin, `{"name":"` + strings.Repeat("n", 201) + `","price_cents":1,"currency":"EUR","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "name"},
		{"lower-case currency", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"eur","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "currency"},
		{"missing stock", "MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR"}`, "", 422, httpapi.TypeInvalidProduct, "stock is required"},
		{"null name", "MUG-1", admin, `{"name":null,"price_cents":1,"currency":"EUR","stock":1}`, "", 422, httpapi.TypeInvalidProduct, "name is required"},
		{"body over 64 KiB", "MUG-1", admin, big, "", 413, httpx.TypeBodyTooLarge, ""},
		{"form body", "MUG-1", admin, "name=Mug", "application/x-www-form-urlencoded", 415, httpx.TypeUnsupportedMediaType, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := apitest.NewRequest(t, http.MethodPut, s.url+"/v1/products/"+tt.sku, tt.token, tt.body)
			// The cases send JSON, the empty body included, unless they name
			// another media type.
			req.Header.Set("Content-Type", "application/json")
			if tt.ctype != "" {
				req.Header.Set("Content-Type", tt.ctype)
			}
			r := s.contract.Do(t, req)
			p := wantProblem(t, response{status: r.Status, header: r.Header, body: r.Body}, tt.status, tt.typ)
			if !strings.Contains(p.Detail, tt.inDetail) {
				t.Errorf("detail %q does not mention %q", p.Detail, tt.inDetail)
			}
			if tt.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	// Nothing was written by any of them.
	if n := s.outboxCount(); n != 0 {
		t.Errorf("refused requests wrote %d events", n)
	}
	var products int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM products`).Scan(&products); err != nil || products != 0 {
		t.Errorf("refused requests wrote %d products (%v)", products, err)
	}
}

func TestRateLimitPerCaller(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 2)
	var limited response
	for range 20 {
		if r := s.do(http.MethodGet, "/v1/products", "", ""); r.status == http.StatusTooManyRequests {
			limited = r
			break
		}
	}
	if limited.status == 0 {
		t.Fatal("20 quick requests at 2/s were never limited")
	}
	wantProblem(t, limited, http.StatusTooManyRequests, httpx.TypeRateLimited)
	if limited.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// An admin is counted by token subject, not by the address the
	// anonymous calls used up.
	r := s.do(http.MethodPut, "/v1/products/A", token(t, authn.RoleAdmin), `{"name":"A","price_cents":1,"currency":"EUR","stock":1}`)
	if r.status != http.StatusCreated {
		t.Errorf("admin PUT after anonymous calls were limited = %d %s", r.status, r.body)
	}
}

func TestServesOpenAPI(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	resp, err := http.Get(s.url + "/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, inventory.OpenAPI) {
		t.Errorf("GET /openapi.yaml = %d, %d bytes; want the embedded document", resp.StatusCode, len(b))
	}
}
