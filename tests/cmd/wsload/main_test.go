package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// The client is tested against a tiny WebSocket server written here, with
// its own frame code (server side: unmasked writes, masked reads), so that
// each test can script exactly what a connection sees.

func TestAcceptKeyMatchesRFC6455Example(t *testing.T) {
	if got, want := acceptKey("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="; got != want {
		t.Fatalf("acceptKey = %q, want %q", got, want)
	}
}

// serverConn is the server's side of one upgraded connection.
type serverConn struct {
	c  net.Conn
	br *bufio.Reader
}

func (s *serverConn) writeFrame(fin bool, op byte, p []byte) error {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	hdr := []byte{b0}
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, byte(n))
	case n <= 0xffff:
		hdr = append(hdr, 126)
		hdr = binary.BigEndian.AppendUint16(hdr, uint16(n))
	default:
		hdr = append(hdr, 127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	_, err := s.c.Write(append(hdr, p...))
	return err
}

func (s *serverConn) text(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return s.writeFrame(true, opText, b)
}

func (s *serverConn) close(code int) error {
	return s.writeFrame(true, opClose, binary.BigEndian.AppendUint16(nil, uint16(code)))
}

// readFrame reads one client frame, which must be masked.
func (s *serverConn) readFrame() (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(s.br, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, fmt.Errorf("client frame not masked")
	}
	n := int(h[1] & 0x7f)
	if n >= 126 {
		return 0, nil, fmt.Errorf("unexpected long client frame")
	}
	var mask [4]byte
	if _, err := io.ReadFull(s.br, mask[:]); err != nil {
		return 0, nil, err
	}
	p = make([]byte, n)
	if _, err := io.ReadFull(s.br, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return h[0] & 0x0f, p, nil
}

// readClose reads frames until the client's close frame and returns its code.
func (s *serverConn) readClose() (int, error) {
	for {
		op, p, err := s.readFrame()
		if err != nil {
			return 0, err
		}
		if op == opClose {
			if len(p) < 2 {
				return 1005, nil
			}
			return int(binary.BigEndian.Uint16(p)), nil
		}
	}
}

// testServer upgrades GET /v1/orders/{id}/ws?token=tok-{id} and runs script
// on the connection; any other token gets a 401.
type testServer struct {
	*httptest.Server
	mu      sync.Mutex
	remotes map[string]int // source IP → connections
	events  []string
}

func (ts *testServer) note(e string) {
	ts.mu.Lock()
	ts.events = append(ts.events, e)
	ts.mu.Unlock()
}

func (ts *testServer) count(e string) int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	n := 0
	for _, x := range ts.events {
		if x == e {
			n++
		}
	}
	return n
}

func newTestServer(t *testing.T, script func(id string, s *serverConn, ts *testServer)) *testServer {
	t.Helper()
	ts := &testServer{remotes: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/orders/{id}/ws", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if r.URL.Query().Get("token") != "tok-"+id {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Header.Get("Sec-WebSocket-Version") != "13" {
			http.Error(w, "not a websocket handshake", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		ts.mu.Lock()
		ts.remotes[host]++
		ts.mu.Unlock()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			acceptKey(r.Header.Get("Sec-WebSocket-Key")))
		if err := brw.Flush(); err != nil {
			return
		}
		script(id, &serverConn{c: c, br: brw.Reader}, ts)
	})
	ts.Server = httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

func status(id string, seq int64, at time.Time, reason string) map[string]any {
	return map[string]any{"type": "status", "order_id": id, "status": "reserved", "reason": reason, "seq": seq, "at": at.Format(time.RFC3339Nano)}
}

func writeTargets(t *testing.T, ids ...string) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		tok := "tok-" + id
		if strings.HasPrefix(id, "forged") {
			tok = "nope"
		}
		fmt.Fprintf(&b, "%s %s\n", id, tok)
	}
	path := filepath.Join(t.TempDir(), "targets.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func testConfig(t *testing.T, ts *testServer, ids ...string) config {
	t.Helper()
	targets, err := readTargets(writeTargets(t, ids...))
	if err != nil {
		t.Fatal(err)
	}
	return config{
		URL:     "ws://" + ts.Listener.Addr().String() + "/v1/orders/{id}/ws?token={token}",
		Targets: targets, N: len(ids), Rate: 1000, Inflight: 8, Retries: 1,
		Duration: time.Second, Report: 100 * time.Millisecond, MinSeq: 2,
		BufSize: 256, Timeout: 5 * time.Second,
	}
}

