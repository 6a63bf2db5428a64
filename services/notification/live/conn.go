package live

import (
	"context"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/orderly/orderly/services/notification/status"
)

// transport is how a connection talks to its client.
type transport uint8

const (
	transportWS transport = iota
	transportSSE
)

func (t transport) String() string {
	if t == transportWS {
		return "websocket"
	}
	return "sse"
}

// WebSocket close codes the hub sends (RFC 6455, section 7.4, and the
// IANA registry).
const (
	closeNormal         = ws.StatusNormalClosure       // 1000: the order is finished
	closeProtocolError  = ws.StatusProtocolError       // 1002
	closeTooBig         = ws.StatusMessageTooBig       // 1009
	closeInternalError  = ws.StatusInternalServerError // 1011: the snapshot could not be read
	closeServiceRestart = ws.StatusCode(1012)          // this replica is going away
	closeTryAgainLater  = ws.StatusCode(1013)          // the client is too slow, or its statuses cannot be read
)

// message is one status, encoded once for every connection that sends it.
type message struct {
	seq      int64
	at       time.Time
	terminal bool
	live     bool   // from Publish, rather than a database read
	topic    bool   // a topic's snapshot (PublishTopic): never gap-filled, nor counted as a status
	frame    []byte // the WebSocket text frame
	event    []byte // the Server-Sent Events event
	trace    *delivery
}

func newMessage(c status.Change, live bool) *message {
	body := c.Message()
	ev := make([]byte, 0, len(body)+32)
	ev = append(ev, "id: "...)
	ev = strconv.AppendInt(ev, c.Seq, 10)
	ev = append(ev, "\ndata: "...)
	ev = append(ev, body...)
	ev = append(ev, "\n\n"...)
	return &message{seq: c.Seq, at: c.At, terminal: c.Terminal(), live: live, frame: serverFrame(ws.OpText, body), event: ev}
}

// newTopicMessage is one message of a topic, numbered seq.
func newTopicMessage(seq int64, body []byte) *message {
	ev := make([]byte, 0, len(body)+32)
	ev = append(ev, "id: "...)
	ev = strconv.AppendInt(ev, seq, 10)
	ev = append(ev, "\ndata: "...)
	ev = append(ev, body...)
	ev = append(ev, "\n\n"...)
	return &message{seq: seq, at: time.Now(), topic: true, frame: serverFrame(ws.OpText, body), event: ev}
}

// item is one entry of a connection's send queue: a status, or (WebSocket
// only) the answer to a client's ping. pop also hands the writer the close
// as an item, so that the writer has one thing to ask for.
type item struct {
	msg     *message
	kind    itemKind
	cut     bool          // of a close: the reader is done, so no answer will come
	code    ws.StatusCode // of a close
	payload []byte        // of a pong
}

type itemKind uint8

const (
	kindStatus itemKind = iota
	kindPong
	kindClose
)

// conn is one client watching one order. Its send queue is filled by
// Publish (and pongs by the reader), and emptied by one writer at a time: for a
// WebSocket a goroutine started when there is something to send, for an
// event stream the request's own goroutine. Who holds the writer role, and
// how far the close has got, is its state (state.go).
type conn struct {
	hub     *Hub
	order   string
	subject string // Watch.Subject: empty for a tracking-link viewer
	client  string // Watch.Client
	tr      transport

	nc   net.Conn      // WebSocket: the hijacked connection
	sse  *sseSink      // event stream: the response
	kick chan struct{} // event stream: wakes the request's goroutine

	lastRead  atomic.Int64 // unix nanoseconds of the client's last frame
	lastWrite atomic.Int64 // unix nanoseconds of our last write
	pingedAt  atomic.Int64 // unix nanoseconds of our last ping

	mu        sync.Mutex
	queue     []item
	last      int64         // highest seq sent (or, before the snapshot, the client's since)
	closeCode ws.StatusCode // the close asked for first, once st is closing
	st        state         // the zero value, stateSnapshot, is where a conn starts
}

// fire moves c to its state after e and returns what the caller must do.
// c.mu must be held.
func (c *conn) fire(e event) action {
	next, act := transition(c.st, e)
	c.st = next
	return act
}

// offer queues it and wakes the writer. A full queue closes the connection
// with 1013 instead: the client is too slow, and will resume with since.
// A status at or below the last seq sent is dropped at once (pop would drop
// it anyway): a resync publishes the latest status of every watched order,
// which most connections have sent, and waking a writer goroutine for each
// of thousands of them would be work for nothing.
func (c *conn) offer(it item) {
	c.mu.Lock()
	if it.msg != nil && it.msg.seq <= c.last {
		c.mu.Unlock()
		it.msg.trace.release()
		return
	}
	// A topic's message replaces one of the topic still waiting: each
	// is the whole state, so a client that falls behind skips to the
	// newest rather than filling its queue.
	if n := len(c.queue); it.msg != nil && it.msg.topic && n > 0 && c.queue[n-1].msg != nil && c.queue[n-1].msg.topic && !c.st.closing() {
		c.queue[n-1] = it
		c.mu.Unlock()
		return
	}
	// Decided under the lock, so that an overflow is counted once.
	overflow := len(c.queue) >= c.hub.o.SendQueue
	var act action
	if overflow {
		act = c.closeLocked(closeTryAgainLater)
	} else if act = c.fire(evQueue); act != actDrop {
		c.queue = append(c.queue, it)
	}
	c.mu.Unlock()
	if (act == actDrop || overflow) && it.msg != nil {
		it.msg.trace.release()
	}
	if act == actDrop {
		return
	}
	if overflow {
		c.hub.m.dropped(c.tr)
		c.hub.o.Log.Info("client too slow for its send queue; closing", "order_id", c.order, "transport", c.tr.String(), "queue", c.hub.o.SendQueue)
	}
	if act == actWake {
		c.wake()
	}
}

