package live

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gobwas/ws"
)

// maxClientMessage bounds what a client may send us in one data frame; the
// protocol has nothing for clients to say, so anything big is abuse.
const maxClientMessage = 4 << 10

// CheckWebSocket returns an error wrapping ErrNotWebSocket when r is not a
// WebSocket handshake that the server could accept, so the refusal can be
// a problem response rather than a bare status after the connection was
// taken over.
func CheckWebSocket(r *http.Request) error {
	h := r.Header
	switch {
	case r.Method != http.MethodGet:
		return fmt.Errorf("%w: method %s", ErrNotWebSocket, r.Method)
	case r.ProtoMajor != 1 || r.ProtoMinor < 1:
		return fmt.Errorf("%w: needs HTTP/1.1", ErrNotWebSocket)
	case !headerHasToken(h, "Connection", "upgrade"):
		return fmt.Errorf("%w: Connection header lacks upgrade", ErrNotWebSocket)
	case !headerHasToken(h, "Upgrade", "websocket"):
		return fmt.Errorf("%w: Upgrade header is not websocket", ErrNotWebSocket)
	case len(h.Get("Sec-WebSocket-Key")) != 24:
		return fmt.Errorf("%w: bad Sec-WebSocket-Key", ErrNotWebSocket)
	case h.Get("Sec-WebSocket-Version") != "13":
		return fmt.Errorf("%w: Sec-WebSocket-Version must be 13", ErrNotWebSocket)
	}
	return nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// ServeWS follows w over a WebSocket on r. It returns an error, having
// written nothing, when the connection is refused: ErrNotWebSocket,
// ErrTooManyForOrder, ErrTooManyForCustomer, ErrTooManyForClient,
// ErrReplicaFull or ErrShuttingDown. Otherwise
// it takes the connection over, sends the snapshot and returns nil; later
// changes are sent from other goroutines until the order is finished, the
// client leaves, or the hub shuts down. Authenticate and check the Origin
// before calling it.
func (h *Hub) ServeWS(rw http.ResponseWriter, r *http.Request, w Watch) error {
	if err := CheckWebSocket(r); err != nil {
		return err
	}
	c, err := h.subscribe(w, transportWS)
	if err != nil {
		return err
	}
	nc, brw, _, err := ws.HTTPUpgrader{Timeout: h.o.WriteTimeout}.Upgrade(r, rw)
	if err != nil {
		h.o.Log.InfoContext(r.Context(), "websocket upgrade failed", "order_id", w.OrderID, "err", err)
		if nc != nil {
			_ = nc.Close()
		}
		c.abort()
		return nil
	}
	// The client may not send frames before it has our handshake
	// response; anything buffered is a protocol error. Dropping brw here
	// frees the server's 4 KiB read and write buffers.
	early := brw.Reader.Buffered() > 0
	if tc, ok := nc.(interface{ SetWriteBuffer(int) error }); ok {
		_ = tc.SetWriteBuffer(h.o.SocketSendBuffer)
	}
	c.mu.Lock()
	c.nc = nc
	c.mu.Unlock()
	if early {
		c.requestClose(closeProtocolError)
	}

	msgs, err := c.snapshot(r.Context(), w)
	if err != nil {
		h.o.Log.ErrorContext(r.Context(), "websocket snapshot failed", "order_id", w.OrderID, "err", err)
		c.requestClose(closeInternalError)
	}
	for _, m := range msgs {
		if c.closing() {
			break
		}
		if err := c.write(m.frame); err != nil {
			c.abort()
			return nil
		}
		c.sent(m)
	}
	go c.readLoop()
	c.goLive()
	// This goroutine is still the writer: send what arrived meanwhile.
	c.writeLoop()
	return nil
}

// goLive marks the snapshot out: from now on offer wakes a writer.
func (c *conn) goLive() {
	c.mu.Lock()
	c.fire(evLive)
	c.mu.Unlock()
}

// ping writes a heartbeat ping, as the writer, when the connection is idle:
// a running writer's writes keep the connection alive as well. It then
// sends whatever was queued meanwhile.
func (c *conn) ping() {
	c.mu.Lock()
	act := c.fire(evPing)
	c.mu.Unlock()
	if act != actWake {
		return
	}
	// Noted before the write, so that an answer can never look older.
	c.pingedAt.Store(time.Now().UnixNano())
	if err := c.write(pingFrame); err != nil {
		c.hub.o.Log.Debug("websocket ping failed", "order_id", c.order, "err", err)
		c.abort()
		return
	}
	c.writeLoop()
}

// closing reports whether a close was asked for.
func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.closing()
}

