package tlstest

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Terminator is a TLS-terminating proxy in front of a server that speaks no
// TLS, such as the local broker: it ends TLS on a loopback port and pipes
// the plaintext to its target.
type Terminator struct {
	// Addr is the address to dial, "127.0.0.1:port".
	Addr string

	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	stopped bool
	wg      sync.WaitGroup
}

// Terminate starts a Terminator ending TLS with cfg (its certificate, and
// ClientAuth and ClientCAs to demand a client certificate) in front of
// target. It stops, with every connection through it, when tb ends.
func Terminate(tb testing.TB, target string, cfg *tls.Config) *Terminator {
	tb.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		tb.Fatalf("tlstest: listen: %v", err)
	}
	t := &Terminator{Addr: ln.Addr().String(), ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.wg.Go(t.accept)
	tb.Cleanup(func() {
		_ = ln.Close()
		t.mu.Lock()
		t.stopped = true
		t.mu.Unlock()
		t.Drop()
		t.wg.Wait()
	})
	return t
}

// Drop closes every connection open through the terminator, as a network
// failure would; it keeps accepting new ones.
func (t *Terminator) Drop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		_ = c.Close()
	}
}

func (t *Terminator) accept() {
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.wg.Go(func() { t.pipe(c.(*tls.Conn)) })
	}
}

// pipe copies between c, once its handshake is done, and a new connection
// to the target, until either side closes.
func (t *Terminator) pipe(c *tls.Conn) {
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return // the client sees the failure; nothing reaches the target
	}
	var d net.Dialer
	b, err := d.DialContext(ctx, "tcp", t.target)
	if err != nil {
		return
	}
	defer b.Close()
	if !t.track(c, b) {
		return
	}
	defer t.untrack(c, b)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(b, c)
		_ = b.Close()
		close(done)
	}()
	_, _ = io.Copy(c, b)
	_ = c.Close()
	<-done
}

// track registers a and b for Drop; it returns false when the terminator
// is stopping.
func (t *Terminator) track(a, b net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return false
	}
	t.conns[a], t.conns[b] = struct{}{}, struct{}{}
	return true
}

func (t *Terminator) untrack(a, b net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, a)
	delete(t.conns, b)
}
