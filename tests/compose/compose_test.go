// Package compose is the end-to-end suite of `make compose-test`: it drives
// the stack docker-compose.yml runs (deploy/local/compose-test brings it up
// on the host's network) through its published ports only. It skips unless
// ORDERLY_COMPOSE=1; the ports are the compose variables (ORDER_PORT, …,
// JAEGER_UI_PORT, PROMETHEUS_PORT), defaulting as docker-compose.yml does,
// so it also runs against `docker compose up` on a laptop.
package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/demo"
	"github.com/orderly/orderly/pkg/leaktest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { leaktest.Main(m) }

// settle bounds every wait: a saga, a scrape, a trace reaching Jaeger.
const settle = 90 * time.Second

// portOf is the published port named by variable, or def.
func portOf(variable string, def int) string {
	if v := os.Getenv(variable); v != "" {
		return v
	}
	return strconv.Itoa(def)
}

// serviceURL is the base URL of the registry service name.
func serviceURL(tb testing.TB, name string) string {
	tb.Helper()
	for _, s := range stack.Services {
		if s.Name == name {
			return "http://127.0.0.1:" + portOf(strings.ToUpper(s.Name)+"_PORT", s.Port)
		}
	}
	tb.Fatalf("no service %s in the registry", name)
	return ""
}

func skipUnlessStack(tb testing.TB) {
	tb.Helper()
	if os.Getenv("ORDERLY_COMPOSE") != "1" {
		tb.Skip("ORDERLY_COMPOSE=1 runs this against a running compose stack (make compose-test)")
	}
}

// token mints a token as orderly-token does, with the stack's secret
// (AUTH_JWT_SECRET, the development one unless the caller set it).
func token(tb testing.TB, sub string, admin bool) string {
	tb.Helper()
	cfg, err := boot.LoadTokenConfig(os.Environ())
	if err != nil {
		tb.Fatal(err)
	}
	c := authn.Claims{Subject: sub, ExpiresAt: time.Now().Add(10 * time.Minute)}
	if admin {
		c.Role = authn.RoleAdmin
	}
	t, err := cfg.Issue(c)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// call sends one request and decodes a JSON answer into out (when not nil);
// it returns the status.
func call(tb testing.TB, method, u, bearer string, body, out any, headers ...string) int {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	// No keep-alive: an idle connection left in the pool would be a
	// goroutine the leak check reports.
	req.Close = true
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, u, err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: %v in %s", method, u, err, raw)
		}
	}
	return resp.StatusCode
}

// TestSeeded: the seed service put the demo catalog on sale.
func TestSeeded(t *testing.T) {
	skipUnlessStack(t)
	for _, sku := range demo.SKUs() {
		var p stack.Product
		if st := call(t, http.MethodGet, serviceURL(t, "inventory")+"/v1/products/"+sku, "", nil, &p); st != http.StatusOK {
			t.Errorf("GET /v1/products/%s = %d, want 200 (seeded)", sku, st)
		}
	}
}

// TestOrderEndToEnd places orders through the published ports, follows one
// over the notification service's WebSocket as its owner until it is
// confirmed, and finds a trace holding spans of every service in Jaeger.
func TestOrderEndToEnd(t *testing.T) {
	skipUnlessStack(t)
	customer := "compose-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	jwt := token(t, customer, false)
	orderURL := serviceURL(t, "order")
	req := stack.OrderRequest{Items: []stack.Item{{SKU: demo.Catalog[2].SKU, Quantity: 1}}, PaymentMethod: "pm_card_ok"}

	// The order service learns the catalog from inventory's events: the
	// first order may come before the seed's reached it.
	var first stack.Order
	poll.UntilNil(t, settle, "the first order to be accepted", func() error {
		if st := call(t, http.MethodPost, orderURL+"/v1/orders", jwt, req, &first, "Idempotency-Key", stack.NewUUID()); st != http.StatusCreated {
			return fmt.Errorf("POST /v1/orders = %d", st)
		}
		return nil
	})
	orders := []stack.Order{first}
	for range 2 {
		var o stack.Order
		if st := call(t, http.MethodPost, orderURL+"/v1/orders", jwt, req, &o, "Idempotency-Key", stack.NewUUID()); st != http.StatusCreated {
			t.Fatalf("POST /v1/orders = %d, want 201", st)
		}
		orders = append(orders, o)
	}

	followUntilConfirmed(t, serviceURL(t, "notification"), orders[0].ID, jwt)
	for _, o := range orders[1:] {
		poll.UntilNil(t, settle, "order "+o.ID+" to be confirmed", func() error {
			var got stack.Order
			if st := call(t, http.MethodGet, orderURL+"/v1/orders/"+o.ID, jwt, nil, &got); st != http.StatusOK {
				return fmt.Errorf("GET = %d", st)
			}
			if got.Status != "confirmed" {
				return fmt.Errorf("status %s", got.Status)
			}
			return nil
		})
	}

	findTrace(t, orders[0].ID)
}

