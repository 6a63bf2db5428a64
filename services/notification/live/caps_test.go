package live_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/notification/live"
)

// Orders of the caps tests: a tracking link is scoped to one order.
const (
	capA = "0190a6b4-0000-7000-8000-0000000ca00a"
	capB = "0190a6b4-0000-7000-8000-0000000ca00b"
	capC = "0190a6b4-0000-7000-8000-0000000ca00c"
	capD = "0190a6b4-0000-7000-8000-0000000ca00d"
)

// watcher is one connection of a caps test: a tracking-link viewer when
// sub is empty, else a JWT subject's.
type watcher struct{ order, sub, client string }

func (w watcher) query() string {
	return url.Values{"sub": {w.sub}, "client": {w.client}}.Encode()
}

// TestCaps opens the connections of each case, all held open, then one
// more: it is taken or refused with the error and metric reason of the cap
// it hits. Every connection closed, every count is back to zero.
func TestCaps(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		o      live.Options
		open   []watcher
		next   watcher
		want   error  // nil: taken
		reason string // notification_connections_refused_total's reason
	}{
		{
			name: "a tracking link's viewers up to the order's cap",
			o:    live.Options{MaxPerOrder: 2},
			open: []watcher{{capA, "", "ip:1"}, {capA, "", "ip:2"}},
			next: watcher{capA, "", "ip:3"}, want: live.ErrTooManyForOrder, reason: "order",
		},
		{
			name: "the owner connects while the link is at its viewers' cap",
			o:    live.Options{MaxPerOrder: 2, MaxPerCustomer: 1},
			open: []watcher{{capA, "", "ip:1"}, {capA, "", "ip:2"}},
			next: watcher{capA, "alice", "ip:3"},
		},
		{
			name: "viewers of another order are not counted",
			o:    live.Options{MaxPerOrder: 2},
			open: []watcher{{capA, "", "ip:1"}, {capA, "", "ip:2"}},
			next: watcher{capB, "", "ip:3"},
		},
		{
			name: "the owner's streams are not viewers",
			o:    live.Options{MaxPerOrder: 1, MaxPerCustomer: 5},
			open: []watcher{{capA, "alice", "ip:1"}, {capA, "alice", "ip:1"}},
			next: watcher{capA, "", "ip:2"},
		},
		{
			name: "a customer's streams up to its cap, across orders",
			o:    live.Options{MaxPerCustomer: 2},
			open: []watcher{{capA, "alice", "ip:1"}, {capB, "alice", "ip:2"}},
			next: watcher{capC, "alice", "ip:3"}, want: live.ErrTooManyForCustomer, reason: "customer",
		},
		{
			name: "another customer is not counted",
			o:    live.Options{MaxPerCustomer: 2},
			open: []watcher{{capA, "alice", "ip:1"}, {capB, "alice", "ip:1"}},
			next: watcher{capA, "bob", "ip:1"},
		},
		{
			name: "one address up to its cap, whatever the credentials",
			o:    live.Options{MaxPerClient: 3},
			open: []watcher{{capA, "", "ip:1"}, {capB, "", "ip:1"}, {capC, "alice", "ip:1"}},
			next: watcher{capD, "bob", "ip:1"}, want: live.ErrTooManyForClient, reason: "client",
		},
		{
			name: "another address is not counted",
			o:    live.Options{MaxPerClient: 3},
			open: []watcher{{capA, "", "ip:1"}, {capB, "", "ip:1"}, {capC, "alice", "ip:1"}},
			next: watcher{capD, "", "ip:2"},
		},
		{
			name: "no address, no per-address count",
			o:    live.Options{MaxPerClient: 1},
			open: []watcher{{capA, "", ""}, {capB, "", ""}},
			next: watcher{capC, "", ""},
		},
		{
			name: "the replica up to its cap",
			o:    live.Options{MaxPerReplica: 3},
			open: []watcher{{capA, "", "ip:1"}, {capB, "alice", "ip:2"}, {capC, "", "ip:3"}},
			next: watcher{capD, "bob", "ip:4"}, want: live.ErrReplicaFull, reason: "replica",
		},
		{
			name: "the caller's cap before the replica's",
			o:    live.Options{MaxPerOrder: 2, MaxPerReplica: 2},
			open: []watcher{{capA, "", "ip:1"}, {capA, "", "ip:2"}},
			next: watcher{capA, "", "ip:3"}, want: live.ErrTooManyForOrder, reason: "order",
		},
		{
			name: "the address's cap before the replica's",
			o:    live.Options{MaxPerClient: 2, MaxPerReplica: 2},
			open: []watcher{{capA, "", "ip:1"}, {capB, "", "ip:1"}},
			next: watcher{capC, "", "ip:1"}, want: live.ErrTooManyForClient, reason: "client",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newTestHub(t, newMemStore(), tt.o)
			var open []*websocket.Conn
			for _, w := range tt.open {
				open = append(open, dial(t, h.wsURL(w.order, w.query())))
			}
			// The next one is an event stream: the caps count both kinds.
			got := h.tryEvents(t, tt.next)
			if errText(got) != errText(tt.want) {
				t.Errorf("next connection: %v, want %v", got, tt.want)
			}
			wantRefused := map[string]int64{}
			if tt.reason != "" {
				wantRefused[tt.reason] = 1
			}
			if got := h.refusals(t); !maps.Equal(got, wantRefused) {
				t.Errorf("refusals by reason = %v, want %v", got, wantRefused)
			}
			for _, c := range open {
				_ = c.Close(websocket.StatusNormalClosure, "")
			}
			h.mustReleaseAll(t)
		})
	}
}

