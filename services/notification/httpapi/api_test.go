package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/httpx/apitest"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	notificationservice "github.com/orderly/orderly/services/notification"
	"github.com/orderly/orderly/services/notification/dashboard"
	"github.com/orderly/orderly/services/notification/httpapi"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

var (
	secret = []byte("notification-test-secret-0123456789abcdef")
	tokens = apitest.Tokens{Secret: secret}
	// The streams' tracking tokens: signed with their own secret, and
	// during a rotation with the previous one.
	trackingSecret  = []byte("notification-test-tracking-secret-0123456789")
	previousSecret  = []byte("notification-test-old-tracking-secret-01234")
	tracking        = authn.NewTrackingTokens(trackingSecret, previousSecret, 30*24*time.Hour)
	oldTracking     = authn.NewTrackingTokens(previousSecret, nil, 30*24*time.Hour)
	jwtAsTracking   = authn.NewTrackingTokens(secret, nil, 30*24*time.Hour)
	retiredTracking = authn.NewTrackingTokens([]byte("notification-test-retired-secret-0123456789"), nil, 30*24*time.Hour)
)

// track returns order id's tracking token, minted now.
func track(id string) string { return tracking.Token(id, time.Now()) }

const (
	alicesOrder  = "0190a6b4-0000-7000-8000-00000000a11c"
	bobsOrder    = "0190a6b4-0000-7000-8000-000000000b0b"
	unknownOrder = "0190a6b4-0000-7000-8000-00000000dead"
	allowed      = "https://shop.example"
)

type testServer struct {
	tb       testing.TB
	url      string
	handler  http.Handler // what srv serves, for the fuzz targets
	hub      *live.Hub
	orders   *countingOrders
	contract *apitest.Contract
}

// countingOrders counts the API's reads of who owns an order, so that a
// test can tell a refusal read nothing.
type countingOrders struct {
	httpapi.Orders
	reads atomic.Int64
}

func (c *countingOrders) Current(ctx context.Context, orderID string) (status.Change, error) {
	c.reads.Add(1)
	return c.Orders.Current(ctx, orderID)
}

func newTestServer(tb testing.TB, o live.Options) *testServer {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, postgres.Migration)
	store := postgres.New(pool)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if err := pg.Transact(ctx, pool, func(tx pgx.Tx) error {
		_, err := store.Save(ctx, tx,
			status.Change{OrderID: alicesOrder, CustomerID: "alice", Status: "pending", Seq: 1, At: at},
			status.Change{OrderID: alicesOrder, CustomerID: "alice", Status: "reserved", Seq: 2, At: at.Add(time.Second)},
			status.Change{OrderID: bobsOrder, CustomerID: "bob", Status: "cancelled", Reason: "payment_declined", Seq: 1, At: at})
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	o.Store, o.Log = store, log
	hub, err := live.NewHub(o)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := httpx.NewRouter(httpx.RouterOptions{Logger: log})
	if err != nil {
		tb.Fatal(err)
	}
	orders := &countingOrders{Orders: store}
	board, err := dashboard.New(dashboard.Options{Store: store, Hub: hub, Log: log, Interval: 20 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	httpapi.New(httpapi.Options{
		Hub: hub, Orders: orders, Verifier: authn.NewVerifier(secret, "", ""), Tracking: tracking,
		AllowedOrigins: []string{allowed}, RateLimitRPS: 10000, Log: log,
		Page:  http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "page") }),
		Board: board, DashboardPage: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "dashboard") }),
	}).Routes(r)
	srv := httptest.NewServer(r)
	tb.Cleanup(srv.Close)
	hctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- hub.Run(hctx) }()
	go func() { done <- board.Run(hctx) }()
	tb.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				tb.Errorf("hub or board: %v", err)
			}
		}
	})
	return &testServer{tb: tb, url: srv.URL, handler: r, hub: hub, orders: orders, contract: mustContract(tb)}
}