// wsMessage is one status update on the tracking socket.
type wsMessage struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Seq    int64  `json:"seq"`
}

// followUntilConfirmed reads order's socket, as its owner (bearer JWT),
// until it says confirmed.
func followUntilConfirmed(tb testing.TB, base, order, jwt string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	u := "ws" + strings.TrimPrefix(base, "http") + "/v1/orders/" + order + "/ws"
	// The notification service knows the order once OrderPlaced has
	// reached it; until then the socket answers 404.
	var c *websocket.Conn
	poll.UntilNil(tb, settle, "the socket of order "+order, func() error {
		var err error
		c, _, err = websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + jwt}}}) //nolint:bodyclose // coder/websocket closes it
		return err
	})
	defer func() { _ = c.CloseNow() }()
	var seen []string
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			tb.Fatalf("order %s over WebSocket: %v after %v", order, err, seen)
		}
		var m wsMessage
		if err := json.Unmarshal(b, &m); err != nil {
			tb.Fatalf("message %s: %v", b, err)
		}
		seen = append(seen, fmt.Sprintf("%d:%s", m.Seq, m.Status))
		switch m.Status {
		case "confirmed":
			_ = c.Close(websocket.StatusNormalClosure, "")
			return
		case "cancelled":
			tb.Fatalf("order %s cancelled: %v", order, seen)
		}
	}
}

// jaegerTraces is the part of Jaeger's /api/traces answer read here.
type jaegerTraces struct {
	Data []struct {
		TraceID   string `json:"traceID"`
		Processes map[string]struct {
			ServiceName string `json:"serviceName"`
		} `json:"processes"`
		Spans []struct {
			ProcessID string `json:"processID"`
		} `json:"spans"`
	} `json:"data"`
}

// findTrace waits until Jaeger holds the order's own trace, found by the
// messaging.message.conversation_id its producer and consumer spans carry
// (the order id), with spans of every registry service: the trace crossed
// the outbox, RabbitMQ, every consumer, the collector and Jaeger.
func findTrace(tb testing.TB, orderID string) {
	tb.Helper()
	jaeger := "http://127.0.0.1:" + portOf("JAEGER_UI_PORT", 16686)
	tags := fmt.Sprintf(`{"messaging.message.conversation_id":%q}`, orderID)
	q := url.Values{"service": {"order"}, "tags": {tags}, "limit": {"20"}, "lookback": {"1h"}}
	poll.UntilNil(tb, settle, "order "+orderID+"'s trace in Jaeger with spans of "+strings.Join(stack.Names(), ", "), func() error {
		var tr jaegerTraces
		if st := call(tb, http.MethodGet, jaeger+"/api/traces?"+q.Encode(), "", nil, &tr); st != http.StatusOK {
			return fmt.Errorf("GET /api/traces = %d", st)
		}
		if len(tr.Data) == 0 {
			return errors.New("no trace yet")
		}
		var got []string
		for _, trace := range tr.Data {
			got = got[:0]
			for _, s := range trace.Spans {
				if n := trace.Processes[s.ProcessID].ServiceName; !slices.Contains(got, n) {
					got = append(got, n)
				}
			}
			if !slices.ContainsFunc(stack.Names(), func(n string) bool { return !slices.Contains(got, n) }) {
				tb.Logf("order %s: trace %s has %d spans of %v", orderID, trace.TraceID, len(trace.Spans), got)
				return nil
			}
		}
		return fmt.Errorf("%d traces; the last has spans of %v", len(tr.Data), got)
	})
}