// requestClose asks for the connection to close with code, dropping what
// is still queued.
func (c *conn) requestClose(code ws.StatusCode) {
	c.mu.Lock()
	act := c.closeLocked(code)
	c.mu.Unlock()
	if act == actWake {
		c.wake()
	}
}

// closeLocked fires evClose and, unless a close was asked for already
// (whose code stands), records code and drops the queue: the client will
// resume from what it got.
func (c *conn) closeLocked(code ws.StatusCode) action {
	act := c.fire(evClose)
	if act != actDrop {
		c.closeCode, c.queue = code, nil
	}
	return act
}

// wake provides the writer that actWake asks for.
func (c *conn) wake() {
	if c.tr == transportSSE {
		select {
		case c.kick <- struct{}{}:
		default:
		}
		return
	}
	go c.writeLoop()
}

// pop returns the writer's next item: the close, once one was asked for,
// or else the next in the queue, skipping statuses at or below the last seq
// sent. ok is false when there is nothing to write: the queue is empty (the
// writer has given its role up) or the close went out already. A WebSocket
// writer then stops.
func (c *conn) pop() (it item, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		ev := evNext
		if len(c.queue) == 0 {
			ev = evEmpty
		}
		switch c.fire(ev) {
		case actDrop:
			return item{}, false
		case actClose:
			return item{kind: kindClose, code: c.closeCode}, true
		case actCloseCut:
			return item{kind: kindClose, code: c.closeCode, cut: true}, true
		}
		if ev == evEmpty {
			c.queue = nil // an idle connection holds no queue
			return item{}, false
		}
		it = c.queue[0]
		c.queue[0] = item{}
		c.queue = c.queue[1:]
		if it.msg != nil && it.msg.seq <= c.last {
			it.msg.trace.release()
			continue // already sent, by the snapshot or another path
		}
		return it, true
	}
}

// lastSent returns the highest seq sent.
func (c *conn) lastSent() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// sent records that m went out; after a terminal status it asks for the
// normal close.
func (c *conn) sent(m *message) {
	c.mu.Lock()
	c.last = max(c.last, m.seq)
	c.mu.Unlock()
	c.hub.m.sent(c.tr, m)
	m.trace.sent(c.tr)
	if m.terminal {
		c.requestClose(closeNormal)
	}
}

// statuses returns what to send for m: m itself, preceded by the stored
// statuses between the last one sent and m when m skips some (stored by
// another replica first, or written late after a failure).
func (c *conn) statuses(m *message) []*message {
	last := c.lastSent()
	if m.topic || m.seq <= last+1 {
		return []*message{m}
	}
	gap, err := c.fill(last, m.seq)
	if err != nil {
		// Sending m would lose the statuses in between for good: a
		// connection never goes back to a lower seq. Closing with 1013
		// has the client resume with since, and the new connection's
		// snapshot reads the gap once the database answers again.
		c.hub.o.Log.Warn("could not read a gap in an order's statuses; asking the client to resume", "order_id", c.order, "after", last, "before", m.seq, "err", err)
		c.requestClose(closeTryAgainLater)
		return nil
	}
	return append(gap, m)
}

// gapPoll is how often fill looks for statuses that are not stored yet.
const gapPoll = 250 * time.Millisecond

// fill returns the stored statuses after last and, when before is
// positive, below before. A seq missing in between is not stored yet (its
// write failed and is being retried): fill waits for it, reading again
// every gapPoll for up to GapWait, because whatever is sent after it would
// lose it for good — a connection never goes back to a lower seq. A read
// that fails (the database restarting) is tried again the same way. After
// GapWait, or when the connection is closing, it returns what it has, or
// the last read's error.
func (c *conn) fill(last, before int64) ([]*message, error) {
	deadline := time.Now().Add(c.hub.o.GapWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), c.hub.o.WriteTimeout)
		got, err := c.hub.feed(ctx, c.order, last, before)
		cancel()
		if err == nil && complete(got, last, before) {
			return got, nil
		}
		if time.Now().After(deadline) || c.closing() {
			if err != nil {
				return nil, err
			}
			c.hub.o.Log.Warn("statuses of an order missing; sending what is stored", "order_id", c.order,
				"after", last, "before", before, "stored", len(got), "waited", c.hub.o.GapWait.String())
			return got, nil
		}
		time.Sleep(gapPoll) // polls the feed for a status still being written
	}
}

// complete reports whether ms are the statuses last+1, last+2, … with no
// seq missing and, when before is positive, up to before-1.
func complete(ms []*message, last, before int64) bool {
	for i, m := range ms {
		if m.seq != last+1+int64(i) {
			return false
		}
	}
	return before <= 0 || last+int64(len(ms)) == before-1
}

// abort cuts the connection without ceremony and forgets it.
func (c *conn) abort() {
	c.mu.Lock()
	if c.fire(evAbort) == actDrop {
		c.mu.Unlock()
		return
	}
	c.queue = nil
	nc := c.nc
	c.mu.Unlock()
	if nc != nil {
		_ = nc.Close()
	}
	c.hub.remove(c)
}