// mustContract loads openapi.yaml, whose event streams kin-openapi has no
// body decoder for: it gets one that reads them as text.
func mustContract(tb testing.TB) *apitest.Contract {
	tb.Helper()
	openapi3filter.RegisterBodyDecoder("text/event-stream", func(body io.Reader, _ http.Header, _ *openapi3.SchemaRef, _ openapi3filter.EncodingFn) (any, error) {
		b, err := io.ReadAll(body)
		return string(b), err
	})
	return apitest.LoadContract(tb, notificationservice.OpenAPI)
}

// attempt is one request to a stream endpoint.
type attempt struct {
	path   string            // after the base URL, with the query
	header map[string]string // Authorization, Origin, Last-Event-ID…
	ws     bool              // send a WebSocket handshake
}

type result struct {
	status int
	header http.Header
	body   string
}

// do sends a; a refused request's response is checked against the
// contract. An accepted stream is read until its first event (SSE) or
// left at the 101 (WebSocket), then closed.
func (s *testServer) do(a attempt) result {
	s.tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, s.url+a.path, nil)
	if err != nil {
		s.tb.Fatal(err)
	}
	for k, v := range a.header {
		req.Header.Set(k, v)
	}
	if a.ws {
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.tb.Fatalf("GET %s: %v", a.path, err)
	}
	defer resp.Body.Close()
	var body string
	switch resp.StatusCode {
	case http.StatusSwitchingProtocols:
	case http.StatusOK:
		if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			sc := bufio.NewScanner(resp.Body)
			var b strings.Builder
			for sc.Scan() {
				b.WriteString(sc.Text() + "\n")
				if strings.HasPrefix(sc.Text(), "data: ") {
					break
				}
			}
			body = b.String()
			break
		}
		fallthrough
	default:
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		s.contract.Check(s.tb, req, resp, b)
	}
	return result{status: resp.StatusCode, header: resp.Header, body: body}
}

func problemType(tb testing.TB, r result) string {
	tb.Helper()
	var p httpx.Problem
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		tb.Fatalf("not a problem: %s", r.body)
	}
	return strings.TrimPrefix(p.Type, httpx.ProblemBase)
}

