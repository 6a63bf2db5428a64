package consume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/notification/consume"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/status"
)

// recorder is the hub of a listener: it remembers what it was handed and
// passes it on to the replica's live.Hub.
type recorder struct {
	mu  sync.Mutex
	got []status.Change
	hub *live.Hub
}

func (r *recorder) Publish(c status.Change) {
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
	r.hub.Publish(c)
}

func (r *recorder) Orders() []string { return r.hub.Orders() }

func (r *recorder) seqs(order string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, c := range r.got {
		if c.OrderID == order {
			out = append(out, c.Seq)
		}
	}
	return out
}

// env is a database and a vhost with the service's queue, shared by the
// replicas a test starts on them.
type env struct {
	pool *pgxpool.Pool
	conn *rabbit.Conn
	pub  *rabbit.Publisher
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, postgres.Migration)
	amqpURL := rabbittest.NewVhost(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := rabbit.Dial(ctx, amqpURL, rabbit.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{eventsv1.ExchangeOrder}, Queues: []rabbit.Queue{consume.SharedQueue()}}); err != nil {
		tb.Fatal(err)
	}
	e := &env{pool: pool, conn: conn, pub: conn.NewPublisher()}
	tb.Cleanup(func() { _ = e.pub.Close() })
	return e
}

// replica is one notification replica as cmd/notification wires it: the
// queue's consumer storing through a Writer, a Listener handing what is
// announced to a hub, and the hub behind an HTTP server.
type replica struct {
	writer   *postgres.Writer
	listener *postgres.Listener
	rec      *recorder
	hub      *live.Hub
	url      string
}