func decodeLines(t *testing.T, out []byte) (progress []Progress, result Result) {
	t.Helper()
	for _, line := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var head struct{ Type string }
		if err := json.Unmarshal(line, &head); err != nil {
			t.Fatalf("output line %q: %v", line, err)
		}
		switch head.Type {
		case "progress":
			var p Progress
			_ = json.Unmarshal(line, &p)
			progress = append(progress, p)
		case "result":
			_ = json.Unmarshal(line, &result)
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
	return progress, result
}

// A connection gets the current state, a ping, then a change that arrives
// 20 ms after its "at", fragmented and longer than 125 bytes; the client
// answers the ping, counts the latency of the change only (-min-seq 2),
// binds the source addresses it was given and ends with a normal close.
func TestHoldsConnectionsAndMeasuresLatency(t *testing.T) {
	ts := newTestServer(t, func(id string, s *serverConn, ts *testServer) {
		if s.text(status(id, 1, time.Now().Add(-time.Hour), "")) != nil {
			return
		}
		if s.writeFrame(true, opPing, []byte("hb")) != nil {
			return
		}
		if op, p, err := s.readFrame(); err != nil || op != opPong || string(p) != "hb" {
			t.Errorf("want pong \"hb\", got op %#x %q %v", op, p, err)
			return
		}
		ts.note("pong")
		b, _ := json.Marshal(status(id, 2, time.Now().Add(-20*time.Millisecond), strings.Repeat("x", 300)))
		if s.writeFrame(false, opText, b[:10]) != nil || s.writeFrame(false, opContinuation, b[10:200]) != nil ||
			s.writeFrame(true, opContinuation, b[200:]) != nil {
			return
		}
		code, err := s.readClose()
		if err == nil {
			ts.note(fmt.Sprintf("close %d", code))
		}
	})
	cfg := testConfig(t, ts, "o1", "o2", "o3", "o4")
	samples := filepath.Join(t.TempDir(), "samples")
	cfg.Samples = samples
	linux := runtime.GOOS == "linux"
	if linux {
		cfg.Sources = []net.IP{net.ParseIP("127.0.0.2"), net.ParseIP("127.0.0.3")}
	}
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	progress, printed := decodeLines(t, out.Bytes())
	if len(progress) < 3 {
		t.Errorf("%d progress lines in a 1s run at 100ms, want several", len(progress))
	}
	if printed.Opened != res.Opened || printed.LatencyCount != res.LatencyCount {
		t.Errorf("printed result %+v differs from returned %+v", printed, res)
	}
	if res.Opened != 4 || res.OpenAtEnd != 4 || res.MaxOpen != 4 || res.Failed != 0 {
		t.Errorf("opened %d, open at end %d, max %d, failed %d; want 4, 4, 4, 0", res.Opened, res.OpenAtEnd, res.MaxOpen, res.Failed)
	}
	if res.StatusMessages != 8 || res.BadMessages != 0 || res.Duplicates != 0 || res.Gaps != 0 {
		t.Errorf("status %d, bad %d, dups %d, gaps %d; want 8, 0, 0, 0", res.StatusMessages, res.BadMessages, res.Duplicates, res.Gaps)
	}
	if res.LatencyCount != 4 || res.Latency.P50 < 20 || res.Latency.Max > 1000 {
		t.Errorf("latency: %d samples, %+v; want 4 samples between 20 ms and 1 s", res.LatencyCount, res.Latency)
	}
	raw, err := os.ReadFile(samples)
	if err != nil || len(strings.Fields(string(raw))) != 4 {
		t.Errorf("samples file: %q, %v; want 4 lines", raw, err)
	}
	// The server sees the close frames a moment after run returns.
	deadline := time.Now().Add(2 * time.Second)
	for ts.count("close 1000") < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if res.Pings != 4 {
		t.Errorf("client counted %d pings, want 4", res.Pings)
	}
	if n, p := ts.count("close 1000"), ts.count("pong"); n != 4 || p != 4 {
		t.Errorf("server saw %d pongs and %d close frames with 1000, want 4 and 4", p, n)
	}
	if linux {
		ts.mu.Lock()
		if ts.remotes["127.0.0.2"] != 2 || ts.remotes["127.0.0.3"] != 2 {
			t.Errorf("connections by source address: %v, want 2 from 127.0.0.2 and 2 from 127.0.0.3", ts.remotes)
		}
		ts.mu.Unlock()
	}
}

// Refused handshakes, server closes, duplicates, gaps and messages about
// another order are all counted, and a refused handshake is not retried.
func TestCountsFailuresClosesAndSequenceErrors(t *testing.T) {
	ts := newTestServer(t, func(id string, s *serverConn, ts *testServer) {
		switch id {
		case "slow": // replays seq 1, skips 3, then is dropped as too slow
			now := time.Now()
			for _, seq := range []int64{1, 2, 2, 4} {
				if s.text(status(id, seq, now, "")) != nil {
					return
				}
			}
			_ = s.close(1013)
			_, _ = s.readClose()
		case "other": // leaks another order's status
			_ = s.text(status("someone-else", 1, time.Now(), ""))
			_ = s.writeFrame(true, opText, []byte("{not json"))
			_, _ = s.readClose()
		case "dropped": // the TCP connection just ends
			_ = s.text(status(id, 1, time.Now(), ""))
		}
	})
	cfg := testConfig(t, ts, "slow", "other", "dropped", "forged")
	cfg.Duration = 500 * time.Millisecond
	var out bytes.Buffer
	res, err := run(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 3 || res.Failed != 1 || res.FailReasons["http_401"] != 1 || len(res.FailReasons) != 1 {
		t.Errorf("opened %d, failed %d, reasons %v; want 3 opened, 1 failed once with http_401", res.Opened, res.Failed, res.FailReasons)
	}
	if res.ClosedByServer["1013"] != 1 || res.ClosedByServer["no_close_frame"] != 1 || res.Dropped != 1 || res.OpenAtEnd != 1 {
		t.Errorf("closed by server %v, dropped %d, open at end %d; want one 1013, one dropped, 1 open", res.ClosedByServer, res.Dropped, res.OpenAtEnd)
	}
	if res.Duplicates != 1 || res.Gaps != 1 || res.BadMessages != 2 {
		t.Errorf("duplicates %d, gaps %d, bad %d; want 1, 1, 2", res.Duplicates, res.Gaps, res.BadMessages)
	}
	if res.LatencyCount != 3 { // seq 2, 2 again and 4 of "slow"
		t.Errorf("latency samples %d, want 3", res.LatencyCount)
	}
}

func TestParseFlags(t *testing.T) {
	targets := writeTargets(t, "a", "b")
	ok := []string{"-url", "ws://127.0.0.1:1/v1/orders/{id}/ws?token={token}", "-targets", targets}
	c, err := parseFlags(append(ok, "-src", "127.0.0.2, 127.0.0.3", "-n", "5"))
	if err != nil || len(c.Targets) != 2 || len(c.Sources) != 2 || c.N != 5 {
		t.Fatalf("parseFlags: %+v, %v", c, err)
	}
	for _, bad := range [][]string{
		{"-targets", targets},
		{"-url", "http://x/", "-targets", targets},
		append(ok, "-duration", "0s"),
		append(ok, "-duration", "2h"),
		append(ok, "-src", "nope"),
		append(ok, "-n", "0"),
		{"-url", "ws://x/", "-targets", filepath.Join(t.TempDir(), "missing")},
	} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("parseFlags(%q) accepted", bad)
		}
	}
}

func TestPercentilesAndRSS(t *testing.T) {
	us := make([]int64, 1000)
	for i := range us {
		us[len(us)-1-i] = int64(i+1) * 1000 // 1..1000 ms, reversed
	}
	p := percentiles(us)
	if p.P50 != 500 || p.P99 != 990 || p.Max != 1000 || p.Mean != 500.5 {
		t.Errorf("percentiles = %+v", p)
	}
	if got := vmRSSKiB([]byte("Name:\tx\nVmRSS:\t  12345 kB\nVmData: 1 kB\n")); got != 12345 {
		t.Errorf("vmRSSKiB = %d", got)
	}
	if runtime.GOOS == "linux" && selfRSSKiB() <= 0 {
		t.Error("selfRSSKiB found no VmRSS")
	}
}