func TestAuthorizationBeforeTheUpgrade(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	alice, bob, admin := tokens.For(t, "alice", ""), tokens.For(t, "bob", ""), tokens.For(t, "ops", authn.RoleAdmin)
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	forged := tokens.For(t, "alice", "")
	forged = forged[:len(forged)-4] + "AAAA"

	tests := []struct {
		name     string
		a        attempt
		status   int
		problem  string
		firstSeq string
	}{
		{"no credentials", attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true}, 401, "unauthorized", ""},
		{"someone else's JWT", attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: bearer(bob)}, 404, "order-not-found", ""},
		{"another order's tracking token", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(bobsOrder), ws: true}, 401, "unauthorized", ""},
		{"forged JWT", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + forged, ws: true}, 401, "unauthorized", ""},
		{"garbage token", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=nope", ws: true}, 401, "unauthorized", ""},
		{"malformed Authorization", attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: map[string]string{"Authorization": "Basic abc"}}, 401, "unauthorized", ""},
		{"JWT for an order not known yet", attempt{path: "/v1/orders/" + unknownOrder + "/ws", ws: true, header: bearer(alice)}, 404, "order-not-found", ""},
		{"bad origin", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true, header: map[string]string{"Origin": "https://evil.example"}}, 403, "forbidden-origin", ""},
		{"malformed id", attempt{path: "/v1/orders/not-a-uuid/ws?token=x", ws: true}, 400, "invalid-order-id", ""},
		{"bad since", attempt{path: "/v1/orders/" + alicesOrder + "/ws?since=-1&token=" + track(alicesOrder), ws: true}, 400, "invalid-query", ""},
		{"not a handshake", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder)}, 426, "websocket-required", ""},

		{"owner's JWT", attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: bearer(alice)}, 101, "", ""},
		{"owner's JWT in the query", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + alice, ws: true}, 401, "unauthorized", ""},
		{"admin's JWT in the query", attempt{path: "/v1/orders/" + bobsOrder + "/ws?token=" + admin, ws: true}, 401, "unauthorized", ""},
		{"expired tracking token", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + tracking.Token(alicesOrder, time.Now().Add(-31*24*time.Hour)), ws: true}, 401, "unauthorized", ""},
		{"tracking token signed with the JWT secret", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + jwtAsTracking.Token(alicesOrder, time.Now()), ws: true}, 401, "unauthorized", ""},
		{"tracking token of a retired secret", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + retiredTracking.Token(alicesOrder, time.Now()), ws: true}, 401, "unauthorized", ""},
		{"tracking token in the query and a JWT in the header", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true, header: bearer(alice)}, 401, "unauthorized", ""},
		{"over-long ?token=", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + strings.Repeat("A", 8<<10+1), ws: true}, 401, "unauthorized", ""},
		{"admin's JWT", attempt{path: "/v1/orders/" + bobsOrder + "/ws", ws: true, header: bearer(admin)}, 101, "", ""},
		{"tracking token", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true, header: map[string]string{"Origin": allowed}}, 101, "", ""},
		{"tracking token as bearer", attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: bearer(track(alicesOrder))}, 101, "", ""},
		{"tracking token under the previous secret", attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + oldTracking.Token(alicesOrder, time.Now()), ws: true}, 101, "", ""},
		{"tracking token, order not known yet", attempt{path: "/v1/orders/" + unknownOrder + "/ws?token=" + track(unknownOrder), ws: true}, 101, "", ""},

		{"SSE without credentials", attempt{path: "/v1/orders/" + alicesOrder + "/events"}, 401, "unauthorized", ""},
		{"SSE with a bad origin", attempt{path: "/v1/orders/" + alicesOrder + "/events?token=" + track(alicesOrder), header: map[string]string{"Origin": "https://evil.example"}}, 403, "forbidden-origin", ""},
		{"SSE with someone else's JWT", attempt{path: "/v1/orders/" + bobsOrder + "/events", header: bearer(alice)}, 404, "order-not-found", ""},
		{"SSE with the owner's JWT in the query", attempt{path: "/v1/orders/" + alicesOrder + "/events?token=" + alice}, 401, "unauthorized", ""},
		{"SSE with the owner's JWT in the header", attempt{path: "/v1/orders/" + alicesOrder + "/events", header: bearer(alice)}, 200, "", "id: 2"},
		{"SSE with an expired tracking token", attempt{path: "/v1/orders/" + alicesOrder + "/events?token=" + tracking.Token(alicesOrder, time.Now().Add(-31*24*time.Hour))}, 401, "unauthorized", ""},
		{"SSE with a tracking token", attempt{path: "/v1/orders/" + alicesOrder + "/events?token=" + track(alicesOrder)}, 200, "", "id: 2"},
		{"SSE from the service's own page", attempt{path: "/v1/orders/" + alicesOrder + "/events?since=0&token=" + track(alicesOrder), header: map[string]string{"Origin": s.url}}, 200, "", "id: 1"},
		{"SSE resuming", attempt{path: "/v1/orders/" + alicesOrder + "/events", header: map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": "1"}}, 200, "", "id: 2"},
		{"SSE with a bad Last-Event-ID", attempt{path: "/v1/orders/" + alicesOrder + "/events?token=" + track(alicesOrder), header: map[string]string{"Last-Event-ID": "x"}}, 400, "invalid-query", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.do(tt.a)
			if r.status != tt.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tt.status)
			}
			if tt.problem != "" {
				if got := problemType(t, r); got != tt.problem {
					t.Errorf("problem type %q, want %q", got, tt.problem)
				}
				if r.header.Get("Upgrade") != "" && r.status != 426 {
					t.Errorf("a refusal carries Upgrade: %v", r.header)
				}
			}
			if tt.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %v", r.header)
			}
			if tt.firstSeq != "" && !strings.Contains(r.body, tt.firstSeq+"\n") {
				t.Errorf("stream %q does not start at %s", r.body, tt.firstSeq)
			}
		})
	}
	poll.Until(t, 5*time.Second, "every accepted stream to be released", func() bool {
		st := s.hub.Stats()
		return st.WebSocket+st.SSE == 0
	})
}

