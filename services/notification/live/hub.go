// Package live streams order statuses to shoppers over WebSocket and
// Server-Sent Events.
//
// A Hub knows, per order, the connections watching it. Publish is called
// for each status change once it has committed (by postgres.Listener, which
// hears of every change any replica stores); the hub hands the change to
// every connection of the order. Each connection subscribes before it reads
// its snapshot from the database (the current status, or the feed after a
// given seq), and drops anything at or below the last seq it sent, so a
// change that lands between the two is sent exactly once. A change that
// skips seqs the connection has not sent makes it send those from the feed
// first, so publishing an order's latest status is enough to bring every
// connection of the order up to date (the listener does that after it
// reconnects, for Orders).
//
// Idle WebSocket connections are cheap: no buffered reader or writer is
// kept, nothing is queued, and a writer goroutine exists only while there
// is something to write (see docs/decisions/0008-live-tracking.md).
package live

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/orderly/orderly/services/notification/status"
)

// Store is what connections read their snapshot from.
type Store interface {
	// Current returns the latest status of an order, or an error wrapping
	// status.ErrUnknownOrder when there is none yet.
	Current(ctx context.Context, orderID string) (status.Change, error)
	// Since returns the statuses of an order with a seq above since,
	// oldest first.
	Since(ctx context.Context, orderID string, since int64) ([]status.Change, error)
}

// Refusals: a connection that gets one of these was not accepted, and
// nothing was written to the client yet.
var (
	// ErrTooManyForOrder means the order already has MaxPerOrder watchers.
	ErrTooManyForOrder = errors.New("too many connections for this order")
	// ErrTooManyForCustomer means the caller already has MaxPerCustomer
	// connections.
	ErrTooManyForCustomer = errors.New("too many connections for this customer")
	// ErrShuttingDown means the hub no longer takes connections.
	ErrShuttingDown = errors.New("the service is shutting down")
	// ErrNotWebSocket means the request is not a valid WebSocket
	// handshake (RFC 6455, section 4.2.1).
	ErrNotWebSocket = errors.New("not a WebSocket handshake")
)

// Options configure a Hub. Zero values take the defaults in brackets.
type Options struct {
	// Store gives each connection its snapshot. Required.
	Store Store
	// MaxPerOrder [20] and MaxPerCustomer [50] cap the connections open at
	// once on this replica.
	MaxPerOrder, MaxPerCustomer int
	// SendQueue [32] bounds the messages waiting for one connection; a
	// client that lets it overflow is disconnected (WebSocket close code
	// 1013) and resumes with since.
	SendQueue int
	// Heartbeat [25s] is how often an idle WebSocket is pinged; a client
	// that leaves a ping unanswered for a heartbeat is dropped.
	Heartbeat time.Duration
	// SSEHeartbeat [15s] is how often an idle event stream gets a comment
	// line.
	SSEHeartbeat time.Duration
	// SSERetry [2s] is the reconnection delay suggested to EventSource
	// clients (the "retry:" field).
	SSERetry time.Duration
	// WriteTimeout [10s] bounds one write to a client.
	WriteTimeout time.Duration
	// SocketSendBuffer [32 KiB] is the kernel send buffer of a WebSocket
	// (SO_SNDBUF; Linux doubles it). Status messages are small, so this is
	// plenty; it keeps the kernel from buffering megabytes for a client
	// that stopped reading, and lets the send queue notice it sooner.
	SocketSendBuffer int
	// CloseWait [5s] is how long a closing WebSocket waits for the
	// client's close frame before the TCP connection is closed.
	CloseWait time.Duration
	// GapWait [45s] is how long a connection waits for a status that is
	// not stored yet when a later one is to be sent (its write failed and
	// is being retried: 20 s in place, then the delayed retries, the
	// longest 30 s after the database is back).
	GapWait time.Duration
	// Log receives connection errors. Required.
	Log *slog.Logger
	// Meter records the hub's metrics; nil records nothing.
	Meter metric.Meter
}

// Hub holds the live connections of this replica, by order.
type Hub struct {
	o Options
	m metrics

	mu      sync.Mutex
	orders  map[string][]*conn
	perKey  map[string]int
	conns   map[*conn]struct{}
	closing bool
	drained chan struct{} // closed when closing and conns is empty
}

