package live_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/status"
)

// testHub is a hub behind a real HTTP server: /ws/{order} and
// /events/{order}, with ?since=, ?sub= (Watch.Subject) and ?client=
// (Watch.Client) passed through. A refusal is a 429 whose body is the
// hub's error.
type testHub struct {
	*live.Hub
	url     string
	metrics *sdkmetric.ManualReader
	stop    func()
}

func newTestHub(tb testing.TB, store live.Store, o live.Options) *testHub {
	tb.Helper()
	reader := sdkmetric.NewManualReader()
	o.Store = store
	o.Log = slog.New(slog.DiscardHandler)
	o.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	hub, err := live.NewHub(o)
	if err != nil {
		tb.Fatal(err)
	}
	mux := http.NewServeMux()
	watch := func(r *http.Request) live.Watch {
		q := r.URL.Query()
		w := live.Watch{OrderID: r.PathValue("order"), Subject: q.Get("sub"), Client: q.Get("client"), Since: -1}
		if q.Has("topic") {
			w = live.Watch{Topic: q.Get("topic"), Subject: q.Get("sub"), Client: q.Get("client"), Since: -1}
		}
		if s := r.URL.Query().Get("since"); s != "" {
			w.Since, _ = strconv.ParseInt(s, 10, 64)
		}
		if s := r.Header.Get("Last-Event-ID"); s != "" {
			w.Since, _ = strconv.ParseInt(s, 10, 64)
		}
		return w
	}
	mux.HandleFunc("GET /ws/{order}", func(w http.ResponseWriter, r *http.Request) {
		if err := hub.ServeWS(w, r, watch(r)); err != nil {
			http.Error(w, err.Error(), http.StatusTooManyRequests)
		}
	})
	mux.HandleFunc("GET /events/{order}", func(w http.ResponseWriter, r *http.Request) {
		if err := hub.ServeSSE(w, r, watch(r)); err != nil {
			http.Error(w, err.Error(), http.StatusTooManyRequests)
		}
	})
	srv := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	var once sync.Once
	th := &testHub{Hub: hub, url: srv.URL, metrics: reader}
	th.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				tb.Errorf("hub: %v", err)
			}
			srv.Close()
		})
	}
	tb.Cleanup(th.stop)
	return th
}

// counter returns the sum of a counter's data points.
func (h *testHub) counter(tb testing.TB, name string) int64 {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	if err := h.metrics.Collect(context.Background(), &rm); err != nil {
		tb.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range s.DataPoints {
					n += p.Value
				}
			}
		}
	}
	return n
}

func (h *testHub) wsURL(order, query string) string {
	return "ws" + strings.TrimPrefix(h.url, "http") + "/ws/" + order + "?" + query
}

// msg is a status message as clients decode it.
type msg struct {
	Type    string  `json:"type"`
	OrderID string  `json:"order_id"`
	Status  string  `json:"status"`
	Reason  *string `json:"reason"`
	Seq     int64   `json:"seq"`
	At      string  `json:"at"`
}

// dial opens a WebSocket with coder/websocket, an independent client.
func dial(tb testing.TB, url string) *websocket.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		tb.Fatalf("dial %s: %v (response %v)", url, err, resp)
	}
	tb.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// readAll reads messages until the server closes the connection, and
// returns them with the close code.
func readAll(tb testing.TB, c *websocket.Conn, d time.Duration) ([]msg, websocket.StatusCode) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []msg
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 {
				tb.Fatalf("read after %d messages: %v", len(out), err)
			}
			return out, code
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			tb.Fatalf("message %s: %v", b, err)
		}
		out = append(out, m)
	}
}

// readN reads n messages.
func readN(tb testing.TB, c *websocket.Conn, n int) []msg {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := make([]msg, 0, n)
	for len(out) < n {
		_, b, err := c.Read(ctx)
		if err != nil {
			tb.Fatalf("read message %d: %v", len(out)+1, err)
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			tb.Fatalf("message %s: %v", b, err)
		}
		out = append(out, m)
	}
	return out
}

func seqs(ms []msg) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