// newReplica starts a replica on e; listenerBackoff, when positive, is
// its listener's pause before reconnecting.
func (e *env) newReplica(tb testing.TB, listenerBackoff time.Duration) *replica {
	tb.Helper()
	log := slog.New(slog.DiscardHandler)
	hub, err := live.NewHub(live.Options{Store: postgres.New(e.pool), Log: log, MaxPerOrder: 100, SendQueue: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	r := &replica{writer: postgres.NewWriter(postgres.New(e.pool)), rec: &recorder{hub: hub}, hub: hub}
	r.listener = postgres.NewListener(e.pool, r.rec, log)
	if listenerBackoff > 0 {
		r.listener.Backoff = listenerBackoff
	}
	consumer := &rabbit.Consumer{Conn: e.conn, Queue: consume.SharedQueue(), Batch: consume.New(r.writer).Consumers()[0].Batch, Log: log}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"consumer": consumer.Run, "listener": r.listener.Run, "hub": hub.Run} {
		wg.Go(func() {
			if err := run(runCtx); err != nil {
				tb.Errorf("%s: %v", name, err)
			}
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{order}", func(w http.ResponseWriter, r *http.Request) {
		wt := live.Watch{OrderID: r.PathValue("order"), Since: -1}
		if s := r.URL.Query().Get("since"); s != "" {
			wt.Since, _ = strconv.ParseInt(s, 10, 64)
		}
		if err := hub.ServeWS(w, r, wt); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(mux)
	r.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	tb.Cleanup(func() { stop(); wg.Wait(); srv.Close() })
	poll.Until(tb, 10*time.Second, "the listener to listen", func() bool { return r.listener.Stats().Resyncs >= 1 })
	return r
}

func message(tb testing.TB, id, order string, seq int64, st eventsv1.OrderStatus) rabbit.Message {
	tb.Helper()
	ev := &eventsv1.OrderStatusChanged{OrderId: order, CustomerId: "alice", Status: st, Seq: seq, At: timestamppb.Now()}
	if st == eventsv1.OrderStatus_ORDER_STATUS_CANCELLED {
		ev.Reason = eventsv1.CancelReason_CANCEL_REASON_TIMEOUT
	}
	body, err := proto.Marshal(ev)
	if err != nil {
		tb.Fatal(err)
	}
	return rabbit.Message{
		Exchange: eventsv1.ExchangeOrder, RoutingKey: eventsv1.RoutingKeyOrderStatusChanged,
		MessageID: id, Type: eventsv1.TypeOrderStatusChanged, ContentType: eventsv1.ContentType,
		Timestamp: time.Now(), Headers: map[string]any{rabbit.HeaderAggregateID: order}, Body: body,
	}
}

func (e *env) publish(tb testing.TB, msgs ...rabbit.Message) {
	tb.Helper()
	for i, err := range e.pub.Publish(context.Background(), msgs) {
		if err != nil {
			tb.Fatalf("publish %d: %v", i, err)
		}
	}
}

// awaitConsumers waits until queue has n consumers.
func (e *env) awaitConsumers(tb testing.TB, queue string, n int) {
	tb.Helper()
	ch, _, err := e.conn.Channel(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = ch.Close() }()
	poll.Until(tb, 10*time.Second, fmt.Sprintf("%d consumers on %s", n, queue), func() bool {
		qi, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return err == nil && qi.Consumers == n
	})
}

func (e *env) count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestRedeliveryAndStaleChangesHaveNoEffect: a message delivered twice and
// a change older than the latest change nothing in the database, each
// stored change is announced once (the duplicate not at all), and a client
// watching sees each status once, in order.
func TestRedeliveryAndStaleChangesHaveNoEffect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.newReplica(t, 0)
	order := uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, r.url+"/ws/"+order, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.CloseNow() }()

	first := message(t, uuid.NewString(), order, 1, eventsv1.OrderStatus_ORDER_STATUS_PENDING)
	e.publish(t, first, first) // the same message id twice
	e.publish(t, message(t, uuid.NewString(), order, 3, eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED))
	e.publish(t, message(t, uuid.NewString(), order, 2, eventsv1.OrderStatus_ORDER_STATUS_RESERVED)) // late
	e.publish(t, message(t, uuid.NewString(), order, 4, eventsv1.OrderStatus_ORDER_STATUS_CANCELLED))
	poll.Until(t, 10*time.Second, "four changes in the feed", func() bool {
		return e.count(t, `SELECT count(*) FROM status_feed WHERE order_id = $1`, order) == 4
	})
	var st string
	var seq int64
	if err := e.pool.QueryRow(ctx, `SELECT status, seq FROM order_status WHERE order_id = $1`, order).Scan(&st, &seq); err != nil || st != "cancelled" || seq != 4 {
		t.Errorf("latest = %s/%d (%v), want cancelled/4", st, seq, err)
	}

	// The client must not see a change twice. Whether it sees 2 depends on
	// whether 2 was stored when 3 arrived (the gap is filled from the
	// feed) or came after 3 (skipped).
	var got []int64
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != websocket.StatusNormalClosure {
				t.Fatalf("read: %v (close %v) after %v", err, code, got)
			}
			break
		}
		var m struct{ Seq int64 }
		_ = json.Unmarshal(b, &m)
		got = append(got, m.Seq)
	}
	if s := fmt.Sprint(got); s != "[1 2 3 4]" && s != "[1 3 4]" {
		t.Errorf("client saw %s, want [1 2 3 4] or [1 3 4]", s)
	}
	// Four changes stored, four announced: the duplicate, stored once,
	// is announced once; the late seq 2 is new to the feed, so it is.
	poll.Until(t, 10*time.Second, "four changes handed to the hub", func() bool { return len(r.rec.seqs(order)) >= 4 })
	if got := r.rec.seqs(order); len(got) != 4 {
		t.Errorf("hub was handed seqs %v, want each of the four stored changes once", got)
	}
	if n := r.listener.Stats().Notifications; n != 4 {
		t.Errorf("listener heard %d notifications, want 4", n)
	}
}

func TestInvalidEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.newReplica(t, 0)
	bad := message(t, uuid.NewString(), "not-a-uuid", 1, eventsv1.OrderStatus_ORDER_STATUS_PENDING)
	corrupt := message(t, uuid.NewString(), uuid.NewString(), 1, eventsv1.OrderStatus_ORDER_STATUS_PENDING)
	corrupt.Body = []byte{0xff, 0xff}
	e.publish(t, bad, corrupt)
	for _, q := range []string{consume.QueueShared} {
		poll.Until(t, 10*time.Second, "two dead letters in "+q+".dlq", func() bool {
			dl, err := e.conn.ListDeadLetters(context.Background(), q, 10)
			return err == nil && len(dl) == 2
		})
	}
	if n := e.count(t, `SELECT count(*) FROM status_feed`); n != 0 {
		t.Errorf("feed has %d rows, want 0", n)
	}
}

