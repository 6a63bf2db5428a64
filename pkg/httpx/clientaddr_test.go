package httpx

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestParseTrustedProxies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		list    string
		want    string // String() of the result
		wantErr bool
	}{
		{list: "", want: ""},
		{list: " , ", want: ""},
		{list: "10.0.0.0/8", want: "10.0.0.0/8"},
		{list: "10.1.2.3/8, 192.0.2.10 ,2001:db8::1", want: "10.0.0.0/8,192.0.2.10/32,2001:db8::1/128"},
		{list: "::ffff:10.0.0.0/104", want: "10.0.0.0/8"},
		{list: "::ffff:192.0.2.1", want: "192.0.2.1/32"},
		{list: "fd00::/8", want: "fd00::/8"},
		{list: "10.0.0.0/33", wantErr: true},
		{list: "10.0.0.0/8,nope", wantErr: true},
		{list: "10.0.0.1:80", wantErr: true},
		{list: "fe80::1%eth0", wantErr: true},
		{list: "::ffff:0.0.0.0/64", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseTrustedProxies(tt.list)
		switch {
		case tt.wantErr && err == nil:
			t.Errorf("ParseTrustedProxies(%q) = %v, want an error", tt.list, got)
		case !tt.wantErr && err != nil:
			t.Errorf("ParseTrustedProxies(%q): %v", tt.list, err)
		case !tt.wantErr && got.String() != tt.want:
			t.Errorf("ParseTrustedProxies(%q) = %q, want %q", tt.list, got.String(), tt.want)
		}
	}
	if _, err := ParseTrustedProxies("10.0.0.0/8, bad"); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Errorf("error %v does not name the bad entry", err)
	}
}