const orderA = "0190a6b4-0000-7000-8000-00000000000a"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func change(order string, seq int64, st string) status.Change {
	c := status.Change{OrderID: order, CustomerID: "alice", Status: st, Seq: seq, At: t0.Add(time.Duration(seq) * time.Second)}
	if st == "cancelled" {
		c.Reason = "out_of_stock"
	}
	return c
}

func TestWebSocketSendsCurrentStatusThenChangesThenClosesNormally(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	store.add(change(orderA, 2, "reserved"))
	h := newTestHub(t, store, live.Options{})

	late := dial(t, h.wsURL(orderA, ""))
	replay := dial(t, h.wsURL(orderA, "since=0"))
	// Each has its snapshot before anything changes.
	lateGot := readN(t, late, 1)
	replayGot := readN(t, replay, 2)
	// A stale copy (seq 2 again) must not reach anyone twice.
	for _, c := range []status.Change{change(orderA, 2, "reserved"), change(orderA, 3, "confirmed"), change(orderA, 4, "cancelled")} {
		store.add(c)
		h.Publish(c)
	}
	rest, code := readAll(t, late, 10*time.Second)
	got := append(lateGot, rest...)
	if want := []int64{2, 3, 4}; fmt.Sprint(seqs(got)) != fmt.Sprint(want) || code != websocket.StatusNormalClosure {
		t.Errorf("late client got seqs %v and close %v, want %v then 1000", seqs(got), code, want)
	}
	if len(got) > 0 {
		first := got[0]
		if first.Type != "status" || first.OrderID != orderA || first.Status != "reserved" || first.Reason != nil || first.At != "2026-03-01T12:00:02Z" {
			t.Errorf("first message = %+v", first)
		}
		if last := got[len(got)-1]; last.Status != "cancelled" || last.Reason == nil || *last.Reason != "out_of_stock" {
			t.Errorf("last message = %+v", last)
		}
	}
	rest, code = readAll(t, replay, 10*time.Second)
	got = append(replayGot, rest...)
	if want := []int64{1, 2, 3, 4}; fmt.Sprint(seqs(got)) != fmt.Sprint(want) || code != websocket.StatusNormalClosure {
		t.Errorf("since=0 client got seqs %v and close %v, want %v then 1000", seqs(got), code, want)
	}
	poll.Until(t, 5*time.Second, "the connections to be released", func() bool { return h.Stats().WebSocket == 0 })
	if n := h.counter(t, "notification.messages.sent"); n != 7 {
		t.Errorf("messages sent = %d, want 7", n)
	}

	// A client of a finished order gets its last status and the close.
	done := dial(t, h.wsURL(orderA, ""))
	if got, code := readAll(t, done, 5*time.Second); len(got) != 1 || got[0].Seq != 4 || code != websocket.StatusNormalClosure {
		t.Errorf("client of a finished order got %v, close %v", seqs(got), code)
	}
	poll.Until(t, 5*time.Second, "the open connections gauge to read 0", func() bool {
		return h.counter(t, "notification.connections.open") == 0
	})
}

func TestWebSocketFillsAGapFromTheStore(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, live.Options{})
	c := dial(t, h.wsURL(orderA, ""))
	// The snapshot (seq 1) is out first: being subscribed is not enough,
	// the snapshot is read after that.
	first := readN(t, c, 1)
	// Seq 2 was stored while this replica heard nothing of it (its
	// listener was reconnecting); it hears of seq 3 only.
	store.add(change(orderA, 2, "reserved"))
	store.add(change(orderA, 3, "cancelled"))
	h.Publish(change(orderA, 3, "cancelled"))
	rest, code := readAll(t, c, 10*time.Second)
	if got := append(first, rest...); fmt.Sprint(seqs(got)) != "[1 2 3]" || code != websocket.StatusNormalClosure {
		t.Errorf("got seqs %v, close %v; want [1 2 3], 1000", seqs(got), code)
	}
}