// write sends one frame within the write timeout.
func (c *conn) write(frame []byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.hub.o.WriteTimeout))
	_, err := c.nc.Write(frame)
	c.lastWrite.Store(time.Now().UnixNano())
	return err
}

// writeLoop sends the queue until it is empty, then returns: an idle
// connection has no writer goroutine.
func (c *conn) writeLoop() {
	for {
		it, ok := c.pop()
		if !ok {
			return
		}
		var err error
		switch it.kind {
		case kindClose:
			c.finish(it.code, it.cut)
			return
		case kindPong:
			err = c.write(serverFrame(ws.OpPong, it.payload))
		default:
			for _, m := range c.statuses(it.msg) {
				if err = c.write(m.frame); err != nil {
					break
				}
				c.sent(m)
			}
		}
		if err != nil {
			c.hub.o.Log.Debug("websocket write failed", "order_id", c.order, "err", err)
			c.abort()
			return
		}
	}
}

// finish sends the close frame. When the reader is done (cut: the client
// closed first, or broke the protocol) it then cuts the connection;
// otherwise it half-closes and leaves the reader CloseWait to receive the
// client's answer, so that no unread data makes the kernel reset the
// connection before the client has read our close. A reader that stops
// after pop handed out the close finds the state closed and cuts the
// connection itself.
func (c *conn) finish(code ws.StatusCode, cut bool) {
	if err := c.write(closeFrames[code]); err != nil || cut {
		c.abort()
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(c.hub.o.CloseWait))
	if tc, ok := c.nc.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
	}
}

// readLoop reads the client's frames: pings are answered, a close is
// answered and ends the connection, data is ignored. When the client
// leaves, or the read deadline set after our close passes, it cuts the
// connection.
func (c *conn) readLoop() {
	var hdr [ws.MaxHeaderSize - 2]byte
	for {
		h, err := ws.ReadHeaderBuffer(c.nc, hdr[:])
		if err != nil {
			c.abort()
			return
		}
		c.lastRead.Store(time.Now().UnixNano())
		if !h.Masked || h.Rsv != 0 || (h.OpCode.IsControl() && (h.Length > 125 || !h.Fin)) || h.OpCode.IsReserved() {
			c.handOver(closeProtocolError)
			return
		}
		if !h.OpCode.IsControl() {
			if h.Length > maxClientMessage {
				c.handOver(closeTooBig)
				return
			}
			if _, err := io.CopyN(io.Discard, c.nc, h.Length); err != nil {
				c.abort()
				return
			}
			continue
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.nc, payload); err != nil {
			c.abort()
			return
		}
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing:
			c.offer(item{kind: kindPong, payload: payload})
		case ws.OpClose:
			code := closeNormal
			if len(payload) >= 2 {
				if got := ws.StatusCode(binary.BigEndian.Uint16(payload)); closeFrames[got] != nil {
					code = got
				}
			}
			c.handOver(code)
			return
		}
	}
}

// handOver ends the reader: the writer sends a close with code (unless a
// close is already on its way) and then cuts the connection. If our close
// went out already, this was the client's answer and the connection is
// cut now.
func (c *conn) handOver(code ws.StatusCode) {
	c.mu.Lock()
	act := c.closeLocked(code)
	// Under the same lock as the close: the writer, when it takes the
	// close, must know whether to wait for an answer.
	if c.fire(evReaderDone) == actCut {
		act = actCut
	}
	c.mu.Unlock()
	switch act {
	case actCut:
		c.abort()
	case actWake:
		c.wake()
	}
}

// serverFrame encodes one unmasked, unfragmented frame.
func serverFrame(op ws.OpCode, payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n <= 125:
		b = make([]byte, 2, 2+n)
		b[1] = byte(n)
	case n <= 0xffff:
		b = make([]byte, 4, 4+n)
		b[1] = 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	default:
		b = make([]byte, 10, 10+n)
		b[1] = 127
		binary.BigEndian.PutUint64(b[2:], uint64(n))
	}
	b[0] = 0x80 | byte(op)
	return append(b, payload...)
}

var pingFrame = serverFrame(ws.OpPing, nil)

// closeFrames are the close frames the hub may send, and the codes it
// echoes back to a client; other codes are answered with 1000.
var closeFrames = func() map[ws.StatusCode][]byte {
	m := map[ws.StatusCode][]byte{}
	for _, code := range []ws.StatusCode{
		closeNormal, ws.StatusGoingAway, closeProtocolError, ws.StatusUnsupportedData,
		ws.StatusInvalidFramePayloadData, ws.StatusPolicyViolation, closeTooBig,
		closeInternalError, closeServiceRestart, closeTryAgainLater,
	} {
		m[code] = serverFrame(ws.OpClose, ws.NewCloseFrameBody(code, ""))
	}
	return m
}()