// NewHub returns a hub with o's settings. It returns an error when a
// required option is missing or a metric cannot be created.
func NewHub(o Options) (*Hub, error) {
	if o.Store == nil || o.Log == nil {
		return nil, errors.New("live: NewHub needs a Store and a Log")
	}
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxPerOrder, 20)
	def(&o.MaxPerCustomer, 50)
	def(&o.SendQueue, 32)
	def(&o.SocketSendBuffer, 32<<10)
	defDur(&o.Heartbeat, 25*time.Second)
	defDur(&o.SSEHeartbeat, 15*time.Second)
	defDur(&o.SSERetry, 2*time.Second)
	defDur(&o.WriteTimeout, 10*time.Second)
	defDur(&o.CloseWait, 5*time.Second)
	defDur(&o.GapWait, 45*time.Second)
	if o.Meter == nil {
		o.Meter = noop.NewMeterProvider().Meter("")
	}
	m, err := newMetrics(o.Meter)
	if err != nil {
		return nil, err
	}
	for _, tr := range []transport{transportWS, transportSSE} {
		m.opened(tr, 0) // so that the gauge reads 0 rather than nothing
	}
	return &Hub{
		o:       o,
		m:       m,
		orders:  map[string][]*conn{},
		perKey:  map[string]int{},
		conns:   map[*conn]struct{}{},
		drained: make(chan struct{}),
	}, nil
}

// Watch is one client's request to follow an order.
type Watch struct {
	// OrderID is the order to follow (a canonical UUID).
	OrderID string
	// Key identifies whose connection this is, for MaxPerCustomer: the
	// customer id, or anything that groups a caller's connections.
	Key string
	// Since is the last seq the client has; the snapshot is every status
	// after it. Negative means the client has nothing: the snapshot is
	// the current status alone.
	Since int64
}

// Stats counts the open connections of this replica.
type Stats struct {
	WebSocket, SSE int
}

// Stats returns how many connections are open now.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s Stats
	for c := range h.conns {
		if c.tr == transportWS {
			s.WebSocket++
		} else {
			s.SSE++
		}
	}
	return s
}

// Publish hands c to every connection watching its order on this replica.
// Call it after c has committed to the database, so that a connection
// whose snapshot missed it gets it here; a connection that already sent c
// drops it, and one that has not sent the seqs before c sends them from
// the store first. It never blocks on a client.
func (h *Hub) Publish(c status.Change) {
	h.mu.Lock()
	targets := slices.Clone(h.orders[c.OrderID])
	h.mu.Unlock()
	if len(targets) == 0 {
		return
	}
	m := newMessage(c, true)
	for _, t := range targets {
		t.offer(item{msg: m})
	}
}

// Orders returns the orders that have at least one connection on this
// replica, in no particular order.
func (h *Hub) Orders() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]string, 0, len(h.orders))
	for id := range h.orders {
		out = append(out, id)
	}
	return out
}

// subscribe registers a connection for w before anything is written to
// the client, so that it misses no change published from now on.
func (h *Hub) subscribe(w Watch, tr transport) (*conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closing:
		return nil, ErrShuttingDown
	case len(h.orders[w.OrderID]) >= h.o.MaxPerOrder:
		h.m.refused(tr, "per_order_limit")
		return nil, ErrTooManyForOrder
	case h.perKey[w.Key] >= h.o.MaxPerCustomer:
		h.m.refused(tr, "per_customer_limit")
		return nil, ErrTooManyForCustomer
	}
	now := time.Now().UnixNano()
	c := &conn{hub: h, order: w.OrderID, key: w.Key, tr: tr, last: max(w.Since, 0)}
	c.lastRead.Store(now)
	c.lastWrite.Store(now)
	if tr == transportSSE {
		c.kick = make(chan struct{}, 1)
	}
	h.orders[w.OrderID] = append(h.orders[w.OrderID], c)
	h.perKey[w.Key]++
	h.conns[c] = struct{}{}
	h.m.opened(tr, 1)
	return c, nil
}

// remove forgets c; it is called once per connection.
func (h *Hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.conns[c]; !ok {
		return
	}
	delete(h.conns, c)
	subs := h.orders[c.order]
	if i := slices.Index(subs, c); i >= 0 {
		subs[i] = subs[len(subs)-1]
		subs[len(subs)-1] = nil
		subs = subs[:len(subs)-1]
	}
	if len(subs) == 0 {
		delete(h.orders, c.order)
	} else {
		h.orders[c.order] = subs
	}
	if h.perKey[c.key]--; h.perKey[c.key] <= 0 {
		delete(h.perKey, c.key)
	}
	h.m.opened(c.tr, -1)
	if h.closing && len(h.conns) == 0 {
		close(h.drained)
	}
}

// all returns the open connections.
func (h *Hub) all() []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		out = append(out, c)
	}
	return out
}