// TestCapsAreReleasedOnEveryClose fills the caps, ends the connections in
// each way a connection ends, and checks that every count is back to zero
// and the caps take as many connections again.
func TestCapsAreReleasedOnEveryClose(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	h := newTestHub(t, store, live.Options{MaxPerOrder: 1, MaxPerCustomer: 1, MaxPerClient: 2, MaxPerReplica: 2})
	// Each round watches orders of its own: a terminal order stays so.
	round := 0
	next := func() (viewer, owner watcher) {
		round++
		return watcher{fmt.Sprintf("0190a6b4-0000-7000-8000-%012d", 2*round), "", "ip:1"},
			watcher{fmt.Sprintf("0190a6b4-0000-7000-8000-%012d", 2*round+1), "alice", "ip:1"}
	}
	// open opens a WebSocket for viewer and an event stream for owner,
	// and checks that they fill every cap.
	open := func(t *testing.T, viewer, owner watcher) (*websocket.Conn, *http.Response, context.CancelFunc) {
		t.Helper()
		ws := dial(t, h.wsURL(viewer.order, viewer.query()))
		sse, cancel := h.mustEvents(t, owner)
		t.Cleanup(cancel)
		poll.Until(t, 5*time.Second, "both open", func() bool { s := h.Stats(); return s.WebSocket == 1 && s.SSE == 1 })
		for _, w := range []watcher{viewer, owner, {capC, "", "ip:2"}} {
			if err := h.tryEvents(t, w); err == nil {
				t.Fatalf("%+v was taken by a full hub", w)
			}
		}
		return ws, sse, cancel
	}
	ends := []struct {
		name string
		end  func(t *testing.T, viewer, owner watcher, ws *websocket.Conn, sse *http.Response, cancel context.CancelFunc)
	}{
		{"the client closes", func(_ *testing.T, _, _ watcher, ws *websocket.Conn, _ *http.Response, cancel context.CancelFunc) {
			_ = ws.Close(websocket.StatusNormalClosure, "")
			cancel()
		}},
		{"the client drops the connection", func(_ *testing.T, _, _ watcher, ws *websocket.Conn, sse *http.Response, _ context.CancelFunc) {
			_ = ws.CloseNow()
			_ = sse.Body.Close()
		}},
		{"a terminal status", func(t *testing.T, viewer, owner watcher, ws *websocket.Conn, sse *http.Response, _ context.CancelFunc) {
			for _, order := range []string{viewer.order, owner.order} {
				c := change(order, 1, "delivered")
				store.add(c)
				h.Publish(c)
			}
			if _, code := readAll(t, ws, 5*time.Second); code != websocket.StatusNormalClosure {
				t.Errorf("websocket closed with %v, want 1000", code)
			}
			if _, err := readSSE(sse, 5*time.Second); err != nil {
				t.Errorf("event stream: %v", err)
			}
		}},
		{"shutdown", func(t *testing.T, _, _ watcher, ws *websocket.Conn, sse *http.Response, _ context.CancelFunc) {
			h.Shutdown()
			if _, code := readAll(t, ws, 5*time.Second); code != websocket.StatusCode(1012) {
				t.Errorf("websocket closed with %v, want 1012", code)
			}
			if _, err := readSSE(sse, 5*time.Second); err != nil {
				t.Errorf("event stream: %v", err)
			}
		}},
	}
	// In sequence: each round needs the caps its predecessor gave back,
	// and shutdown is the last.
	for _, e := range ends {
		t.Run(e.name, func(t *testing.T) {
			viewer, owner := next()
			ws, sse, cancel := open(t, viewer, owner)
			defer sse.Body.Close()
			e.end(t, viewer, owner, ws, sse, cancel)
			h.mustReleaseAll(t)
		})
	}
}

// tryEvents opens an event stream for w and closes it at once. It returns
// nil when the stream was taken, or an error with the hub's refusal.
func (h *testHub) tryEvents(tb testing.TB, w watcher) error {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/events/"+w.order+"?"+w.query(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	b, _ := io.ReadAll(resp.Body)
	return errors.New(strings.TrimSpace(string(b)))
}

// mustEvents opens an event stream for w that stays open until cancel is
// called or the caller closes its body.
func (h *testHub) mustEvents(tb testing.TB, w watcher) (*http.Response, context.CancelFunc) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url+"/events/"+w.order+"?"+w.query(), nil)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		cancel()
		tb.Fatalf("event stream for %+v: %d %s", w, resp.StatusCode, b)
	}
	return resp, cancel
}

// mustReleaseAll waits for every connection to be gone and every cap's
// count with it.
func (h *testHub) mustReleaseAll(tb testing.TB) {
	tb.Helper()
	poll.Until(tb, 5*time.Second, "every count back to zero", func() bool { return h.Stats() == live.Stats{} })
}

// refusals returns notification.connections.refused by reason.
func (h *testHub) refusals(tb testing.TB) map[string]int64 {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.metrics.Collect(context.Background(), &rm); err != nil {
		tb.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "notification.connections.refused" {
				for _, p := range s.DataPoints {
					r, _ := p.Attributes.Value(attribute.Key("reason"))
					out[r.AsString()] += p.Value
				}
			}
		}
	}
	return out
}

// errText is err's message, or "taken" for nil.
func errText(err error) string {
	if err == nil {
		return "taken"
	}
	return err.Error()
}
