package consume_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

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

// recorder is a Publisher that remembers what it was handed, and passes
// it on to next when set.
type recorder struct {
	mu   sync.Mutex
	got  []status.Change
	next consume.Publisher
}

func (r *recorder) Publish(c status.Change) {
	r.mu.Lock()
	r.got = append(r.got, c)
	r.mu.Unlock()
	if r.next != nil {
		r.next.Publish(c)
	}
}

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

// env is a database, a vhost, both consumers of one replica, and its hub
// behind an HTTP server.
type env struct {
	pool *pgxpool.Pool
	conn *rabbit.Conn
	pub  *rabbit.Publisher
	rec  *recorder
	hub  *live.Hub
	url  string
}

func newEnv(tb testing.TB) *env {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb, postgres.Migration)
	amqpURL := rabbittest.NewVhost(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	conn, err := rabbit.Dial(ctx, amqpURL, rabbit.WithLogger(log))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	hub, err := live.NewHub(live.Options{Store: postgres.New(pool), Log: log, MaxPerOrder: 100, SendQueue: 1000})
	if err != nil {
		tb.Fatal(err)
	}
	e := &env{pool: pool, conn: conn, pub: conn.NewPublisher(), rec: &recorder{next: hub}, hub: hub}
	exchanges := []string{eventsv1.ExchangeOrder}
	shared, own := consume.SharedQueue(), consume.InstanceQueue("test-"+uuid.NewString()[:8])
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: exchanges, Queues: []rabbit.Queue{shared, own}}); err != nil {
		tb.Fatal(err)
	}
	writer := postgres.NewWriter(pool)
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, c := range []*rabbit.Consumer{
		{Conn: conn, Queue: shared, Exchanges: exchanges, Handler: consume.Handler(writer, nil), Log: log},
		{Conn: conn, Queue: own, Exchanges: exchanges, Handler: consume.Handler(writer, e.rec), Log: log},
	} {
		wg.Go(func() { _ = c.Run(runCtx) })
	}
	wg.Go(func() { _ = hub.Run(runCtx) })
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws/{order}", func(w http.ResponseWriter, r *http.Request) {
		wt := live.Watch{OrderID: r.PathValue("order"), Key: "k", Since: -1}
		if r.URL.Query().Get("since") == "0" {
			wt.Since = 0
		}
		if err := hub.ServeWS(w, r, wt); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	srv := httptest.NewServer(mux)
	e.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	tb.Cleanup(func() { stop(); wg.Wait(); srv.Close(); _ = e.pub.Close() })
	return e
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

func (e *env) count(tb testing.TB, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := e.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatal(err)
	}
	return n
}

// TestRedeliveryAndStaleChangesHaveNoEffect: a message delivered twice and
// a change older than the latest change nothing in the database, and a
// client watching sees each status once, in order.
func TestRedeliveryAndStaleChangesHaveNoEffect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	order := uuid.NewString()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, e.url+"/ws/"+order, nil) //nolint:bodyclose // coder/websocket closes it
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

	// The hub may be handed a change more than once (both copies of the
	// duplicate, and each replica queue's copy); the client must not see
	// one twice. Whether it sees 2 depends on whether 2 was stored when 3
	// arrived (the gap is filled from the feed) or came after 3 (skipped).
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
	if n := len(e.rec.seqs(order)); n < 4 {
		t.Errorf("hub was handed %d changes, want at least 4", n)
	}
}

func TestInvalidEventsAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
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
// race on the real path: changes go through the broker, the inbox and the
// database, and are published after their commit, while clients connect.
// Every client must see each seq from its first one on exactly once, in
// order, up to the terminal status and a normal close.
func TestClientsConnectingWhileChangesFlow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
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
			c, _, err := websocket.Dial(ctx, e.url+"/ws/"+order+q, nil) //nolint:bodyclose // coder/websocket closes it
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
		time.Sleep(5 * time.Millisecond) //nolint:forbidigo // paces the changes over the connects
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