// TestCredentialsBeforeTheDatabase checks that a stream request whose
// credentials are refused costs no database read, on both streams.
func TestCredentialsBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	alice := tokens.For(t, "alice", "")
	forged := alice[:len(alice)-4] + "AAAA"
	refused := map[string]attempt{
		"no credentials":          {},
		"owner's JWT in ?token=":  {path: "?token=" + alice},
		"over-long ?token=":       {path: "?token=" + strings.Repeat("A", 8<<10+1)},
		"repeated ?token=":        {path: "?token=" + track(alicesOrder) + "&token=" + track(alicesOrder)},
		"expired tracking token":  {path: "?token=" + tracking.Token(alicesOrder, time.Now().Add(-31*24*time.Hour))},
		"another order's token":   {path: "?token=" + track(bobsOrder)},
		"forged JWT":              {header: map[string]string{"Authorization": "Bearer " + forged}},
		"over-long Authorization": {header: map[string]string{"Authorization": "Bearer " + strings.Repeat("A", 8<<10+1)}},
	}
	for name, a := range refused {
		for _, stream := range []string{"ws", "events"} {
			a := attempt{path: "/v1/orders/" + alicesOrder + "/" + stream + a.path, header: a.header, ws: stream == "ws"}
			before := s.orders.reads.Load()
			r := s.do(a)
			if r.status != http.StatusUnauthorized || problemType(t, r) != "unauthorized" {
				t.Errorf("%s on %s: %d %s, want 401 unauthorized", name, stream, r.status, r.body)
			}
			if n := s.orders.reads.Load() - before; n != 0 {
				t.Errorf("%s on %s: %d database reads before the refusal, want none", name, stream, n)
			}
		}
	}
	// The counter does count: accepted credentials lead to a read.
	before := s.orders.reads.Load()
	if r := s.do(attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true}); r.status != http.StatusSwitchingProtocols {
		t.Fatalf("valid tracking token: %d %s", r.status, r.body)
	}
	if s.orders.reads.Load() == before {
		t.Error("an accepted stream read nothing: the counter is not wired")
	}
}

