// Package live checks live order tracking end to end: orders placed through
// the real order, inventory and payment binaries, watched over WebSocket
// and Server-Sent Events on the real notification binary (one or two
// replicas on the same database and vhost), with the real PostgreSQL and
// RabbitMQ behind them. It covers the SPEC's live tracking contract: the
// current state first, then every change once and in order, a normal close
// after a terminal status, resuming with since or Last-Event-ID (on any
// replica, also after one was killed), refusals before the upgrade, and a
// too-slow client cut off with 1013.
package live

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// msg is a status message as a client decodes it.
type msg struct {
	Type    string  `json:"type"`
	OrderID string  `json:"order_id"`
	Status  string  `json:"status"`
	Reason  *string `json:"reason"`
	Seq     int64   `json:"seq"`
	At      string  `json:"at"`
}

// watcher is one WebSocket client, reading in the background.
type watcher struct {
	mu   sync.Mutex
	msgs []msg
	code websocket.StatusCode // close code, or -1 for a connection that broke
	err  error
	done chan struct{}
}

// watch connects to base's WebSocket for order with a tracking token (in
// ?token=, as the tracking page does) and query.
func watch(tb testing.TB, base, order, token, query string) *watcher {
	tb.Helper()
	return dialWatcher(tb, base, order, "token="+token, query, nil)
}

// watchAs connects to base's WebSocket for order with a bearer JWT (in the
// Authorization header, the only place a JWT is taken) and query.
func watchAs(tb testing.TB, base, order, jwt, query string) *watcher {
	tb.Helper()
	return dialWatcher(tb, base, order, "", query, http.Header{"Authorization": {"Bearer " + jwt}})
}

func dialWatcher(tb testing.TB, base, order, token, query string, header http.Header) *watcher {
	tb.Helper()
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/orders/" + order + "/ws"
	if q := strings.Trim(token+"&"+query, "&"); q != "" {
		url += "?" + q
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header}) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		tb.Fatalf("dial %s: %v (%v)", base, err, resp)
	}
	w := &watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer func() { _ = c.CloseNow() }()
		for {
			_, b, err := c.Read(context.Background())
			w.mu.Lock()
			if err != nil {
				w.code, w.err = websocket.CloseStatus(err), err
				w.mu.Unlock()
				return
			}
			var m msg
			if err := json.Unmarshal(b, &m); err != nil {
				w.err = fmt.Errorf("message %s: %w", b, err)
			}
			w.msgs = append(w.msgs, m)
			w.mu.Unlock()
		}
	}()
	tb.Cleanup(func() { _ = c.CloseNow(); <-w.done })
	return w
}

func (w *watcher) got() []msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]msg(nil), w.msgs...)
}

// waitSeq waits until the watcher has received seq.
func (w *watcher) waitSeq(tb testing.TB, seq int64) {
	tb.Helper()
	poll.UntilNil(tb, 60*time.Second, fmt.Sprintf("seq %d on the socket", seq), func() error {
		got := w.got()
		if len(got) > 0 && got[len(got)-1].Seq >= seq {
			return nil
		}
		select {
		case <-w.done:
			tb.Fatalf("connection ended (%v) after %s", w.err, trail(got))
		default:
		}
		return fmt.Errorf("so far %s", trail(got))
	})
}

// end waits for the connection to end and returns its close code.
func (w *watcher) end(tb testing.TB) websocket.StatusCode {
	tb.Helper()
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		tb.Fatalf("connection still open; got %s", trail(w.got()))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.code
}

func trail(ms []msg) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = fmt.Sprintf("%d:%s", m.Seq, m.Status)
	}
	return "[" + strings.Join(parts, " ") + "]"
}

const lifecycle = "[1:pending 2:reserved 3:confirmed 4:shipped 5:delivered]"

// replica is a notification process started by a test, beside the stack's.
type replica struct {
	p   *stack.Process
	url string
}

// startReplica runs another notification binary, called name in the
// test's messages, on the stack's database and vhost, with env added, and
// waits until it is ready.
func startReplica(tb testing.TB, s *stack.Stack, name string, env ...string) *replica {
	tb.Helper()
	p := stack.StartProcess(tb, stack.Binary(tb, "notification"), append([]string{
		"ORDERLY_ENV=development", "DATABASE_URL=" + s.Notification.DBURL, "AMQP_URL=" + s.AMQPURL, "HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + string(s.Secret), "TRACKING_SECRET=" + string(s.TrackingSecret),
		"SHUTDOWN_TIMEOUT=10s", "SHUTDOWN_DELAY=0s",
		"RATE_LIMIT_RPS=10000",
	}, env...)...)
	r := &replica{p: p, url: "http://" + p.Addr(tb)}
	tb.Cleanup(func() {
		if p.Running() {
			p.Signal(tb, syscall.SIGTERM)
			if code := p.Exit(tb, 20*time.Second); code != 0 {
				tb.Errorf("replica %s exited with %d\n%s", name, code, p.Stderr.String())
			}
		}
	})
	poll.Ready(tb, time.Minute, r.url, nil)
	return r
}