// TestWebSocketWaitsForAStatusNotStoredYet: seq 2's write failed and is
// being retried while seq 3 is stored and published. The connection must
// not send 3 before 2 (it would never send 2 afterwards): it waits until 2
// is stored — for a live change and for a since snapshot alike.
func TestWebSocketWaitsForAStatusNotStoredYet(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, live.Options{})
	early := dial(t, h.wsURL(orderA, ""))
	// The early client's snapshot (seq 1) is out before seq 3 is stored:
	// being subscribed is not enough, the snapshot is read after that.
	earlyFirst := readN(t, early, 1)
	store.add(change(orderA, 3, "cancelled"))
	h.Publish(change(orderA, 3, "cancelled"))
	replay := dial(t, h.wsURL(orderA, "since=0"))

	time.Sleep(600 * time.Millisecond) // the retry that stores seq 2 comes later
	store.add(change(orderA, 2, "reserved"))
	h.Publish(change(orderA, 2, "reserved"))
	for name, c := range map[string]*websocket.Conn{"early": early, "since=0": replay} {
		got, code := readAll(t, c, 10*time.Second)
		if c == early {
			got = append(earlyFirst, got...)
		}
		if fmt.Sprint(seqs(got)) != "[1 2 3]" || code != websocket.StatusNormalClosure {
			t.Errorf("%s client got seqs %v, close %v; want [1 2 3], 1000", name, seqs(got), code)
		}
	}
}

// gapWhileDown opens a WebSocket on orderA and reads seq 1; then seqs 2
// and 3 are stored, and 3 is published while the store cannot be read (the
// database restarting): the gap before 3 has to be read from a store that
// is down. It returns the store, the hub, the connection and what it read.
func gapWhileDown(t *testing.T, o live.Options) (*memStore, *testHub, *websocket.Conn, []msg) {
	t.Helper()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, o)
	c := dial(t, h.wsURL(orderA, ""))
	first := readN(t, c, 1)
	store.add(change(orderA, 2, "reserved"))
	store.add(change(orderA, 3, "cancelled"))
	store.setDown(true)
	h.Publish(change(orderA, 3, "cancelled"))
	return store, h, c, first
}

// TestWebSocketWaitsOutADatabaseRestart: seq 3 is published while the
// statuses before it cannot be read (the database restarting). The
// connection must not send 3 over the gap: it reads again until the
// database answers, then sends 2 and 3.
func TestWebSocketWaitsOutADatabaseRestart(t *testing.T) {
	t.Parallel()
	store, _, c, first := gapWhileDown(t, live.Options{})
	time.Sleep(600 * time.Millisecond) // the restart
	store.setDown(false)
	rest, code := readAll(t, c, 10*time.Second)
	if got := append(first, rest...); fmt.Sprint(seqs(got)) != "[1 2 3]" || code != websocket.StatusNormalClosure {
		t.Errorf("got seqs %v, close %v; want [1 2 3], 1000", seqs(got), code)
	}
}

// TestWebSocketResumesWhenTheGapCannotBeRead: the database stays down
// past GapWait. Rather than send seq 3 over the gap, the connection closes
// with 1013, and the client's resume with since reads every status once
// the database is back.
func TestWebSocketResumesWhenTheGapCannotBeRead(t *testing.T) {
	t.Parallel()
	store, h, c, first := gapWhileDown(t, live.Options{GapWait: 300 * time.Millisecond})
	rest, code := readAll(t, c, 10*time.Second)
	if got := append(first, rest...); fmt.Sprint(seqs(got)) != "[1]" || code != websocket.StatusTryAgainLater {
		t.Fatalf("got seqs %v, close %v; want [1], 1013", seqs(got), code)
	}
	store.setDown(false)
	resumed := dial(t, h.wsURL(orderA, "since=1"))
	got, code := readAll(t, resumed, 10*time.Second)
	if fmt.Sprint(seqs(got)) != "[2 3]" || code != websocket.StatusNormalClosure {
		t.Errorf("resumed with since=1: got seqs %v, close %v; want [2 3], 1000", seqs(got), code)
	}
}