func mustTrustedProxies(tb testing.TB, list string) TrustedProxies {
	tb.Helper()
	t, err := ParseTrustedProxies(list)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func TestResolve(t *testing.T) {
	t.Parallel()
	proxies := mustTrustedProxies(t, "127.0.0.1, 10.0.0.0/8, fd00::/8")
	tests := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{"untrusted peer, no header", "192.0.2.1", nil, "192.0.2.1"},
		{"untrusted peer's header is ignored", "192.0.2.1", []string{"203.0.113.7"}, "192.0.2.1"},
		{"untrusted peer's trusted-looking header is ignored", "192.0.2.1", []string{"10.0.0.1"}, "192.0.2.1"},
		{"trusted peer, no header", "10.0.0.5", nil, "10.0.0.5"},
		{"trusted peer, one hop", "10.0.0.5", []string{"203.0.113.7"}, "203.0.113.7"},
		{"rightmost untrusted wins over a forged left", "10.0.0.5", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{"trusted hops are skipped", "10.0.0.5", []string{"198.51.100.1, 203.0.113.7, 10.9.9.9, 127.0.0.1"}, "203.0.113.7"},
		{"header lines are one list", "10.0.0.5", []string{"198.51.100.1, 203.0.113.7", "10.9.9.9"}, "203.0.113.7"},
		{"last line first", "10.0.0.5", []string{"10.9.9.9", "203.0.113.7"}, "203.0.113.7"},
		{"spaces are trimmed", "10.0.0.5", []string{"  203.0.113.7  ,10.1.1.1 "}, "203.0.113.7"},
		{"all trusted: the leftmost", "10.0.0.5", []string{"10.1.1.1, 10.2.2.2"}, "10.1.1.1"},
		{"garbled rightmost: the peer", "10.0.0.5", []string{"203.0.113.7, garbage"}, "10.0.0.5"},
		{"garbled after a trusted hop: that hop", "10.0.0.5", []string{"203.0.113.7, unknown, 10.7.7.7"}, "10.7.7.7"},
		{"garbled left of the client does not matter", "10.0.0.5", []string{"garbage, 203.0.113.7"}, "203.0.113.7"},
		{"empty entry stops the walk", "10.0.0.5", []string{"203.0.113.7,,"}, "10.0.0.5"},
		{"empty header line stops the walk", "10.0.0.5", []string{""}, "10.0.0.5"},
		{"entry with a port", "10.0.0.5", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"IPv6 entry with a port", "10.0.0.5", []string{"[2001:db8::7]:4711"}, "2001:db8::7"},
		{"IPv6 peer and hops", "fd00::1", []string{"2001:db8::7, fd12::3"}, "2001:db8::7"},
		{"IPv6 untrusted peer", "2001:db8::1", []string{"203.0.113.7"}, "2001:db8::1"},
		{"IPv4-mapped entries are IPv4", "::ffff:10.0.0.5", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"a zone is not an address", "10.0.0.5", []string{"fe80::1%eth0"}, "10.0.0.5"},
	}
	for _, tt := range tests {
		got := proxies.Resolve(netip.MustParseAddr(tt.peer), tt.xff)
		if got.String() != tt.want {
			t.Errorf("%s: Resolve(%s, %q) = %s, want %s", tt.name, tt.peer, tt.xff, got, tt.want)
		}
	}

	var none TrustedProxies
	if got := none.Resolve(netip.MustParseAddr("10.0.0.5"), []string{"203.0.113.7"}); got.String() != "10.0.0.5" {
		t.Errorf("zero TrustedProxies resolved %s, want the peer", got)
	}
}

func TestClientAddrWithoutMiddleware(t *testing.T) {
	t.Parallel()
	for remote, want := range map[string]string{
		"192.0.2.1:5555":            "192.0.2.1",
		"[2001:db8::1]:443":         "2001:db8::1",
		"[::ffff:192.0.2.1]:80":     "192.0.2.1",
		"[fe80::1%eth0]:80":         "fe80::1",
		"192.0.2.1":                 "192.0.2.1",
		"@":                         "invalid IP",
		"not an address at all:123": "invalid IP",
	} {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = remote
		req.Header.Set("X-Forwarded-For", "203.0.113.7")
		if got := ClientAddr(req).String(); got != want {
			t.Errorf("ClientAddr(RemoteAddr %q) = %s, want %s", remote, got, want)
		}
	}
}

// newCallerServer serves, through NewRouter with trusted as
// TRUSTED_PROXIES, GET /who rate-limited to one request per second per
// CallerKey, answering {"key": …} with the key. It listens on network address addr
// ("127.0.0.1:0", "[::1]:0").
func newCallerServer(tb testing.TB, addr, trusted string) string {
	tb.Helper()
	mux, err := NewRouter(RouterOptions{
		Logger:         slog.New(slog.DiscardHandler),
		TrustedProxies: mustTrustedProxies(tb, trusted),
	})
	if err != nil {
		tb.Fatal(err)
	}
	mux.With(RateLimit(1, nil)).Get("/who", func(w http.ResponseWriter, r *http.Request) {
		WriteJSON(w, http.StatusOK, callerBody{Key: CallerKey(r)})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv := httptest.NewUnstartedServer(mux)
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv.URL
}

// who calls GET /who with the X-Forwarded-For lines xff and returns the
// status and, for a 200, the caller key the server saw.
func who(tb testing.TB, base string, xff ...string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/who", nil)
	if err != nil {
		tb.Fatal(err)
	}
	for _, v := range xff {
		req.Header.Add("X-Forwarded-For", v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, ""
	}
	var body callerBody
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		tb.Fatalf("GET /who: %v", err)
	}
	return resp.StatusCode, body.Key
}

// callerBody is the answer of GET /who.
type callerBody struct {
	Key string `json:"key"`
}

type call struct {
	xff      []string
	wantCode int
	wantKey  string // checked for a 200
}

func checkCalls(tb testing.TB, base string, calls []call) {
	tb.Helper()
	for i, c := range calls {
		code, key := who(tb, base, c.xff...)
		if code != c.wantCode || (code == http.StatusOK && key != c.wantKey) {
			tb.Errorf("call %d with X-Forwarded-For %q: %d %q, want %d %q", i+1, c.xff, code, key, c.wantCode, c.wantKey)
		}
	}
}

// TestCallerKeyBehindProxies sends real requests from 127.0.0.1 (and ::1)
// through NewRouter and a one-request-per-second rate limit: the key, and
// the bucket, follow the client address only where the peer is a trusted
// proxy.
func TestCallerKeyBehindProxies(t *testing.T) {
	t.Parallel()
	t.Run("spoofed header from an untrusted peer", func(t *testing.T) {
		t.Parallel()
		// The peer 127.0.0.1 is not among the trusted proxies: whatever
		// it claims, both requests are its own, and share a bucket.
		base := newCallerServer(t, "127.0.0.1:0", "10.0.0.0/8")
		checkCalls(t, base, []call{
			{[]string{"203.0.113.1"}, http.StatusOK, "ip:127.0.0.1"},
			{[]string{"203.0.113.2"}, http.StatusTooManyRequests, ""},
			{nil, http.StatusTooManyRequests, ""},
		})
	})
	t.Run("two clients behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		base := newCallerServer(t, "127.0.0.1:0", "127.0.0.1")
		checkCalls(t, base, []call{
			{[]string{"203.0.113.1"}, http.StatusOK, "ip:203.0.113.1"},
			{[]string{"203.0.113.2"}, http.StatusOK, "ip:203.0.113.2"},
			{[]string{"203.0.113.1"}, http.StatusTooManyRequests, ""},
			// The proxy's own requests are a third caller.
			{nil, http.StatusOK, "ip:127.0.0.1"},
		})
	})
	t.Run("a chain of proxies", func(t *testing.T) {
		t.Parallel()
		base := newCallerServer(t, "127.0.0.1:0", "127.0.0.1, 10.0.0.0/8")
		checkCalls(t, base, []call{
			// The client forged a leftmost entry; the ingress (10.1.2.3)
			// appended the real one.
			{[]string{"198.51.100.9, 203.0.113.7, 10.1.2.3"}, http.StatusOK, "ip:203.0.113.7"},
			// Another forged entry does not buy another bucket.
			{[]string{"198.51.100.10, 203.0.113.7, 10.1.2.3"}, http.StatusTooManyRequests, ""},
			// Several header lines are read as one list.
			{[]string{"198.51.100.9", "203.0.113.8", "10.1.2.3"}, http.StatusOK, "ip:203.0.113.8"},
		})
	})
	t.Run("garbled header", func(t *testing.T) {
		t.Parallel()
		base := newCallerServer(t, "127.0.0.1:0", "127.0.0.1, 10.0.0.0/8")
		checkCalls(t, base, []call{
			{[]string{"203.0.113.7, not-an-ip"}, http.StatusOK, "ip:127.0.0.1"},
			{[]string{"203.0.113.8, <script>, 10.1.2.3"}, http.StatusOK, "ip:10.1.2.3"},
			// Garbage is no way out of the proxy's bucket.
			{[]string{"203.0.113.9, %%%"}, http.StatusTooManyRequests, ""},
		})
	})
	t.Run("IPv6", func(t *testing.T) {
		t.Parallel()
		base := newCallerServer(t, "[::1]:0", "::1")
		checkCalls(t, base, []call{
			{[]string{"2001:db8:1:2::7"}, http.StatusOK, "ip:2001:db8:1:2::"},
			// Same /64: same client.
			{[]string{"2001:db8:1:2:ffff::8"}, http.StatusTooManyRequests, ""},
			{[]string{"2001:db8:1:3::7"}, http.StatusOK, "ip:2001:db8:1:3::"},
			{nil, http.StatusOK, "ip:::"},
		})
	})
	t.Run("IPv6 peer untrusted", func(t *testing.T) {
		t.Parallel()
		base := newCallerServer(t, "[::1]:0", "127.0.0.1")
		checkCalls(t, base, []call{
			{[]string{"2001:db8:1:2::7"}, http.StatusOK, "ip:::"},
			{[]string{"2001:db8:1:3::7"}, http.StatusTooManyRequests, ""},
		})
	})
}

// TestRouterRecordsResolvedClient checks the request log line and the
// server span: both name the resolved client, never a forged header, and
// the handler still sees the TCP peer in RemoteAddr.
func TestRouterRecordsResolvedClient(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		trusted string
		want    string
	}{
		// httptest.NewRequest comes from 192.0.2.1.
		{"trusted peer", "192.0.2.1", "203.0.113.7"},
		{"untrusted peer", "10.0.0.0/8", "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newTestRouterWith(t, func(o *RouterOptions) { o.TrustedProxies = mustTrustedProxies(t, tt.trusted) })
			var remote string
			tr.mux.Get("/peer", func(w http.ResponseWriter, r *http.Request) { remote = r.RemoteAddr })
			rec := tr.do(http.MethodGet, "/peer", http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.7"}})
			if rec.Code != http.StatusOK {
				t.Fatalf("GET = %d", rec.Code)
			}
			if remote != "192.0.2.1:1234" {
				t.Errorf("handler saw RemoteAddr %q, want the peer's 192.0.2.1:1234 untouched", remote)
			}
			var line map[string]any
			for _, l := range tr.logs.lines(t) {
				if l["msg"] == "http request" {
					line = l
				}
			}
			if line["client"] != tt.want {
				t.Errorf("request log client = %v, want %s", line["client"], tt.want)
			}
			ended := tr.spans.Ended()
			if len(ended) != 1 {
				t.Fatalf("got %d spans, want 1", len(ended))
			}
			var got string
			for _, a := range ended[0].Attributes() {
				if a.Key == "client.address" {
					got = a.Value.AsString()
				}
			}
			if got != tt.want {
				t.Errorf("span client.address = %q, want %s", got, tt.want)
			}
		})
	}
}

// The admin router is what ADMIN_ADDR serves; the public one then keeps
// /healthz only.
func TestSeparateAdmin(t *testing.T) {
	t.Parallel()
	tr := newTestRouterWith(t, func(o *RouterOptions) { o.SeparateAdmin = true })
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 404, "/metrics": 404} {
		if rec := tr.do(http.MethodGet, path, nil); rec.Code != want {
			t.Errorf("public GET %s = %d, want %d", path, rec.Code, want)
		}
	}
	admin, err := NewAdminRouter(RouterOptions{
		Logger:  slog.New(slog.DiscardHandler),
		Health:  tr.health,
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "metrics here\n") }),
	})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/orders/1": 404} {
		rec := httptest.NewRecorder()
		admin.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("admin GET %s = %d, want %d", path, rec.Code, want)
		}
	}
	tr.health.SetDraining()
	rec := httptest.NewRecorder()
	admin.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("admin GET /readyz while draining = %d, want 503", rec.Code)
	}
	if _, err := NewAdminRouter(RouterOptions{}); err == nil {
		t.Error("NewAdminRouter without a Logger succeeded")
	}
}