// metric returns the sum of a metric's samples on base's /metrics whose
// labels contain every one of labels ("" for any).
func metric(tb testing.TB, base, name, labels string) float64 {
	tb.Helper()
	resp, err := http.Get(base + "/metrics") // local
	if err != nil {
		tb.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if labels != "" && !strings.Contains(line, labels) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// env is one stack for the whole package: starting four binaries is the
// slow part, and each test uses orders of its own.
type env struct {
	s     *stack.Stack
	sku   string
	admin string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := stack.New(t, stack.Options{Notification: true})
	sku := "LIVE-" + strings.ToUpper(stack.NewUUID()[:8])
	s.Seed(t, stack.Product{SKU: sku, PriceCents: 1000, Stock: 1000})
	return &env{s: s, sku: sku, admin: s.AdminToken(t)}
}

// place places an order of one unit for a new customer.
func (e *env) place(t *testing.T) (stack.Order, string) {
	t.Helper()
	_, token := e.s.NewCustomer(t)
	return e.s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: e.sku, Quantity: 1}}, PaymentMethod: "pm_card_ok"}), token
}

// admin calls the admin's ship or deliver on order.
func (e *env) adminAction(t *testing.T, order, action string) {
	t.Helper()
	r := e.s.Do(t, http.MethodPost, e.s.Order.URL(), "/v1/orders/"+order+"/"+action, e.admin, nil)
	if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
		t.Fatalf("%s %s = %s", action, order, r)
	}
}