// TestWebSocketGivesUpWaitingAfterGapWait: a status that never comes holds
// the later ones back for GapWait only.
func TestWebSocketGivesUpWaitingAfterGapWait(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, live.Options{GapWait: 300 * time.Millisecond})
	c := dial(t, h.wsURL(orderA, ""))
	// The snapshot (seq 1) is out before seq 3 is stored: being
	// subscribed is not enough, the snapshot is read after that.
	first := readN(t, c, 1)
	store.add(change(orderA, 3, "cancelled"))
	h.Publish(change(orderA, 3, "cancelled"))
	rest, code := readAll(t, c, 10*time.Second)
	if got := append(first, rest...); fmt.Sprint(seqs(got)) != "[1 3]" || code != websocket.StatusNormalClosure {
		t.Errorf("got seqs %v, close %v; want [1 3], 1000", seqs(got), code)
	}
}

// TestSubscribeBeforeSnapshot connects clients while changes are being
// stored and published, the way the consumer does (store, commit, then
// Publish): every client must see each seq from its first one on exactly
// once and in order, and a since=0 client every seq.
func TestSubscribeBeforeSnapshot(t *testing.T) {
	t.Parallel()
	for round := range 5 {
		store := newMemStore()
		h := newTestHub(t, store, live.Options{MaxPerOrder: 100, SendQueue: 1000})
		order := fmt.Sprintf("0190a6b4-0000-7000-8000-%012d", round)
		const n = 200
		var wg sync.WaitGroup
		results := make(chan []msg, 40)
		for i := range 40 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 300 * time.Microsecond) // spread the connects over the publishing
				q := ""
				if i%2 == 0 {
					q = "since=0"
				}
				c := dial(t, h.wsURL(order, q))
				got, code := readAll(t, c, 20*time.Second)
				if code != websocket.StatusNormalClosure {
					t.Errorf("client %d: close %v", i, code)
				}
				if i%2 == 0 && (len(got) != n || got[0].Seq != 1) {
					t.Errorf("since=0 client %d got %d messages from seq %v, want all %d", i, len(got), seqs(got[:min(1, len(got))]), n)
				}
				results <- got
			})
		}
		for seq := int64(1); seq <= n; seq++ {
			st := "confirmed"
			if seq == n {
				st = "delivered"
			}
			c := change(order, seq, st)
			store.add(c)
			h.Publish(c)
			if seq%20 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		wg.Wait()
		close(results)
		for got := range results {
			for i := 1; i < len(got); i++ {
				if got[i].Seq != got[i-1].Seq+1 {
					t.Fatalf("round %d: a client got seq %d after %d (gap or duplicate)", round, got[i].Seq, got[i-1].Seq)
				}
			}
			if len(got) == 0 || got[len(got)-1].Seq != n {
				t.Fatalf("round %d: a client did not get the final seq: %v", round, seqs(got))
			}
		}
	}
}

