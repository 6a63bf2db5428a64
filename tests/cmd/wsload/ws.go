package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // RFC 6455 fixes SHA-1 for Sec-WebSocket-Accept
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// A minimal RFC 6455 client: just what a load generator that holds many
// idle connections needs (handshake, unmasked server frames, fragmented
// messages, ping → pong, close handshake), and nothing it does not (no
// compression, no subprotocols). Writing it here rather than using a library
// keeps the client's own memory per connection small and predictable, and
// lets it bind each connection to a chosen source address.

// WebSocket opcodes.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// maxMessage bounds one message (all its fragments): a status message is a
// few hundred bytes, so anything near this is a broken server.
const maxMessage = 1 << 20

// acceptGUID is the magic value of RFC 6455 section 1.3.
const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey returns the Sec-WebSocket-Accept value for key.
func acceptKey(key string) string {
	h := sha1.New() //nolint:gosec // required by RFC 6455
	h.Write([]byte(key + acceptGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// HandshakeError is a refused upgrade: the server answered with something
// other than 101.
type HandshakeError struct {
	Status int
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("websocket: handshake refused with HTTP %d", e.Status)
}

// CloseError is the server's close frame.
type CloseError struct {
	Code   int // 1005 when the frame had no code
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: closed by server with %d %q", e.Code, e.Reason)
}

// Conn is one client WebSocket connection. Read must be called from one
// goroutine only; Close may be called from any.
type Conn struct {
	c  net.Conn
	br *bufio.Reader

	wmu    sync.Mutex // serializes frame writes (pongs from Read, Close)
	closed bool       // a close frame was sent; guarded by wmu

	// OnPing, when set, is called for every ping received (before the
	// pong is sent).
	OnPing func()
}

// Dial opens a WebSocket connection to rawURL ("ws://host:port/path?query"),
// from local (nil: any) and with origin as the Origin header ("" for none),
// and completes the handshake before ctx ends. bufSize is the read buffer.
func Dial(ctx context.Context, d *net.Dialer, rawURL, origin string, bufSize int) (*Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("websocket: scheme %q not supported (only ws)", u.Scheme)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	nc, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	c, err := handshake(ctx, nc, u, origin, bufSize)
	if err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, nc net.Conn, u *url.URL, origin string, bufSize int) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// Unblock a handshake stuck in a read when ctx is cancelled early.
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var b strings.Builder
	b.WriteString("GET " + u.RequestURI() + " HTTP/1.1\r\n")
	b.WriteString("Host: " + u.Host + "\r\n")
	b.WriteString("Upgrade: websocket\r\nConnection: Upgrade\r\n")
	b.WriteString("Sec-WebSocket-Key: " + key + "\r\n")
	b.WriteString("Sec-WebSocket-Version: 13\r\n")
	if origin != "" {
		b.WriteString("Origin: " + origin + "\r\n")
	}
	b.WriteString("User-Agent: orderly-wsload\r\n\r\n")
	if _, err := io.WriteString(nc, b.String()); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(nc, bufSize)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet, URL: u})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = resp.Body.Close()
		return nil, &HandshakeError{Status: resp.StatusCode}
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
		!headerHasToken(resp.Header, "Connection", "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") != acceptKey(key) {
		return nil, errors.New("websocket: bad 101 response (Upgrade, Connection or Sec-WebSocket-Accept)")
	}
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
		return nil, fmt.Errorf("websocket: server chose extension %q that was not offered", ext)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	_ = nc.SetDeadline(time.Time{})
	return &Conn{c: nc, br: br}, nil
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Read returns the next data message (text or binary), answering pings and
// assembling fragments on the way. A close frame from the server is answered
// and returned as *CloseError; any other error is the connection's.
func (c *Conn) Read() (opcode byte, payload []byte, err error) {
	var msg []byte
	var msgOp byte
	inMessage := false
	for {
		fin, op, data, err := c.readFrame()
		if err != nil {
			return 0, nil, err
		}
		switch op {
		case opPing:
			if c.OnPing != nil {
				c.OnPing()
			}
			if err := c.write(opPong, data); err != nil {
				return 0, nil, err
			}
		case opPong:
			// unsolicited or answering nothing we sent: ignore
		case opClose:
			ce := &CloseError{Code: 1005}
			if len(data) >= 2 {
				ce.Code = int(binary.BigEndian.Uint16(data))
				ce.Reason = string(data[2:])
			}
			// Echo the code (RFC 6455 5.5.1); the server closes the TCP
			// connection after that.
			echo := data
			if len(echo) > 2 {
				echo = echo[:2]
			}
			_ = c.write(opClose, echo)
			return 0, nil, ce
		case opText, opBinary:
			if inMessage {
				return 0, nil, errors.New("websocket: new message inside a fragmented one")
			}
			if fin {
				return op, data, nil
			}
			msgOp, msg, inMessage = op, append(msg[:0], data...), true
		case opContinuation:
			if !inMessage {
				return 0, nil, errors.New("websocket: continuation frame outside a message")
			}
			if len(msg)+len(data) > maxMessage {
				return 0, nil, errors.New("websocket: message too large")
			}
			msg = append(msg, data...)
			if fin {
				return msgOp, msg, nil
			}
		default:
			return 0, nil, fmt.Errorf("websocket: unknown opcode %#x", op)
		}
	}
}

// readFrame reads one frame and returns its payload, unmasked.
func (c *Conn) readFrame() (fin bool, op byte, payload []byte, err error) {
	var hdr [8]byte
	if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
		return false, 0, nil, err
	}
	fin, op = hdr[0]&0x80 != 0, hdr[0]&0x0f
	if hdr[0]&0x70 != 0 {
		return false, 0, nil, errors.New("websocket: reserved bits set (no extension was negotiated)")
	}
	masked := hdr[1]&0x80 != 0
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		if _, err := io.ReadFull(c.br, hdr[:2]); err != nil {
			return false, 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(hdr[:2]))
	case 127:
		if _, err := io.ReadFull(c.br, hdr[:8]); err != nil {
			return false, 0, nil, err
		}
		n = binary.BigEndian.Uint64(hdr[:8])
	}
	if op >= opClose && (n > 125 || !fin) {
		return false, 0, nil, errors.New("websocket: malformed control frame")
	}
	if n > maxMessage {
		return false, 0, nil, fmt.Errorf("websocket: frame of %d bytes is too large", n)
	}
	var mask [4]byte
	if masked { // servers must not mask, but decoding costs nothing
		if _, err := io.ReadFull(c.br, mask[:]); err != nil {
			return false, 0, nil, err
		}
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(c.br, payload); err != nil {
		return false, 0, nil, err
	}
	if masked {
		for i := range payload {
			payload[i] ^= mask[i&3]
		}
	}
	return fin, op, payload, nil
}

// write sends one masked frame with FIN set. Nothing is written after a
// close frame.
func (c *Conn) write(op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return nil
	}
	if op == opClose {
		c.closed = true
	}
	frame := make([]byte, 0, 14+len(payload))
	frame = append(frame, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		frame = append(frame, 0x80|byte(n))
	case n <= 0xffff:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(n))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(n))
	}
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i&3])
	}
	_ = c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.c.Write(frame)
	return err
}

// Close sends a close frame with code (unless one was sent already) and
// closes the TCP connection without waiting for the server's answer: a
// load generator shutting down thousands of connections does not linger.
func (c *Conn) Close(code int) error {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code)) //nolint:gosec // close codes fit in 16 bits
	werr := c.write(opClose, p[:])
	if err := c.c.Close(); err != nil {
		return err
	}
	return werr
}
