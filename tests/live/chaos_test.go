package live

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/tests/stack"
)

// The chaos scenarios drive one notification binary with made-up orders
// whose status changes go straight to order.events: the other services
// add nothing to what a restart of the broker or the database does to
// live tracking, and publishing directly lets the changes keep coming
// through the outage.
const (
	chaosOrders = 20
	chaosSeqs   = 40 // per order; the last one is terminal
	chaosCut    = 10 // every shopper has this seq when the restart begins
	// chaosPace spaces the rounds (one change per order) so that the
	// restart falls in the middle of the stream, not after it.
	chaosPace = 150 * time.Millisecond
	// chaosLimit bounds a scenario from the first change to the last close
	// (about 10 s when all goes well).
	chaosLimit = 45 * time.Second
)

// TestChaosLiveBrokerRestart stops and starts RabbitMQ while changes are
// being published: the service's consumers resume on their own, and the
// shoppers, who talk to the service and not to the broker, stay on their
// first connection and get every change once, in order.
func TestChaosLiveBrokerRestart(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") == "" {
		t.Skip("stops the broker: runs in the serialized chaos step (ORDERLY_CHAOS=1)")
	}
	shoppers, _ := runChaos(t, func(t *testing.T) {
		rabbittest.Ctl(t, "stop_app")
		restarted := false
		t.Cleanup(func() {
			if !restarted {
				rabbittest.Ctl(t, "start_app")
			}
		})
		time.Sleep(2 * time.Second)
		rabbittest.Ctl(t, "start_app")
		restarted = true
		rabbittest.Ctl(t, "await_startup")
	})
	for _, s := range shoppers {
		if conns, failed, ends := s.connections(); conns != 1 || failed != 0 {
			t.Errorf("order %s: %d connections and %d failed dials (ends: %v); a broker restart must not disconnect a shopper", s.order, conns, failed, ends)
		}
	}
}

// TestChaosLiveDatabaseRestart restarts PostgreSQL while changes are being
// published. A shopper may be disconnected meanwhile (a snapshot or a gap
// fill needs the database); it then resumes with since, as the API tells
// clients to, and still gets every change once, in order. The restart also
// cuts the connection on which the service listens for stored changes:
// what was stored before it listened again reaches the shoppers through
// its resync.
func TestChaosLiveDatabaseRestart(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") == "" {
		t.Skip("restarts PostgreSQL: runs in the serialized chaos step (ORDERLY_CHAOS=1)")
	}
	shoppers, notif := runChaos(t, restartPostgres)
	reconnects, failedDials := 0, 0
	for _, s := range shoppers {
		conns, failed, ends := s.connections()
		reconnects += conns - 1
		failedDials += failed
		if conns > 1 {
			t.Logf("order %s: %d connections, %d failed dials, ends %v", s.order, conns, failed, ends)
		}
	}
	t.Logf("%d reconnects and %d failed dials over %d shoppers", reconnects, failedDials, len(shoppers))
	resyncs := metric(t, notif.url, "notification_listener_resyncs_total", "")
	t.Logf("the listener heard %v notifications and resynced %v times", metric(t, notif.url, "notification_listener_notifications_total", ""), resyncs)
	if resyncs < 2 {
		t.Errorf("the listener resynced %v times, want at least 2 (at start, and after the restart cut its connection)", resyncs)
	}
}