// Shutdown stops taking connections and asks every open one to close:
// WebSockets with close code 1012 (service restart), event streams by
// ending the response. Clients reconnect, to another replica, with since.
// It returns at once; Run waits for the connections to be gone. Register
// it with boot's OnHTTPShutdown.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	if !h.closing {
		h.closing = true
		if len(h.conns) == 0 {
			close(h.drained)
		}
	}
	h.mu.Unlock()
	// How many clients are about to reconnect elsewhere: what an operator
	// rolling the replicas wants to see.
	s := h.Stats()
	h.o.Log.Info("live hub shutting down; asking every client to reconnect (1012)", "websocket", s.WebSocket, "sse", s.SSE)
	for _, c := range h.all() {
		c.requestClose(closeServiceRestart)
	}
}

// Run sends WebSocket heartbeats and drops clients that stopped answering
// them, until ctx ends. It then shuts the hub down (if Shutdown was not
// called yet) and waits, for at most CloseWait plus WriteTimeout, for the
// connections to close; the rest are cut. It returns nil.
func (h *Hub) Run(ctx context.Context) error {
	beatCtx, stopBeats := context.WithCancel(ctx)
	var beating sync.WaitGroup
	beating.Go(func() { h.heartbeats(beatCtx) })
	<-ctx.Done()
	stopBeats()
	beating.Wait()

	h.Shutdown()
	select {
	case <-h.drained:
	case <-time.After(h.o.CloseWait + h.o.WriteTimeout):
		left := h.all()
		h.o.Log.Warn("live connections still open after the close grace; cutting them", "connections", len(left))
		for _, c := range left {
			c.abort()
		}
	}
	return nil
}

// pingWorkers write the heartbeat pings: goroutines that live as long as
// the hub, rather than a writer goroutine per connection. All idle
// connections come due together, and thousands of goroutines started at
// once would each cost a stack that the process keeps long after. A ping
// to a client whose socket is full blocks its worker for up to the write
// timeout, hence more than a handful.
const pingWorkers = 32

// heartbeats sweeps the WebSockets every 25th of a heartbeat (1 s by
// default) until ctx ends: a connection not written to for a heartbeat is
// handed to the ping workers (every one of them, however long that takes:
// a client is judged only on pings it actually got), and one that left a
// ping unanswered for a heartbeat is dropped. Connections opened together
// come due together; frequent sweeps hand them over in small groups rather
// than in bursts of thousands, which hold up the status changes sent
// meanwhile (docs/benchmarks.md, "What limits the delivery latency").
func (h *Hub) heartbeats(ctx context.Context) {
	pings := make(chan *conn)
	var pinging sync.WaitGroup
	defer func() { close(pings); pinging.Wait() }()
	for range pingWorkers {
		pinging.Go(func() {
			for c := range pings {
				c.ping()
			}
		})
	}
	tick := time.NewTicker(max(h.o.Heartbeat/25, 50*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		idle := now.Add(-h.o.Heartbeat).UnixNano()
		for _, c := range h.all() {
			if c.tr != transportWS {
				continue
			}
			pinged := c.pingedAt.Load()
			switch {
			case pinged > c.lastRead.Load() && now.UnixNano()-pinged > int64(h.o.Heartbeat):
				h.o.Log.Debug("websocket client did not answer a ping; dropping it", "order_id", c.order)
				c.abort()
			case c.lastWrite.Load() < idle:
				select {
				case pings <- c:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// snapshot reads what a new connection sends first: the feed after
// w.Since (waiting, as fill does, for a status not stored yet), or the
// current status when Since is negative.
func (c *conn) snapshot(ctx context.Context, w Watch) ([]*message, error) {
	if w.Since >= 0 {
		return c.fill(w.Since, 0)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	cur, err := c.hub.o.Store.Current(ctx, w.OrderID)
	if errors.Is(err, status.ErrUnknownOrder) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("live: snapshot of %s: %w", w.OrderID, err)
	}
	return []*message{newMessage(cur, false)}, nil
}

// feed returns the stored statuses of order after since and, when before
// is positive, below before.
func (h *Hub) feed(ctx context.Context, order string, since, before int64) ([]*message, error) {
	rows, err := h.o.Store.Since(ctx, order, since)
	if err != nil {
		return nil, fmt.Errorf("live: feed of %s since %d: %w", order, since, err)
	}
	out := make([]*message, 0, len(rows))
	for _, r := range rows {
		if before > 0 && r.Seq >= before {
			break
		}
		out = append(out, newMessage(r, false))
	}
	return out, nil
}