// TestClientsConnectingWhileChangesFlow is the subscribe-before-snapshot
// race on the real path: changes go through the broker and the database,
// and are announced by their commit and published by the listener, while
// clients connect.
// Every client must see each seq from its first one on exactly once, in
// order, up to the terminal status and a normal close.
func TestClientsConnectingWhileChangesFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.newReplica(t, 0)
	order := uuid.NewString()
	const n = 60
	var wg sync.WaitGroup
	type result struct {
		seqs []int64
		code websocket.StatusCode
		all  bool
		err  error
	}
	results := make(chan result, 30)
	for i := range 30 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 15 * time.Millisecond) // spread over the changes
			q := ""
			if i%3 == 0 {
				q = "?since=0"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, r.url+"/ws/"+order+q, nil) //nolint:bodyclose // coder/websocket closes it
			if err != nil {
				results <- result{err: err}
				return
			}
			defer func() { _ = c.CloseNow() }()
			r := result{all: q != ""}
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					r.code = websocket.CloseStatus(err)
					if r.code == -1 {
						r.err = err
					}
					results <- r
					return
				}
				var m struct{ Seq int64 }
				_ = json.Unmarshal(b, &m)
				r.seqs = append(r.seqs, m.Seq)
			}
		})
	}
	for seq := int64(1); seq <= n; seq++ {
		st := eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED
		if seq == n {
			st = eventsv1.OrderStatus_ORDER_STATUS_CANCELLED
		}
		e.publish(t, message(t, uuid.NewString(), order, seq, st))
		time.Sleep(5 * time.Millisecond) // paces the changes over the connects
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.err != nil {
			t.Fatalf("client: %v (got %v)", r.err, r.seqs)
		}
		if r.code != websocket.StatusNormalClosure {
			t.Errorf("close %v, want 1000", r.code)
		}
		if len(r.seqs) == 0 || r.seqs[len(r.seqs)-1] != n || (r.all && r.seqs[0] != 1) {
			t.Errorf("client (since=0: %v) got %v", r.all, r.seqs)
			continue
		}
		for i := 1; i < len(r.seqs); i++ {
			if r.seqs[i] != r.seqs[i-1]+1 {
				t.Errorf("client got seq %d after %d: %v", r.seqs[i], r.seqs[i-1], r.seqs)
				break
			}
		}
	}
}

// readSeqs reads c until it closes and returns the seqs it got and the
// close code (-1 when it broke without one).
func readSeqs(ctx context.Context, c *websocket.Conn) ([]int64, websocket.StatusCode, error) {
	var got []int64
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			code := websocket.CloseStatus(err)
			if code == -1 {
				return got, code, err
			}
			return got, code, nil
		}
		var m struct{ Seq int64 }
		if err := json.Unmarshal(b, &m); err != nil {
			return got, -1, fmt.Errorf("message %s: %w", b, err)
		}
		got = append(got, m.Seq)
	}
}

// wsDial opens a WebSocket on r for order with query.
func (r *replica) wsDial(tb testing.TB, order, query string) *websocket.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, r.url+"/ws/"+order+query, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.CloseNow() })
	return c
}