func TestLiveTracking(t *testing.T) {
	e := newEnv(t)
	notif := e.s.Notification.URL()

	t.Run("early, late and resuming clients", func(t *testing.T) {
		o, customerToken := e.place(t)
		// Early: from the start (since=0), by tracking token at once, by
		// JWT as soon as the service knows whose order it is.
		early := watch(t, notif, o.ID, o.TrackingToken, "since=0")
		early.waitSeq(t, 1)
		byJWT := watchAs(t, notif, o.ID, customerToken, "since=0")
		early.waitSeq(t, 3) // confirmed
		// Late: connects after confirmed, wants the current state first.
		late := watch(t, notif, o.ID, o.TrackingToken, "")
		late.waitSeq(t, 3)
		e.adminAction(t, o.ID, "ship")
		early.waitSeq(t, 4)
		e.adminAction(t, o.ID, "deliver")

		for name, w := range map[string]*watcher{"early": early, "jwt": byJWT} {
			if code := w.end(t); code != websocket.StatusNormalClosure {
				t.Errorf("%s client: close %v (%v), want 1000", name, code, w.err)
			}
			if got := trail(w.got()); got != lifecycle {
				t.Errorf("%s client got %s, want %s", name, got, lifecycle)
			}
		}
		if code := late.end(t); code != websocket.StatusNormalClosure {
			t.Errorf("late client: close %v, want 1000", code)
		}
		if got := trail(late.got()); got != "[3:confirmed 4:shipped 5:delivered]" {
			t.Errorf("late client got %s, want the current state (confirmed) then the rest", got)
		}
		if m := early.got()[0]; m.Type != "status" || m.OrderID != o.ID || m.Reason != nil {
			t.Errorf("first message %+v", m)
		} else if _, err := time.Parse(time.RFC3339Nano, m.At); err != nil {
			t.Errorf("at %q is not RFC 3339", m.At)
		}

		// Resuming after the end: since replays exactly what was missed,
		// over WebSocket and as Server-Sent Events.
		resumed := watch(t, notif, o.ID, o.TrackingToken, "since=2")
		if code := resumed.end(t); code != websocket.StatusNormalClosure || trail(resumed.got()) != "[3:confirmed 4:shipped 5:delivered]" {
			t.Errorf("since=2 got %s, close %v", trail(resumed.got()), code)
		}
		ids, body := sse(t, notif, o.ID, o.TrackingToken, "", "3")
		if ids != "[4 5]" {
			t.Errorf("Last-Event-ID: 3 replayed ids %s, want [4 5]\n%s", ids, body)
		}
		ids, _ = sse(t, notif, o.ID, o.TrackingToken, "since=0", "")
		if ids != "[1 2 3 4 5]" {
			t.Errorf("SSE since=0 ids %s", ids)
		}
	})

	t.Run("a cancelled order", func(t *testing.T) {
		_, token := e.s.NewCustomer(t)
		o := e.s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: e.sku, Quantity: 1}}, PaymentMethod: "pm_card_declined"})
		w := watch(t, notif, o.ID, o.TrackingToken, "since=0")
		if code := w.end(t); code != websocket.StatusNormalClosure {
			t.Errorf("close %v, want 1000", code)
		}
		got := w.got()
		last := got[len(got)-1]
		if trail(got) != "[1:pending 2:reserved 3:cancelled]" || last.Reason == nil || *last.Reason != "payment_declined" {
			t.Errorf("got %s (last %+v), want pending, reserved, cancelled/payment_declined", trail(got), last)
		}
	})

	t.Run("two replicas both see every change; one killed, the client resumes on the other", func(t *testing.T) {
		second := startReplica(t, e.s, "second")
		o, _ := e.place(t)
		a := watch(t, notif, o.ID, o.TrackingToken, "since=0")
		b := watch(t, second.url, o.ID, o.TrackingToken, "since=0")
		a.waitSeq(t, 3)
		b.waitSeq(t, 3)
		e.adminAction(t, o.ID, "ship")
		e.adminAction(t, o.ID, "deliver")
		for name, w := range map[string]*watcher{"first replica": a, "second replica": b} {
			if code := w.end(t); code != websocket.StatusNormalClosure || trail(w.got()) != lifecycle {
				t.Errorf("%s: got %s, close %v", name, trail(w.got()), code)
			}
		}

		// Mid-stream, the replica dies without a word.
		o2, _ := e.place(t)
		c := watch(t, second.url, o2.ID, o2.TrackingToken, "since=0")
		c.waitSeq(t, 3)
		second.p.Signal(t, syscall.SIGKILL)
		second.p.Exit(t, 10*time.Second)
		if code := c.end(t); code == websocket.StatusNormalClosure {
			t.Fatalf("a killed replica closed normally")
		}
		before := c.got()
		e.adminAction(t, o2.ID, "ship") // happens while the client is away
		last := before[len(before)-1].Seq
		again := watch(t, notif, o2.ID, o2.TrackingToken, "since="+strconv.FormatInt(last, 10))
		again.waitSeq(t, 4)
		e.adminAction(t, o2.ID, "deliver")
		if code := again.end(t); code != websocket.StatusNormalClosure {
			t.Errorf("resumed client: close %v", code)
		}
		if got := trail(append(before, again.got()...)); got != lifecycle {
			t.Errorf("across the crash the client got %s, want %s", got, lifecycle)
		}
	})

	t.Run("refused before the upgrade", func(t *testing.T) {
		o, ownerToken := e.place(t)
		other, _ := e.place(t)
		_, strangerToken := e.s.NewCustomer(t)
		poll.UntilNil(t, 30*time.Second, "the notification service to know the order", func() error {
			return expectStatus(t, notif, o.ID, "Bearer "+e.admin, "", http.StatusSwitchingProtocols)
		})
		cases := []struct {
			name, auth, origin string
			want               int
		}{
			{"no token", "", "", http.StatusUnauthorized},
			{"the owner's JWT in ?token=", "?token=" + ownerToken, "", http.StatusUnauthorized},
			{"an admin's JWT in ?token=", "?token=" + e.admin, "", http.StatusUnauthorized},
			{"the tracking token in ?token=", "?token=" + o.TrackingToken, "", http.StatusSwitchingProtocols},
			{"someone else's JWT", "Bearer " + strangerToken, "", http.StatusNotFound},
			{"another order's tracking token", "Bearer " + other.TrackingToken, "", http.StatusUnauthorized},
			{"a forged tracking token", "Bearer " + strings.Repeat("A", 43), "", http.StatusUnauthorized},
			{"bad origin", "Bearer " + o.TrackingToken, "https://evil.example", http.StatusForbidden},
		}
		for _, c := range cases {
			if err := expectStatus(t, notif, o.ID, c.auth, c.origin, c.want); err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
		}
		if err := expectStatus(t, notif, o.ID, "Bearer "+o.TrackingToken, "http://localhost:8083", http.StatusSwitchingProtocols); err != nil {
			t.Errorf("allowed origin: %v", err)
		}
	})

	t.Run("a client too slow is cut off with 1013 and released", func(t *testing.T) {
		slow := startReplica(t, e.s, "slow", "NOTIFICATION_SEND_QUEUE=4", "NOTIFICATION_WRITE_TIMEOUT=20s")
		order := stack.NewUUID() // an order made up here; its changes are published directly
		conn := dialTinyBuffer(t, slow.url, order, e.s.TrackingToken(order))
		defer conn.Close()
		poll.UntilNil(t, 10*time.Second, "the connection to count", func() error {
			if n := metric(t, slow.url, "notification_connections_open", `transport="websocket"`); n != 1 {
				return fmt.Errorf("%v open", n)
			}
			return nil
		})
		published := publishUntil(t, e.s, order, func() bool {
			return metric(t, slow.url, "notification_send_queue_drops_total", "") >= 1
		})
		t.Logf("the send queue overflowed after %d published changes", published)
		// The client reads again: its backlog, then the close.
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
		var code ws.StatusCode
		frames := 0
		for {
			f, err := readFrame(conn)
			if err != nil {
				t.Fatalf("after %d frames: %v", frames, err)
			}
			if f.Header.OpCode == ws.OpClose {
				code, _ = ws.ParseCloseFrameData(f.Payload)
				break
			}
			frames++
		}
		if code != 1013 {
			t.Errorf("close code %d after %d frames, want 1013", code, frames)
		}
		poll.UntilNil(t, 30*time.Second, "the slow connection to be released", func() error {
			if n := metric(t, slow.url, "notification_connections_open", `transport="websocket"`); n != 0 {
				return fmt.Errorf("%v open", n)
			}
			return nil
		})
	})
}

