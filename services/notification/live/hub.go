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
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

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
// nothing was written to the client yet. The first three are the caller's
// doing (HTTP 429); ErrReplicaFull and ErrShuttingDown are this replica's
// (HTTP 503: another replica may take the connection).
var (
	// ErrTooManyForOrder means the order's tracking link already has
	// MaxPerOrder viewers.
	ErrTooManyForOrder = errors.New("too many viewers of this order's tracking link")
	// ErrTooManyForCustomer means the JWT's subject already has
	// MaxPerCustomer connections.
	ErrTooManyForCustomer = errors.New("too many connections for this customer")
	// ErrTooManyForClient means the client address already has
	// MaxPerClient connections.
	ErrTooManyForClient = errors.New("too many connections from this address")
	// ErrReplicaFull means this replica already has MaxPerReplica
	// connections.
	ErrReplicaFull = errors.New("this replica has no room for another connection")
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
	// MaxPerOrder [20] caps the viewers of one order's tracking link
	// (connections whose Watch has no Subject), and MaxPerCustomer [50]
	// the connections of one JWT subject, whatever their orders. The two
	// are apart so that a widely shared tracking link cannot lock its
	// owner out of their own order, nor use up the owner's allowance.
	MaxPerOrder, MaxPerCustomer int
	// MaxPerClient [200] caps the connections of one client address
	// (Watch.Client), whatever their credentials: one host cannot hold a
	// replica's sockets by minting tracking links or spreading over
	// orders.
	MaxPerClient int
	// MaxPerReplica [19500] caps the connections of this replica. Each
	// holds a socket, and a process here may open at most 20,000 files
	// (the hard limit, which Go raises the soft one to); the other 500
	// are headroom for what must keep working at the cap: the database
	// pool and the status listener's connection, the broker's, the
	// listening sockets, the certificate files on reload, /readyz and
	// /metrics requests, and the requests being refused. Running out of
	// descriptors fails accept(2) for everyone, probes included, rather
	// than refusing the one connection too many.
	MaxPerReplica int
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
	// Tracer traces the delivery of each status that carries a trace
	// context (see delivery); nil traces nothing.
	Tracer trace.Tracer
}

// Hub holds the live connections of this replica, by order.
type Hub struct {
	o Options
	m metrics

	mu      sync.Mutex
	orders  map[string][]*conn
	viewers map[string]int // tracking-link connections, by order
	perSub  map[string]int // JWT connections, by subject
	perAddr map[string]int // all connections, by client address
	conns   map[*conn]struct{}
	topics  map[string]*message // the latest message of each topic, for a new follower's snapshot
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
	def(&o.MaxPerClient, 200)
	def(&o.MaxPerReplica, 19500)
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
	if o.Tracer == nil {
		o.Tracer = tracenoop.NewTracerProvider().Tracer("")
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
		viewers: map[string]int{},
		perSub:  map[string]int{},
		perAddr: map[string]int{},
		conns:   map[*conn]struct{}{},
		topics:  map[string]*message{},
		drained: make(chan struct{}),
	}, nil
}

// Watch is one client's request to follow an order.
type Watch struct {
	// OrderID is the order to follow (a canonical UUID).
	OrderID string
	// Topic, instead of an order, is a topic to follow (the operators'
	// dashboard): its messages are whole snapshots published with
	// PublishTopic, each replacing the one before, so a connection sends
	// the latest on connect and then every newer one, and skips any it
	// fell behind on rather than filling gaps.
	Topic string
	// Subject is the sub of the JWT that authenticated the connection
	// (the order's customer, or an admin), counted for MaxPerCustomer.
	// Empty means a tracking-link viewer, counted for MaxPerOrder.
	Subject string
	// Client is the caller's address (httpx.CallerKey), counted for
	// MaxPerClient; empty is not counted (callers that cannot tell).
	Client string
	// Since is the last seq the client has; the snapshot is every status
	// after it. Negative means the client has nothing: the snapshot is
	// the current status alone.
	Since int64
}

// Stats counts the open connections of this replica.
type Stats struct {
	WebSocket, SSE int
	// Viewers, Owners and Clients are what the caps count: the sums of
	// the per-order (tracking link), per-subject (JWT) and per-address
	// counters. Keys is how many such counters exist. Each is 0 once
	// every connection is gone; anything else is a leak that would
	// eventually refuse callers with nothing open.
	Viewers, Owners, Clients, Keys int
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
	for _, n := range h.viewers {
		s.Viewers += n
	}
	for _, n := range h.perSub {
		s.Owners += n
	}
	for _, n := range h.perAddr {
		s.Clients += n
	}
	s.Keys = len(h.viewers) + len(h.perSub) + len(h.perAddr)
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
	m.trace = startDelivery(h.o.Tracer, c, len(targets), h.o.GapWait+h.o.WriteTimeout)
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
		if !isTopicKey(id) {
			out = append(out, id)
		}
	}
	return out
}