// TestDashboard: the operators' dashboard reads every service's metrics
// at the addresses compose gives it (NOTIFICATION_DASHBOARD_SOURCES) and
// shows each service's dead-letter queues, and the outboxes of those that
// publish.
func TestDashboard(t *testing.T) {
	skipUnlessStack(t)
	admin := token(t, "ops-"+stack.NewUUID(), true)
	u := serviceURL(t, "notification") + "/v1/dashboard/snapshot"
	poll.UntilNil(t, settle, "every service read by the dashboard", func() error {
		var snap struct {
			Sources []struct {
				Service string `json:"service"`
				OK      bool   `json:"ok"`
				Error   string `json:"error"`
			} `json:"sources"`
			DeadLetters []struct {
				Service string `json:"service"`
			} `json:"dead_letters"`
			Outboxes []struct {
				Service string `json:"service"`
			} `json:"outboxes"`
		}
		if st := call(t, http.MethodGet, u, admin, nil, &snap); st != http.StatusOK {
			return fmt.Errorf("GET /v1/dashboard/snapshot = %d", st)
		}
		read, dlqs := map[string]string{}, map[string]bool{}
		for _, s := range snap.Sources {
			read[s.Service] = "failed: " + s.Error
			if s.OK {
				read[s.Service] = "ok"
			}
		}
		for _, d := range snap.DeadLetters {
			dlqs[d.Service] = true
		}
		for _, n := range stack.Names() {
			if read[n] != "ok" || !dlqs[n] {
				return fmt.Errorf("sources %v, dead letters of %v, outboxes %v: want every service read, with its DLQs", read, dlqs, snap.Outboxes)
			}
		}
		if len(snap.Outboxes) == 0 {
			return errors.New("no outbox shown")
		}
		return nil
	})
}

// TestPrometheus: Prometheus scrapes every registry service (up == 1),
// evaluates every alert rule without error, and runs every query of the
// Grafana dashboard.
func TestPrometheus(t *testing.T) {
	skipUnlessStack(t)
	prom := "http://127.0.0.1:" + portOf("PROMETHEUS_PORT", 9090)
	poll.UntilNil(t, settle, "every service up in Prometheus", func() error {
		var r struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  []any             `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if st := call(t, http.MethodGet, prom+"/api/v1/query?query="+url.QueryEscape(`up`), "", nil, &r); st != http.StatusOK {
			return fmt.Errorf("query = %d", st)
		}
		up := map[string]bool{}
		for _, s := range r.Data.Result {
			up[s.Metric["job"]] = len(s.Value) == 2 && s.Value[1] == "1"
		}
		for _, n := range stack.Names() {
			if !up[n] {
				return fmt.Errorf("up: %v, want %s up", up, n)
			}
		}
		return nil
	})
	// Prometheus evaluates every rule each evaluation_interval: one whose
	// query it cannot run reports health "err", which parsing alone (tests/ops)
	// would not catch.
	poll.UntilNil(t, settle, "every alert rule evaluated without error", func() error {
		var rules struct {
			Data struct {
				Groups []struct {
					File  string `json:"file"`
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if st := call(t, http.MethodGet, prom+"/api/v1/rules", "", nil, &rules); st != http.StatusOK {
			return fmt.Errorf("GET /api/v1/rules = %d", st)
		}
		n := 0
		for _, g := range rules.Data.Groups {
			if !strings.HasSuffix(g.File, "alerts.yml") {
				continue
			}
			for _, r := range g.Rules {
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
				}
				n++
			}
		}
		if n == 0 {
			return errors.New("no rules from alerts.yml")
		}
		return nil
	})

	// Grafana runs only on a laptop (docs/deploy.md); its panels' queries
	// run here against the same Prometheus, with Grafana's interval
	// variable as Grafana would fill it.
	for _, expr := range panelQueries(t) {
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if st := call(t, http.MethodGet, prom+"/api/v1/query?query="+url.QueryEscape(expr), "", nil, &r); st != http.StatusOK || r.Status != "success" {
			t.Errorf("dashboard query %s: %d %s %s", expr, st, r.Status, r.Error)
		}
	}
}

// panelQueries are the PromQL queries of every panel of the Grafana
// dashboard, with $__rate_interval filled in.
func panelQueries(tb testing.TB) []string {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana", "dashboards", "orderly.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		tb.Fatal(err)
	}
	var out []string
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			if t.Expr != "" {
				out = append(out, strings.ReplaceAll(t.Expr, "$__rate_interval", "1m"))
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("the dashboard has no queries")
	}
	return out
}