func TestWebSocketAnswersCloseAndPingAndIsPingedWhenIdle(t *testing.T) {
	t.Parallel()
	h := newTestHub(t, newMemStore(), live.Options{Heartbeat: 300 * time.Millisecond})
	// gobwas as the client, to see control frames.
	conn, _, _, err := ws.Dial(context.Background(), h.wsURL(orderA, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := wsutil.WriteClientMessage(conn, ws.OpPing, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	var gotPong, gotPing bool
	for !gotPong || !gotPing {
		frame, err := readFrame(conn)
		if err != nil {
			t.Fatalf("read: %v (pong %v, ping %v)", err, gotPong, gotPing)
		}
		switch frame.Header.OpCode {
		case ws.OpPong:
			gotPong = string(frame.Payload) == "hi"
		case ws.OpPing:
			gotPing = true
			if err := wsutil.WriteClientMessage(conn, ws.OpPong, frame.Payload); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusGoingAway, "bye")); err != nil {
		t.Fatal(err)
	}
	for {
		frame, err := readFrame(conn)
		if err != nil {
			t.Fatalf("no close answer: %v", err)
		}
		if frame.Header.OpCode == ws.OpClose {
			if code, _ := ws.ParseCloseFrameData(frame.Payload); code != ws.StatusGoingAway {
				t.Errorf("close answer code %d, want the client's 1001", code)
			}
			break
		}
	}
	poll.Until(t, 5*time.Second, "the connection to be released", func() bool { return h.Stats().WebSocket == 0 })
}

func TestWebSocketClientThatStopsAnsweringIsDropped(t *testing.T) {
	t.Parallel()
	h := newTestHub(t, newMemStore(), live.Options{Heartbeat: 100 * time.Millisecond})
	conn, _, _, err := ws.Dial(context.Background(), h.wsURL(orderA, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	poll.Until(t, 5*time.Second, "subscribed", func() bool { return h.Stats().WebSocket == 1 })
	// Never read, never answer a ping.
	poll.Until(t, 5*time.Second, "the silent client to be dropped", func() bool { return h.Stats().WebSocket == 0 })
}

func TestShutdownClosesWebSocketsWith1012AndEndsEventStreams(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.add(change(orderA, 1, "pending"))
	h := newTestHub(t, store, live.Options{})
	c := dial(t, h.wsURL(orderA, ""))
	resp, err := http.Get(h.url + "/events/" + orderA)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Both have their snapshot before the shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"seq":1`) {
		t.Fatalf("websocket snapshot: %s, %v", b, err)
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "id: 1") {
			break
		}
	}
	h.Shutdown()
	if got, code := readAll(t, c, 5*time.Second); len(got) != 0 || code != websocket.StatusCode(1012) {
		t.Errorf("websocket got %v then close %v, want nothing more then 1012", seqs(got), code)
	}
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for sc.Scan() {
		}
	}()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("event stream did not end")
		_ = resp.Body.Close()
	}
	poll.Until(t, 5*time.Second, "both released", func() bool { s := h.Stats(); return s.WebSocket+s.SSE == 0 })
	if _, resp, err := websocket.Dial(context.Background(), h.wsURL(orderA, ""), nil); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests { //nolint:bodyclose // coder/websocket closes it
		t.Errorf("a connection after shutdown was not refused: %v", err)
	}
}

// readSSE reads the stream until it ends, within d.
func readSSE(resp *http.Response, d time.Duration) (string, error) {
	done := make(chan struct{})
	var b strings.Builder
	var err error
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
		}
		err = sc.Err()
	}()
	select {
	case <-done:
		return b.String(), err
	case <-time.After(d):
		_ = resp.Body.Close()
		<-done
		return b.String(), errors.New("timed out")
	}
}

func TestEventStreamResumesFromLastEventID(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	for seq, st := range []string{"pending", "reserved", "confirmed"} {
		store.add(change(orderA, int64(seq+1), st))
	}
	h := newTestHub(t, store, live.Options{SSEHeartbeat: 50 * time.Millisecond})
	req, _ := http.NewRequest(http.MethodGet, h.url+"/events/"+orderA, nil)
	req.Header.Set("Last-Event-ID", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	poll.Until(t, 5*time.Second, "subscribed", func() bool { return h.Stats().SSE == 1 })
	time.Sleep(120 * time.Millisecond) // lets at least one keep-alive go out
	end := change(orderA, 4, "delivered")
	store.add(end)
	h.Publish(end)
	body, err := readSSE(resp, 5*time.Second)
	if err != nil {
		t.Fatalf("stream did not end after delivered: %v\n%s", err, body)
	}
	if !strings.HasPrefix(body, "retry: 2000\n\n") {
		t.Errorf("stream does not start with retry: %q", body)
	}
	var ids []string
	for line := range strings.SplitSeq(body, "\n") {
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, id)
		}
	}
	if fmt.Sprint(ids) != "[2 3 4]" {
		t.Errorf("event ids = %v, want [2 3 4]\n%s", ids, body)
	}
	if !strings.Contains(body, ": keep-alive\n") {
		t.Errorf("no keep-alive comment in %q", body)
	}
	if !strings.Contains(body, `data: {"type":"status","order_id":"`+orderA+`","status":"delivered","reason":null,"seq":4,`) {
		t.Errorf("no delivered event in %q", body)
	}
}

// TestOrdersListsTheWatchedOrders: Orders names each order with a
// connection once, and forgets it when its last connection is gone.
func TestOrdersListsTheWatchedOrders(t *testing.T) {
	t.Parallel()
	h := newTestHub(t, newMemStore(), live.Options{})
	other := "0190a6b4-0000-7000-8000-00000000000b"
	a1, a2, b := dial(t, h.wsURL(orderA, "")), dial(t, h.wsURL(orderA, "")), dial(t, h.wsURL(other, ""))
	poll.Until(t, 5*time.Second, "three connections", func() bool { return h.Stats().WebSocket == 3 })
	got := h.Orders()
	slices.Sort(got)
	if want := []string{orderA, other}; !slices.Equal(got, want) {
		t.Errorf("Orders() = %v, want %v", got, want)
	}
	for _, c := range []*websocket.Conn{a1, a2, b} {
		_ = c.Close(websocket.StatusNormalClosure, "")
	}
	poll.Until(t, 5*time.Second, "no order watched", func() bool { return len(h.Orders()) == 0 })
}

// TestSlowClientIsClosedWith1013 has a client with a tiny receive buffer
// that does not read while changes pour in: once its queue overflows the
// server asks to close with 1013, and when the client reads again it finds
// its backlog and then that close; the connection is released.
func TestSlowClientIsClosedWith1013(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	h := newTestHub(t, store, live.Options{SendQueue: 8, WriteTimeout: 5 * time.Second})
	d := ws.Dialer{NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
			})
			return errors.Join(err, serr)
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	conn, br, _, err := d.Dial(context.Background(), h.wsURL(orderA, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if br != nil {
		ws.PutReader(br)
	}
	poll.Until(t, 5*time.Second, "subscribed", func() bool { return h.Stats().WebSocket == 1 })
	for seq := int64(1); h.counter(t, "notification.send_queue.drops") == 0; seq++ {
		if seq > 200000 {
			t.Fatal("the queue never overflowed")
		}
		h.Publish(change(orderA, seq, "confirmed"))
	}
	// Now read: the backlog, then the close.
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var code ws.StatusCode
	for n := 0; ; n++ {
		frame, err := readFrame(conn)
		if err != nil {
			t.Fatalf("after %d frames: %v", n, err)
		}
		if frame.Header.OpCode == ws.OpClose {
			code, _ = ws.ParseCloseFrameData(frame.Payload)
			break
		}
	}
	if code != 1013 {
		t.Errorf("close code %d, want 1013", code)
	}
	poll.Until(t, 10*time.Second, "the connection to be released", func() bool { return h.Stats().WebSocket == 0 })
}

// readFrame reads one server frame (unmasked, at most 64 KiB).
func readFrame(r io.Reader) (ws.Frame, error) {
	h, err := ws.ReadHeader(r)
	if err != nil {
		return ws.Frame{}, err
	}
	if h.Length > 64<<10 {
		return ws.Frame{}, fmt.Errorf("frame of %d bytes", h.Length)
	}
	f := ws.Frame{Header: h, Payload: make([]byte, h.Length)}
	_, err = io.ReadFull(r, f.Payload)
	return f, err
}

// TestSlowEventStreamIsEnded: the same for Server-Sent Events, which have
// no close code: the stream ends, and the client resumes with
// Last-Event-ID.
func TestSlowEventStreamIsEnded(t *testing.T) {
	t.Parallel()
	h := newTestHub(t, newMemStore(), live.Options{SendQueue: 8, WriteTimeout: 5 * time.Second})
	nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		})
		return errors.Join(err, serr)
	}}
	conn, err := nd.Dial("tcp", strings.TrimPrefix(h.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /events/%s HTTP/1.1\r\nHost: test\r\n\r\n", orderA); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 5*time.Second, "subscribed", func() bool { return h.Stats().SSE == 1 })
	for seq := int64(1); h.counter(t, "notification.send_queue.drops") == 0; seq++ {
		if seq > 200000 {
			t.Fatal("the queue never overflowed")
		}
		h.Publish(change(orderA, seq, "confirmed"))
	}
	// Reading again, the client finds its backlog and then the end of the
	// chunked response.
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b []byte
	buf := make([]byte, 64<<10)
	for !strings.HasSuffix(string(b), "\r\n0\r\n\r\n") {
		n, err := conn.Read(buf)
		b = append(b, buf[:n]...)
		if err != nil {
			t.Fatalf("the stream did not end with the last chunk (%v): ...%q", err, b[max(0, len(b)-80):])
		}
	}
	poll.Until(t, 10*time.Second, "the stream to be released", func() bool { return h.Stats().SSE == 0 })
}