// topicKey is where a topic's connections are kept among the orders'; no
// order id (a UUID) has a colon.
func topicKey(topic string) string { return "topic:" + topic }

func isTopicKey(k string) bool { return len(k) > 6 && k[:6] == "topic:" }

// Watching reports whether topic has a follower on this replica, so that
// its publisher can skip building messages nobody would get.
func (h *Hub) Watching(topic string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.orders[topicKey(topic)]) > 0
}

// PublishTopic hands body (one JSON message, the topic's whole state),
// numbered seq, to every follower of topic on this replica, and keeps it
// as what a new follower gets first. seq must grow from one call to the
// next; a follower still sending an older message sends only the newest
// it has queued. It never blocks on a client.
func (h *Hub) PublishTopic(topic string, seq int64, body []byte) {
	m := newTopicMessage(seq, body)
	key := topicKey(topic)
	h.mu.Lock()
	h.topics[key] = m
	targets := slices.Clone(h.orders[key])
	h.mu.Unlock()
	for _, t := range targets {
		t.offer(item{msg: m})
	}
}

// subscribe registers a connection for w before anything is written to
// the client, so that it misses no change published from now on.
//
// The caps are checked from the narrowest group to the widest: the
// credential's own (the tracking link's viewers, or the JWT subject's
// connections), then the client address, then the replica. So a refusal
// names the smallest thing that is full, which is the one the caller can
// do something about, and a 503 (try another replica; some load balancers
// do so by themselves) goes only to a caller within its own caps: one over
// them gets its 429 whether or not the replica is full, and is not
// bounced around the replicas.
func (h *Hub) subscribe(w Watch, tr transport) (*conn, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	viewer := w.Subject == ""
	key := w.OrderID
	if w.Topic != "" {
		key = topicKey(w.Topic)
	}
	switch {
	case h.closing:
		return nil, ErrShuttingDown
	case viewer && h.viewers[key] >= h.o.MaxPerOrder:
		h.m.refused(tr, refusedOrder)
		return nil, ErrTooManyForOrder
	case !viewer && h.perSub[w.Subject] >= h.o.MaxPerCustomer:
		h.m.refused(tr, refusedCustomer)
		return nil, ErrTooManyForCustomer
	case w.Client != "" && h.perAddr[w.Client] >= h.o.MaxPerClient:
		h.m.refused(tr, refusedClient)
		return nil, ErrTooManyForClient
	case len(h.conns) >= h.o.MaxPerReplica:
		h.m.refused(tr, refusedReplica)
		return nil, ErrReplicaFull
	}
	now := time.Now().UnixNano()
	c := &conn{hub: h, order: key, subject: w.Subject, client: w.Client, tr: tr, last: max(w.Since, 0)}
	c.lastRead.Store(now)
	c.lastWrite.Store(now)
	if tr == transportSSE {
		c.kick = make(chan struct{}, 1)
	}
	h.orders[key] = append(h.orders[key], c)
	if viewer {
		h.viewers[key]++
	} else {
		h.perSub[w.Subject]++
	}
	if w.Client != "" {
		h.perAddr[w.Client]++
	}
	h.conns[c] = struct{}{}
	h.m.opened(tr, 1)
	return c, nil
}

// remove forgets c and gives back what it counted against the caps. Every
// way a connection ends (the client leaves or is too slow, a failed
// upgrade or write, a terminal status, shutdown) goes through abort, which
// calls it; it does nothing the second time.
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
	if c.subject == "" {
		release(h.viewers, c.order)
	} else {
		release(h.perSub, c.subject)
	}
	if c.client != "" {
		release(h.perAddr, c.client)
	}
	h.m.opened(c.tr, -1)
	if h.closing && len(h.conns) == 0 {
		close(h.drained)
	}
}

// release takes one from m[k], deleting the key at zero so that the maps
// hold only what is open (a replica sees millions of orders and addresses
// over its life).
func release(m map[string]int, k string) {
	if m[k]--; m[k] <= 0 {
		delete(m, k)
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
	if w.Topic != "" {
		c.hub.mu.Lock()
		m := c.hub.topics[topicKey(w.Topic)]
		c.hub.mu.Unlock()
		if m == nil {
			return nil, nil // the first is on its way
		}
		return []*message{m}, nil
	}
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