// expectStatus makes a WebSocket handshake with auth and origin (either
// may be "") and checks the status; a refusal must be a problem document
// and no upgrade. An auth starting with "?" is the query (?token=…), any
// other the Authorization header.
func expectStatus(tb testing.TB, base, order, auth, origin string, want int) error {
	tb.Helper()
	url := base + "/v1/orders/" + order + "/ws"
	if strings.HasPrefix(auth, "?") {
		url, auth = url+auth, ""
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="} {
		req.Header.Set(k, v)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("status %d %s, want %d", resp.StatusCode, b, want)
	}
	if want != http.StatusSwitchingProtocols {
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			return fmt.Errorf("refusal with Content-Type %q", ct)
		}
		if resp.Header.Get("Sec-WebSocket-Accept") != "" {
			return errors.New("a refusal carries Sec-WebSocket-Accept")
		}
	}
	return nil
}

// sse reads the event stream of order (with query and, when not "", a
// Last-Event-ID) until it ends, and returns its event ids and the body.
func sse(tb testing.TB, base, order, token, query, lastEventID string) (string, string) {
	tb.Helper()
	url := base + "/v1/orders/" + order + "/events?token=" + token
	if query != "" {
		url += "&" + query
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET events: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		tb.Fatalf("GET events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("event stream did not end cleanly: %v\n%s", err, b)
	}
	var ids []string
	for line := range strings.SplitSeq(string(b), "\n") {
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			ids = append(ids, id)
		}
	}
	return "[" + strings.Join(ids, " ") + "]", string(b)
}

// dialTinyBuffer opens a WebSocket whose socket receives into a tiny
// buffer, and never reads from it until the test does.
func dialTinyBuffer(tb testing.TB, base, order, token string) net.Conn {
	tb.Helper()
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
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/orders/" + order + "/ws?token=" + token
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, br, _, err := d.Dial(ctx, url)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	if br != nil {
		ws.PutReader(br)
	}
	return conn
}

// publishUntil publishes status changes of order (seq 1, 2, … confirmed),
// as the order service would, a batch at a time, until done holds; after
// each batch it waits until the batch is stored. It returns how many it
// published.
func publishUntil(tb testing.TB, s *stack.Stack, order string, done func() bool) int {
	tb.Helper()
	conn, err := rabbit.Dial(context.Background(), s.AMQPURL, rabbit.WithName("live-test"))
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close()
	pub := conn.NewPublisher()
	defer pub.Close()
	seq := int64(0)
	for !done() {
		if seq >= 20000 {
			tb.Fatalf("still not done after %d changes", seq)
		}
		batch := make([]rabbit.Message, 200)
		for i := range batch {
			seq++
			body, err := proto.Marshal(&eventsv1.OrderStatusChanged{
				OrderId: order, CustomerId: "slow-" + order, Status: eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED,
				Seq: seq, At: timestamppb.Now(),
			})
			if err != nil {
				tb.Fatal(err)
			}
			batch[i] = rabbit.Message{
				Exchange: eventsv1.ExchangeOrder, RoutingKey: eventsv1.RoutingKeyOrderStatusChanged,
				MessageID: stack.NewUUID(), Type: eventsv1.TypeOrderStatusChanged, ContentType: eventsv1.ContentType,
				Timestamp: time.Now(), Headers: map[string]any{rabbit.HeaderAggregateID: order}, Body: body,
			}
		}
		for _, err := range pub.Publish(context.Background(), batch) {
			if err != nil {
				tb.Fatalf("publish: %v", err)
			}
		}
		poll.UntilNil(tb, time.Minute, "the batch to be stored", func() error {
			var n int64
			if err := s.Notification.DB.QueryRow(context.Background(), `SELECT coalesce(max(seq), 0) FROM order_status WHERE order_id = $1`, order).Scan(&n); err != nil {
				return err
			}
			if n < seq && !done() {
				return fmt.Errorf("stored up to %d of %d", n, seq)
			}
			return nil
		})
	}
	return int(seq)
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