// TestTwoReplicasSharingTheQueueBothPushEveryChange: two replicas consume
// the one queue, each change is stored once by whichever took it, and the
// clients of both replicas get every change of their order once, in order
// — half of them taken by the other replica.
func TestTwoReplicasSharingTheQueueBothPushEveryChange(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	replicas := []*replica{e.newReplica(t, 0), e.newReplica(t, 0)}
	const orders, n = 4, 30
	type client struct {
		replica int
		order   string
		c       *websocket.Conn
	}
	var clients []client
	ids := make([]string, orders)
	for i := range ids {
		ids[i] = uuid.NewString()
		for k, r := range replicas {
			clients = append(clients, client{k, ids[i], r.wsDial(t, ids[i], "?since=0")})
		}
	}
	poll.Until(t, 10*time.Second, "every client subscribed", func() bool {
		return replicas[0].hub.Stats().WebSocket == orders && replicas[1].hub.Stats().WebSocket == orders
	})
	// Both consumers on the queue before anything is published: one that
	// subscribes late could find the queue drained by the other.
	e.awaitConsumers(t, consume.SharedQueue().Name, len(replicas))
	var msgs []rabbit.Message
	for seq := int64(1); seq <= n; seq++ {
		st := eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED
		if seq == n {
			st = eventsv1.OrderStatus_ORDER_STATUS_DELIVERED
		}
		for _, id := range ids {
			msgs = append(msgs, message(t, uuid.NewString(), id, seq, st))
		}
	}
	e.publish(t, msgs...)

	want := make([]int64, n)
	for i := range want {
		want[i] = int64(i + 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, cl := range clients {
		got, code, err := readSeqs(ctx, cl.c)
		if err != nil || code != websocket.StatusNormalClosure || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("replica %d, order %s: got %v, close %v (%v); want 1..%d once each, then 1000", cl.replica, cl.order, got, code, err, n)
		}
	}
	var stored int64
	for k, r := range replicas {
		s := r.writer.Stats()
		stored += s.Changes
		if s.Changes == 0 {
			t.Errorf("replica %d stored nothing: the queue's messages did not go to both", k)
		}
		if heard := r.listener.Stats().Notifications; heard != orders*n {
			t.Errorf("replica %d heard %d notifications, want %d (every change, stored by either)", k, heard, orders*n)
		}
	}
	if stored != orders*n {
		t.Errorf("the replicas stored %d changes, want %d: each consumed and written once", stored, orders*n)
	}
}

// TestListenerResyncsAfterItsConnectionIsKilled: the listener's connection
// is terminated, and two changes are stored before it can listen again, so
// no notification of them reaches it. Once it listens again, it publishes
// the order's latest status, and the watching client gets both changes
// (the first from the feed), then what follows, once each and in order.
func TestListenerResyncsAfterItsConnectionIsKilled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A listener that waits a second before reconnecting: the changes
	// below are committed well before it listens again.
	r := e.newReplica(t, time.Second)
	order := uuid.NewString()
	c := r.wsDial(t, order, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.publish(t, message(t, uuid.NewString(), order, 1, eventsv1.OrderStatus_ORDER_STATUS_PENDING))
	if _, b, err := c.Read(ctx); err != nil || !strings.Contains(string(b), `"seq":1`) {
		t.Fatalf("first message %s (%v), want seq 1", b, err)
	}

	// Terminating the listener's backend and storing the changes in one
	// transaction: they commit right after the backend is gone, a second
	// before the listener tries again.
	err := pg.Transact(ctx, e.pool, func(tx pgx.Tx) error {
		// pg_terminate_backend in the select list, not the WHERE clause,
		// whose conditions PostgreSQL may evaluate in any order.
		const q = `SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = $1`
		rows, err := tx.Query(ctx, q, postgres.ListenerAppName)
		if err != nil {
			return err
		}
		killed, err := pgx.CollectRows(rows, pgx.RowTo[bool])
		if err != nil {
			return err
		}
		if len(killed) != 1 || !killed[0] {
			return fmt.Errorf("terminated listener backends: %v, want one", killed)
		}
		at := time.Now()
		_, err = postgres.New(e.pool).Save(ctx, tx,
			status.Change{OrderID: order, CustomerID: "alice", Status: "reserved", Seq: 2, At: at},
			status.Change{OrderID: order, CustomerID: "alice", Status: "confirmed", Seq: 3, At: at})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	// Both arrive with nothing more stored: from the resync alone.
	var got []int64
	for len(got) < 2 {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("after seq 1 the client got %v, then %v; want 2 and 3 from the resync", got, err)
		}
		var m struct{ Seq int64 }
		_ = json.Unmarshal(b, &m)
		got = append(got, m.Seq)
	}
	if fmt.Sprint(got) != "[2 3]" {
		t.Errorf("after seq 1 the client got %v, want [2 3]", got)
	}
	e.publish(t, message(t, uuid.NewString(), order, 4, eventsv1.OrderStatus_ORDER_STATUS_CANCELLED))
	got, code, err := readSeqs(ctx, c)
	if err != nil || code != websocket.StatusNormalClosure || fmt.Sprint(got) != "[4]" {
		t.Errorf("then the client got %v, close %v (%v); want [4], then 1000", got, code, err)
	}
	s := r.listener.Stats()
	if s.Notifications != 2 || s.Resyncs != 2 {
		t.Errorf("listener stats %+v, want 2 notifications (seqs 1 and 4; 2 and 3 came while it was away) and 2 resyncs", s)
	}
}
