package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/services/notification/dashboard"
	"github.com/orderly/orderly/services/notification/live"
)

// call sends method path with the bearer token (none when empty) and
// checks the answer against the contract.
func (s *testServer) call(method, path, token string) result {
	s.tb.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.url+path, nil)
	if err != nil {
		s.tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.tb.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.contract.Check(s.tb, req, resp, b)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// TestDashboardNeedsAnAdmin checks every dashboard endpoint's refusals: no
// token is a 401, a customer's a 403, and neither a JWT in the URL nor a
// tracking token opens the stream.
func TestDashboardNeedsAnAdmin(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	alice, admin := tokens.For(t, "alice", ""), tokens.For(t, "ops", authn.RoleAdmin)
	forged := admin[:len(admin)-4] + "AAAA"
	for _, tc := range []struct {
		name, method, path, token string
		status                    int
		problem                   string
	}{
		{"ticket without a token", http.MethodPost, "/v1/dashboard/tickets", "", 401, "unauthorized"},
		{"ticket with a forged token", http.MethodPost, "/v1/dashboard/tickets", forged, 401, "unauthorized"},
		{"ticket for a customer", http.MethodPost, "/v1/dashboard/tickets", alice, 403, "forbidden"},
		{"ticket with a tracking token", http.MethodPost, "/v1/dashboard/tickets", track(alicesOrder), 401, "unauthorized"},
		{"snapshot without a token", http.MethodGet, "/v1/dashboard/snapshot", "", 401, "unauthorized"},
		{"snapshot for a customer", http.MethodGet, "/v1/dashboard/snapshot", alice, 403, "forbidden"},
		{"snapshot for an admin", http.MethodGet, "/v1/dashboard/snapshot", admin, 200, ""},
		{"ticket for an admin", http.MethodPost, "/v1/dashboard/tickets", admin, 201, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.call(tc.method, tc.path, tc.token)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.problem != "" {
				if got := problemType(t, r); got != tc.problem {
					t.Errorf("problem type %q, want %q", got, tc.problem)
				}
			} else if r.header.Get("Cache-Control") != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", r.header.Get("Cache-Control"))
			}
		})
	}

	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	ticket := mintTicket(t, s, admin)
	otherScope, _, err := tracking.Ticket("payments", "ops", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		a       attempt
		status  int
		problem string
	}{
		{"stream without credentials", attempt{path: "/v1/dashboard/ws", ws: true}, 401, "unauthorized"},
		{"stream with a customer's JWT", attempt{path: "/v1/dashboard/ws", ws: true, header: bearer(alice)}, 403, "forbidden"},
		{"stream with an admin's JWT in the URL", attempt{path: "/v1/dashboard/ws?ticket=" + admin, ws: true}, 401, "unauthorized"},
		{"stream with a tracking token", attempt{path: "/v1/dashboard/ws?ticket=" + track(alicesOrder), ws: true}, 401, "unauthorized"},
		{"stream with another scope's ticket", attempt{path: "/v1/dashboard/ws?ticket=" + otherScope, ws: true}, 401, "unauthorized"},
		{"stream with a ticket and a header", attempt{path: "/v1/dashboard/ws?ticket=" + ticket, ws: true, header: bearer(admin)}, 401, "unauthorized"},
		{"stream from a foreign origin", attempt{path: "/v1/dashboard/ws?ticket=" + ticket, ws: true, header: map[string]string{"Origin": "https://evil.example"}}, 403, "forbidden-origin"},
		{"stream that is not a handshake", attempt{path: "/v1/dashboard/ws?ticket=" + ticket}, 426, "websocket-required"},
		{"stream with a ticket", attempt{path: "/v1/dashboard/ws?ticket=" + ticket, ws: true, header: map[string]string{"Origin": allowed}}, 101, ""},
		{"stream with an admin's JWT", attempt{path: "/v1/dashboard/ws", ws: true, header: bearer(admin)}, 101, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.do(tc.a)
			if r.status != tc.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.problem != "" {
				if got := problemType(t, r); got != tc.problem {
					t.Errorf("problem type %q, want %q", got, tc.problem)
				}
			}
		})
	}
}

func mintTicket(t *testing.T, s *testServer, admin string) string {
	t.Helper()
	r := s.call(http.MethodPost, "/v1/dashboard/tickets", admin)
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if r.status != http.StatusCreated || json.Unmarshal([]byte(r.body), &tk) != nil || tk.Ticket == "" {
		t.Fatalf("POST /v1/dashboard/tickets = %d %s", r.status, r.body)
	}
	return tk.Ticket
}

// TestDashboardSnapshot checks what an admin sees: the counts by status
// (zeros included), the latest changes newest first, and the chart; then
// that the stream opened with a ticket sends snapshots with growing seqs,
// and that a follower counts against the admin, not an order.
func TestDashboardSnapshot(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, live.Options{})
	admin := tokens.For(t, "ops", authn.RoleAdmin)
	r := s.call(http.MethodGet, "/v1/dashboard/snapshot", admin)
	var snap dashboard.Snapshot
	if err := json.Unmarshal([]byte(r.body), &snap); err != nil {
		t.Fatalf("snapshot %s: %v", r.body, err)
	}
	want := map[string]int64{"pending": 0, "reserved": 1, "confirmed": 0, "shipped": 0, "delivered": 0, "cancelled": 1}
	for st, n := range want {
		if snap.OrdersByStatus[st] != n {
			t.Errorf("orders_by_status = %v, want %v", snap.OrdersByStatus, want)
			break
		}
	}
	var latest []string
	for _, c := range snap.Latest {
		latest = append(latest, c.Status)
	}
	// The fixture's times: alice's reserved a second after both firsts.
	if len(latest) != 3 || latest[0] != "reserved" {
		t.Errorf("latest = %v, want reserved first of three", latest)
	}
	for _, c := range snap.Latest {
		if c.Status == "cancelled" && (c.Reason == nil || *c.Reason != "payment_declined") {
			t.Errorf("the cancelled change has reason %v, want payment_declined", c.Reason)
		}
	}
	if snap.Type != "dashboard" || snap.Seq < 1 || snap.OrdersPerSecond.StepSeconds != 10 || len(snap.OrdersPerSecond.Points) != 60 {
		t.Errorf("snapshot type %q seq %d chart %+v", snap.Type, snap.Seq, snap.OrdersPerSecond)
	}

	c := s.mustDial(attempt{path: "/v1/dashboard/ws?ticket=" + mintTicket(t, s, admin)})
	var last int64
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		typ, b, err := c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("read a snapshot: %v", err)
		}
		var got dashboard.Snapshot
		if typ != websocket.MessageText || json.Unmarshal(b, &got) != nil || got.Type != "dashboard" {
			t.Fatalf("frame %v %s is not a snapshot", typ, b)
		}
		if got.Seq <= last {
			t.Errorf("snapshot seq %d after %d", got.Seq, last)
		}
		last = got.Seq
		if !strings.Contains(string(b), `"reserved":1`) {
			t.Errorf("streamed snapshot %s lacks the counts", b)
		}
	}
	if st := s.hub.Stats(); st.WebSocket != 1 || st.Owners != 1 || st.Viewers != 0 {
		t.Errorf("hub stats %+v: want one WebSocket counted against its admin", st)
	}
	if orders := s.hub.Orders(); len(orders) != 0 {
		t.Errorf("Orders() = %v: a topic is not an order", orders)
	}
}