func TestWebSocketThroughTheRouter(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(s.url, "http") + "/v1/orders/" + bobsOrder + "/ws?token=" + track(bobsOrder)
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {allowed}}}) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"type":"status","order_id":"` + bobsOrder + `","status":"cancelled","reason":"payment_declined","seq":1,"at":"2026-03-01T12:00:00Z"}`
	if string(b) != want {
		t.Errorf("message = %s\nwant      %s", b, want)
	}
	if _, _, err := c.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("after the terminal status: %v, want close 1000", err)
	}
}

func TestTooManyConnectionsIs429(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{MaxPerOrder: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(s.url, "http") + "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder)
	c, _, err := websocket.Dial(ctx, url, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()
	r := s.do(attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true})
	if r.status != http.StatusTooManyRequests || problemType(t, r) != "too-many-connections" || r.header.Get("Retry-After") == "" {
		t.Errorf("second connection = %d %s %v, want 429 too-many-connections with Retry-After", r.status, r.body, r.header)
	}
}

func TestOpenAPIAndPageAreServed(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	for path, want := range map[string]string{"/openapi.yaml": "openapi: 3.0.3", "/track/" + alicesOrder: "page"} {
		resp, err := http.Get(s.url + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), want) {
			t.Errorf("GET %s = %d %.40q", path, resp.StatusCode, b)
		}
	}
}

// TestLiveCaps drives the caps through the API, where the credentials
// decide what is counted: a tracking link at its viewers' cap refuses the
// next viewer but not the owner's JWT; one address over its cap gets a 429;
// a full replica a 503 with Retry-After: 5. Every refusal is checked
// against the contract, and the counts are back to zero once the streams
// are closed.
func TestLiveCaps(t *testing.T) {
	t.Parallel()
	viewer := attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true}
	owner := attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: map[string]string{"Authorization": "Bearer " + tokens.For(t, "alice", "")}}
	bobs := attempt{path: "/v1/orders/" + bobsOrder + "/events?token=" + track(bobsOrder)}
	tests := []struct {
		name    string
		o       live.Options
		open    []attempt // held open
		next    attempt
		status  int
		problem string
	}{
		{"a tracking link at its viewers' cap", live.Options{MaxPerOrder: 2}, []attempt{viewer, viewer}, viewer, http.StatusTooManyRequests, "too-many-connections"},
		{"the owner while the link is at its viewers' cap", live.Options{MaxPerOrder: 2, MaxPerCustomer: 1}, []attempt{viewer, viewer}, owner, http.StatusSwitchingProtocols, ""},
		{"the owner at the customer's cap", live.Options{MaxPerCustomer: 1}, []attempt{owner}, owner, http.StatusTooManyRequests, "too-many-connections"},
		{"a viewer while the owner is at the customer's cap", live.Options{MaxPerOrder: 1, MaxPerCustomer: 1}, []attempt{owner}, viewer, http.StatusSwitchingProtocols, ""},
		{"one address at its cap", live.Options{MaxPerClient: 2}, []attempt{viewer, owner}, bobs, http.StatusTooManyRequests, "too-many-connections"},
		{"a full replica", live.Options{MaxPerReplica: 2}, []attempt{viewer, owner}, bobs, http.StatusServiceUnavailable, "replica-full"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newTestServer(t, tt.o)
			for _, a := range tt.open {
				c := s.mustDial(a)
				defer func() { _ = c.CloseNow() }()
			}
			r := s.do(tt.next)
			if r.status != tt.status {
				t.Fatalf("next stream: %d %s, want %d", r.status, r.body, tt.status)
			}
			if tt.problem != "" {
				if got := problemType(t, r); got != tt.problem {
					t.Errorf("problem type %q, want %q", got, tt.problem)
				}
				if got := r.header.Get("Retry-After"); got != "5" {
					t.Errorf("Retry-After %q, want 5", got)
				}
			}
		})
	}
}

// TestLiveCapsAreReleased opens streams up to every cap on one server,
// closes them, and opens as many again: nothing is left counted.
func TestLiveCapsAreReleased(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{MaxPerOrder: 1, MaxPerCustomer: 1, MaxPerClient: 2, MaxPerReplica: 2})
	viewer := attempt{path: "/v1/orders/" + alicesOrder + "/ws?token=" + track(alicesOrder), ws: true}
	owner := attempt{path: "/v1/orders/" + alicesOrder + "/ws", ws: true, header: map[string]string{"Authorization": "Bearer " + tokens.For(t, "alice", "")}}
	for round := range 3 {
		v, o := s.mustDial(viewer), s.mustDial(owner)
		for _, a := range []attempt{viewer, owner} {
			if r := s.do(a); r.status != http.StatusTooManyRequests {
				t.Fatalf("round %d: a stream over the caps: %d %s", round, r.status, r.body)
			}
		}
		_ = v.Close(websocket.StatusNormalClosure, "")
		_ = o.CloseNow()
		poll.Until(t, 5*time.Second, "every count back to zero", func() bool { return s.hub.Stats() == live.Stats{} })
	}
}

// mustDial opens the WebSocket of a and returns it, open.
func (s *testServer) mustDial(a attempt) *websocket.Conn {
	s.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{}
	for k, v := range a.header {
		h.Set(k, v)
	}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+a.path, &websocket.DialOptions{HTTPHeader: h}) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		s.tb.Fatalf("dial %s: %v", a.path, err)
	}
	s.tb.Cleanup(func() { _ = c.CloseNow() })
	return c
}
