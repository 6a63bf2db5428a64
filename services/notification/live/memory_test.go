package live_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/notification/live"
)

// The idle-connection memory test runs its clients in a child process (this
// test binary again, with memClientEnv set), so that the server's RSS holds
// only the server's side of each connection.
const memClientEnv = "LIVE_MEMORY_CLIENT_ADDR"

// TestMemoryClient is the child: it opens the connections and holds them
// until its stdin closes. It does nothing in a normal run.
func TestMemoryClient(t *testing.T) {
	addr := os.Getenv(memClientEnv)
	if addr == "" {
		t.Skip("helper process for TestIdleWebSocketMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("LIVE_MEMORY_CLIENT_N"))
	conns := make([]net.Conn, 0, n)
	for i := range n {
		c, _, _, err := ws.Dial(context.Background(), fmt.Sprintf("ws://%s/ws/%d", addr, i))
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		// Answer the server's pings, as a browser does.
		go func() {
			for {
				if _, _, err := wsutil.ReadServerData(c); err != nil {
					return
				}
			}
		}()
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	for _, c := range conns {
		_ = c.Close()
	}
}

// TestIdleWebSocketMemory measures what an idle WebSocket costs the server:
// RSS after GC with N connections open, minus before, over N. The budget is
// 10 KiB per connection (docs/decisions/0008-live-tracking.md);
// LIVE_MEMORY_N changes N (default 2000).
func TestIdleWebSocketMemory(t *testing.T) {
	if os.Getenv(memClientEnv) != "" {
		t.Skip("in the helper process")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; measured in the normal run")
	}
	n := 2000
	if v := os.Getenv("LIVE_MEMORY_N"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	log := slog.New(slog.DiscardHandler)
	// A short heartbeat, so that the measurement includes the pings every
	// idle connection gets (and the clients' pongs).
	hub, err := live.NewHub(live.Options{Store: newMemStore(), Log: log, MaxPerCustomer: n + 1, MaxPerReplica: n + 1, Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r, err := httpx.NewRouter(httpx.RouterOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r.Get("/ws/{i}", func(w http.ResponseWriter, req *http.Request) {
		i := strings.TrimPrefix(req.URL.Path, "/ws/")
		id := fmt.Sprintf("00000000-0000-4000-8000-%012s", i)
		if err := hub.ServeWS(w, req, live.Watch{OrderID: id, Subject: "load", Since: -1}); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
		}
	})
	srv, err := httpx.Serve(context.Background(), "127.0.0.1:0", r, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan error, 1)
	go func() { hubDone <- hub.Run(hubCtx) }()
	t.Cleanup(func() {
		stopHub()
		if err := <-hubDone; err != nil {
			t.Errorf("hub: %v", err)
		}
	})

	// Warm up the server's code paths (first request, otel, pools) so they
	// are not counted as per-connection cost.
	warm(t, srv.Addr())
	before := rss(t, true)

	cmd := exec.Command(os.Args[0], "-test.run=^TestMemoryClient$", "-test.v") //nolint:gosec // this test binary, run again as the client
	cmd.Env = append(os.Environ(), memClientEnv+"="+srv.Addr(), "LIVE_MEMORY_CLIENT_N="+strconv.Itoa(n))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	for lines.Scan() {
		if lines.Text() == "ready" {
			break
		}
	}
	poll.Until(t, 30*time.Second, "every connection to be open", func() bool { return hub.Stats().WebSocket == n })
	time.Sleep(3 * time.Second) // several heartbeats: every connection is pinged a few times
	afterGC := rss(t, false)
	after := rss(t, true)
	perConn := float64(after-before) / float64(n) / 1024
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	t.Logf("%d idle WebSocket connections: RSS %d KiB before, %d KiB after (%.2f KiB per connection; %.2f before the freed pages went back), heap in use %d KiB, stacks %d KiB, goroutines %d",
		n, before/1024, after/1024, perConn, float64(afterGC-before)/float64(n)/1024, ms.HeapInuse>>10, ms.StackInuse>>10, runtime.NumGoroutine())
	if open := hub.Stats().WebSocket; open != n {
		t.Errorf("%d of %d connections still open after the heartbeats; clients that answer pings must stay", open, n)
	}
	if perConn > 10 {
		t.Errorf("an idle WebSocket costs %.2f KiB of RSS, budget 10 KiB", perConn)
	}
}

// warm opens and closes a few connections.
func warm(t *testing.T, addr string) {
	t.Helper()
	for i := range 20 {
		c, _, _, err := ws.Dial(context.Background(), fmt.Sprintf("ws://%s/ws/w%d", addr, i))
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
}

// rss returns the process's resident set size after a full GC and, when
// release is set, after returning the freed pages to the system at once
// (the scavenger does it by itself over a few minutes).
func rss(t *testing.T, release bool) int64 {
	t.Helper()
	runtime.GC()
	if release {
		debug.FreeOSMemory()
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
