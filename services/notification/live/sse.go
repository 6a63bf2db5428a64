package live

import (
	"net/http"
	"strconv"
	"time"

	"github.com/orderly/orderly/pkg/httpx"
)

// sseSink writes an event stream, each write bounded by the write timeout.
type sseSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (s *sseSink) write(b []byte) error {
	_ = s.rc.SetWriteDeadline(time.Now().Add(s.timeout))
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

var sseKeepAlive = []byte(": keep-alive\n\n")

// ServeSSE follows w as a Server-Sent Events stream on r: "retry:" first,
// then the snapshot, then every change, each event with "id:" set to its
// seq, and a comment line when nothing was sent for SSEHeartbeat. It
// returns an error, having written nothing, when the connection is
// refused (ErrTooManyForOrder, ErrTooManyForCustomer, ErrTooManyForClient,
// ErrReplicaFull, ErrShuttingDown).
// Otherwise it returns nil once the stream has ended: after a terminal
// status, when the client left or was too slow, or on shutdown.
// Authenticate and check the Origin before calling it.
func (h *Hub) ServeSSE(rw http.ResponseWriter, r *http.Request, w Watch) error {
	c, err := h.subscribe(w, transportSSE)
	if err != nil {
		return err
	}
	defer c.abort()
	// The stream stays open for as long as the order is worth watching;
	// each write gets its own deadline instead.
	if err := httpx.DisableDeadlines(rw); err != nil {
		h.o.Log.WarnContext(r.Context(), "event stream without deadline control", "err", err)
	}
	sink := &sseSink{w: rw, rc: http.NewResponseController(rw), timeout: h.o.WriteTimeout}
	c.sse = sink
	hd := rw.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no") // no proxy buffering (nginx)
	hd.Set("X-Content-Type-Options", "nosniff")
	rw.WriteHeader(http.StatusOK)
	if err := sink.write([]byte("retry: " + strconv.FormatInt(h.o.SSERetry.Milliseconds(), 10) + "\n\n")); err != nil {
		return nil
	}

	msgs, err := c.snapshot(r.Context(), w)
	if err != nil {
		h.o.Log.ErrorContext(r.Context(), "event stream snapshot failed", "order_id", w.OrderID, "err", err)
		return nil // the client reconnects after retry
	}
	for _, m := range msgs {
		if c.closing() {
			break
		}
		if err := sink.write(m.event); err != nil {
			return nil
		}
		c.sent(m)
	}
	c.goLive()

	keepAlive := time.NewTicker(h.o.SSEHeartbeat)
	defer keepAlive.Stop()
	for {
		if done := c.drainSSE(); done {
			return nil
		}
		select {
		case <-c.kick:
		case <-keepAlive.C:
			if time.Since(time.Unix(0, c.lastWrite.Load())) >= h.o.SSEHeartbeat/2 {
				if sink.write(sseKeepAlive) != nil {
					return nil
				}
				c.lastWrite.Store(time.Now().UnixNano())
			}
		case <-r.Context().Done():
			return nil
		}
	}
}

// drainSSE writes the queue; done means the stream must end (a close was
// asked for, or a write failed).
func (c *conn) drainSSE() (done bool) {
	for {
		it, ok := c.pop()
		switch {
		case !ok:
			c.mu.Lock()
			done = c.st.over()
			c.mu.Unlock()
			return done
		case it.kind == kindClose:
			return true
		case it.kind != kindStatus:
			continue // control frames are WebSocket-only
		}
		for _, m := range c.statuses(it.msg) {
			if err := c.sse.write(m.event); err != nil {
				return true
			}
			c.lastWrite.Store(time.Now().UnixNano())
			c.sent(m)
		}
	}
}