// runChaos starts the notification binary on a fresh database and vhost,
// connects a shopper per order, publishes every order's changes a round at
// a time and calls disrupt once every shopper has seq chaosCut, while the
// rounds go on. It checks that every shopper ended with a normal close
// after exactly the changes published, in order, and returns them and the
// binary.
func runChaos(t *testing.T, disrupt func(*testing.T)) ([]*shopper, *replica) {
	amqpURL := rabbittest.NewVhost(t)
	_, dbURL := pgtest.NewDB(t) // empty: the binary migrates it
	// startReplica reads no more of a stack than this.
	st := &stack.Stack{Secret: stack.NewSecret(), TrackingSecret: stack.NewSecret(), AMQPURL: amqpURL, Notification: &stack.Service{DBURL: dbURL}}
	notif := startReplica(t, st, "chaos")

	ctx, cancel := context.WithTimeout(context.Background(), chaosLimit+30*time.Second)
	t.Cleanup(cancel)
	orders := make([]string, chaosOrders)
	shoppers := make([]*shopper, chaosOrders)
	for i := range orders {
		orders[i] = stack.NewUUID()
		shoppers[i] = follow(ctx, t, notif.url, orders[i], st.TrackingToken(orders[i]))
	}
	poll.UntilNil(t, 15*time.Second, "every shopper to be connected", func() error {
		for _, s := range shoppers {
			if conns, _, _ := s.connections(); conns == 0 {
				return fmt.Errorf("order %s not yet", s.order)
			}
		}
		return nil
	})

	conn, err := rabbit.Dial(ctx, amqpURL, rabbit.WithName("live-chaos"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	pub := conn.NewPublisher()
	start := time.Now()
	var round atomic.Int64
	published := make(chan error, 1)
	go func() { published <- publishRounds(ctx, pub, orders, &round) }()

	poll.UntilNil(t, 20*time.Second, fmt.Sprintf("every shopper to have seq %d", chaosCut), func() error {
		for _, s := range shoppers {
			if got := s.got(); len(got) == 0 || got[len(got)-1].Seq < chaosCut {
				return fmt.Errorf("order %s: %s", s.order, trail(got))
			}
		}
		return nil
	})
	began := time.Now()
	if r := round.Load(); r >= chaosSeqs-5 {
		t.Fatalf("every change but %d was published before the restart: it would test nothing", chaosSeqs-r)
	}
	t.Logf("restart begins at +%.1fs, round %d of %d published", began.Sub(start).Seconds(), round.Load(), chaosSeqs)
	disrupt(t)
	t.Logf("restart done after %.1fs, round %d published", time.Since(began).Seconds(), round.Load())

	select {
	case err := <-published:
		if err != nil {
			t.Fatalf("publishing: %v (round %d)", err, round.Load())
		}
	case <-time.After(time.Until(start.Add(chaosLimit))):
		t.Fatalf("still publishing round %d after %v", round.Load(), chaosLimit)
	}
	t.Logf("all %d rounds published at +%.1fs", chaosSeqs, time.Since(start).Seconds())
	for _, s := range shoppers {
		select {
		case <-s.done:
		case <-time.After(time.Until(start.Add(chaosLimit))):
			t.Fatalf("order %s: still open after %v, got %s", s.order, chaosLimit, trail(s.got()))
		}
	}
	t.Logf("every shopper closed by +%.1fs", time.Since(start).Seconds())

	for i, s := range shoppers {
		if problem := chaosCheck(i, s.got()); problem != "" {
			t.Errorf("order %s: %s", s.order, problem)
		}
		if code, err := s.end(); code != websocket.StatusNormalClosure {
			t.Errorf("order %s: last connection ended with %v (%v), want 1000", s.order, code, err)
		}
	}
	if t.Failed() {
		t.Logf("notification log (tail):\n%s", notif.p.Stdout.Tail(32<<10))
	}
	return shoppers, notif
}

// chaosCheck returns what is wrong with what order i's shopper got, or ""
// when it got seq 1..chaosSeqs once each, in order, with their statuses.
func chaosCheck(i int, got []msg) string {
	count := map[int64]int{}
	var missing, twice, unordered, wrong []int64
	for k, m := range got {
		count[m.Seq]++
		if count[m.Seq] == 2 {
			twice = append(twice, m.Seq)
		}
		if k > 0 && m.Seq <= got[k-1].Seq {
			unordered = append(unordered, m.Seq)
		}
		if m.Seq >= 1 && m.Seq <= chaosSeqs && m.Status != chaosStatus(i, m.Seq).Label() {
			wrong = append(wrong, m.Seq)
		}
	}
	for seq := int64(1); seq <= chaosSeqs; seq++ {
		if count[seq] == 0 {
			missing = append(missing, seq)
		}
	}
	if len(got) == chaosSeqs && len(missing)+len(twice)+len(unordered)+len(wrong) == 0 {
		return ""
	}
	return fmt.Sprintf("got %d messages: seqs missing %v, received twice %v, out of order %v, wrong status %v",
		len(got), missing, twice, unordered, wrong)
}

// chaosStatus is order i's status at seq: a made-up lifecycle long enough
// for the restart to fall in its middle, ending delivered for even orders
// and cancelled for odd ones.
func chaosStatus(i int, seq int64) eventsv1.OrderStatus {
	switch {
	case seq == chaosSeqs && i%2 == 0:
		return eventsv1.OrderStatus_ORDER_STATUS_DELIVERED
	case seq == chaosSeqs:
		return eventsv1.OrderStatus_ORDER_STATUS_CANCELLED
	case seq == 1:
		return eventsv1.OrderStatus_ORDER_STATUS_PENDING
	case seq == 2:
		return eventsv1.OrderStatus_ORDER_STATUS_RESERVED
	case seq == 3:
		return eventsv1.OrderStatus_ORDER_STATUS_CONFIRMED
	}
	return eventsv1.OrderStatus_ORDER_STATUS_SHIPPED
}

// publishRounds publishes seq 1..chaosSeqs of every order, as the order
// service's relay would, one round (a seq for every order) each chaosPace.
// A round is published again, with the same message ids, until the broker
// confirmed every message: publishing fails while the broker is down, and
// a message not confirmed may have been routed anyway (the consumer then
// sees it twice).
func publishRounds(ctx context.Context, pub *rabbit.Publisher, orders []string, round *atomic.Int64) error {
	for seq := int64(1); seq <= chaosSeqs; seq++ {
		msgs := make([]rabbit.Message, len(orders))
		for i, order := range orders {
			st := chaosStatus(i, seq)
			ev := &eventsv1.OrderStatusChanged{OrderId: order, CustomerId: "chaos-" + order, Status: st, Seq: seq, At: timestamppb.Now()}
			if st == eventsv1.OrderStatus_ORDER_STATUS_CANCELLED {
				ev.Reason = eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST
			}
			body, err := proto.Marshal(ev)
			if err != nil {
				return err
			}
			msgs[i] = rabbit.Message{
				Exchange: eventsv1.ExchangeOrder, RoutingKey: eventsv1.RoutingKeyOrderStatusChanged,
				MessageID: stack.NewUUID(), Type: eventsv1.TypeOrderStatusChanged, ContentType: eventsv1.ContentType,
				Timestamp: time.Now(), Headers: map[string]any{rabbit.HeaderAggregateID: order}, Body: body,
			}
		}
		for attempt := 1; len(msgs) > 0; attempt++ {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			errs := pub.Publish(pctx, msgs)
			cancel()
			var again []rabbit.Message
			var last error
			for i, err := range errs {
				if err != nil {
					again, last = append(again, msgs[i]), err
				}
			}
			msgs = again
			if len(msgs) == 0 {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("seq %d: %d messages unconfirmed after %d attempts: %w", seq, len(msgs), attempt, last)
			case <-time.After(200 * time.Millisecond):
			}
		}
		round.Store(seq)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(chaosPace):
		}
	}
	return nil
}

// shopper is one client following an order as the API tells clients to:
// after any close but 1000 it connects again with since = the last seq it
// got, backing off while the service refuses.
type shopper struct {
	order string
	done  chan struct{}

	mu       sync.Mutex
	msgs     []msg
	conns    int      // connections opened
	failed   int      // dials refused or failed
	ends     []string // how each connection but a normal last one ended
	lastCode websocket.StatusCode
	lastErr  error
}

// follow starts a shopper on order; it runs until its order's stream
// closes normally or ctx ends.
func follow(ctx context.Context, tb testing.TB, base, order, token string) *shopper {
	s := &shopper{order: order, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(ctx)
	go s.run(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/orders/"+order+"/ws?token="+token)
	tb.Cleanup(func() { cancel(); <-s.done })
	return s
}

func (s *shopper) run(ctx context.Context, url string) {
	defer close(s.done)
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		since := int64(0)
		if got := s.got(); len(got) > 0 {
			since = got[len(got)-1].Seq
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, _, err := websocket.Dial(dctx, url+"&since="+strconv.FormatInt(since, 10), nil) //nolint:bodyclose // coder/websocket closes it
		cancel()
		if err != nil {
			s.mu.Lock()
			s.failed++
			s.lastCode, s.lastErr = -1, err
			s.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.mu.Lock()
		s.conns++
		s.mu.Unlock()
		code, err := s.read(ctx, c)
		s.mu.Lock()
		s.lastCode, s.lastErr = code, err
		normal := code == websocket.StatusNormalClosure
		if !normal {
			s.ends = append(s.ends, fmt.Sprintf("since %d, got %d messages, then %v", since, len(s.msgs), err))
		}
		s.mu.Unlock()
		if normal {
			return
		}
	}
}

// read receives on c until it ends, and returns its close code (-1 when
// the connection broke without one).
func (s *shopper) read(ctx context.Context, c *websocket.Conn) (websocket.StatusCode, error) {
	defer func() { _ = c.CloseNow() }()
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			return websocket.CloseStatus(err), err
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			return -1, fmt.Errorf("message %s: %w", b, err)
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
	}
}

func (s *shopper) got() []msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]msg(nil), s.msgs...)
}

// connections returns how many connections the shopper opened, how many
// dials failed, and how every connection that did not close normally ended.
func (s *shopper) connections() (opened, failed int, ends []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns, s.failed, append([]string(nil), s.ends...)
}

// end returns how the last connection (or dial) ended.
func (s *shopper) end() (websocket.StatusCode, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastCode, s.lastErr
}

// restartPostgres restarts the local cluster, as pkg/outbox's chaos test
// does; it returns once the server accepts connections again.
func restartPostgres(t *testing.T) {
	t.Helper()
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(versions) != 1 {
		t.Fatalf("cannot find the PostgreSQL cluster: %v", err)
	}
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", versions[0].Name(), "main", "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("restart postgres: %v\n%s", err, out)
	}
}
