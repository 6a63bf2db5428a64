package pg_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
)

// blackHole is a TCP forwarder to a server that can start swallowing
// everything, both ways, as a network black hole does: the connections
// stay open and nothing comes back. What it swallowed is gone, as on the
// real network after a retransmission timeout.
type blackHole struct {
	ln       net.Listener
	upstream string
	dropping atomic.Bool
	open     atomic.Int64 // client connections open
}

func newBlackHole(tb testing.TB, upstream string) *blackHole {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	b := &blackHole{ln: ln, upstream: upstream}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	tb.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			b.open.Add(1)
			var once sync.Once
			done := func() {
				_ = client.Close()
				_ = server.Close()
				once.Do(func() { b.open.Add(-1) })
			}
			wg.Go(func() { b.pipe(server, client); done() })
			wg.Go(func() { b.pipe(client, server); done() })
		}
	})
	return b
}

func (b *blackHole) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.dropping.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// url is dbURL with its host:port replaced by the forwarder's.
func (b *blackHole) url(dbURL string) string {
	return strings.Replace(dbURL, b.upstream, b.ln.Addr().String(), 1)
}

// A statement on a black-holed link never reaches the server, so its
// statement_timeout cannot fire: the caller's context is what ends it. The
// connection, whose protocol state is now unknown, is closed and leaves
// the pool, and the pool serves again once the link is back.
func TestBlackHoleEndsWithTheContext(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDB(t)
	hole := newBlackHole(t, "127.0.0.1:5432")
	pool := mustConnect(t, hole.url(dbURL), pg.WithTimeouts(pg.Timeouts{Statement: 100 * time.Millisecond, Lock: 50 * time.Millisecond}))
	if err := pool.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}

	hole.dropping.Store(true)
	const bound = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	start := time.Now()
	_, err := pool.Exec(ctx, "SELECT 1")
	cancel()
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("statement on a black hole = %v, want context.DeadlineExceeded", err)
	}
	if took > bound+2*time.Second {
		t.Errorf("statement on a black hole took %v, want about %v", took, bound)
	}
	hole.dropping.Store(false)

	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("statement once the link is back: %v", err)
	}
	// The swallowed connection was closed (pgx closes it in the
	// background, after a cancel request that the hole swallowed too, or
	// not, when it is gone): the pool keeps only the new one.
	deadline := time.Now().Add(20 * time.Second)
	for hole.open.Load() > int64(pool.Stat().TotalConns()) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // the poll
	}
	if open, pooled := hole.open.Load(), pool.Stat().TotalConns(); open > int64(pooled) {
		t.Errorf("%d connections open through the link, the pool holds %d: the broken one leaked", open, pooled)
	}
}

// Opening a connection through a black hole fails after the connect
// timeout instead of holding a pool slot (pgxpool waits 2 minutes
// otherwise) or a LISTEN session (for good).
func TestBlackHoledConnectTimesOut(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDB(t)
	hole := newBlackHole(t, "127.0.0.1:5432")
	pool := mustConnect(t, hole.url(dbURL))
	if got := pool.Config().ConnConfig.ConnectTimeout; got != pg.DefaultConnectTimeout {
		t.Errorf("connect timeout %v, want DefaultConnectTimeout (%v)", got, pg.DefaultConnectTimeout)
	}
	if own := mustConnect(t, hole.url(dbURL)+"&connect_timeout=1"); own.Config().ConnConfig.ConnectTimeout != time.Second {
		t.Errorf("the URL's connect_timeout=1 gave %v", own.Config().ConnConfig.ConnectTimeout)
	}

	hole.dropping.Store(true)
	cfg := pool.Config().ConnConfig.Copy()
	cfg.ConnectTimeout = 300 * time.Millisecond // as the URL may set it, to keep the test short
	start := time.Now()
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err == nil {
		_ = conn.Close(context.Background())
		t.Fatal("connected through a black hole")
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("connect through a black hole failed after %v, want about 300ms", took)
	}
	if !pg.IsUnavailable(err) {
		t.Errorf("connect through a black hole = %v, want IsUnavailable", err)
	}
}
