package httpx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Server timeouts. Reads and writes are bounded so that slow or stalled
// clients cannot pin goroutines and file descriptors; streaming handlers
// (Server-Sent Events) lift the bounds for their own request with
// DisableDeadlines. WebSocket connections are unaffected once hijacked.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 120 * time.Second
)

// Server is a running HTTP server. Create it with Serve; stop it with
// Shutdown.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	errc chan error
	done chan struct{}

	once sync.Once
}

// Serve listens on addr (":0" picks a free port; see Addr) and serves h in
// the background until Shutdown. Listening happens before Serve returns, so
// a port conflict is reported here rather than later; ctx bounds only that.
// Errors from the server's connection handling (TLS, malformed requests)
// go to logger at warn level, or to the standard log when logger is nil.
//
// It returns an error when addr cannot be listened on.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (*Server, error) {
	return serve(ctx, addr, h, logger, nil, defaultTimeouts)
}

// ServeTLS is Serve over TLS with cfg (see tlsconfig.Server): HTTPS, and
// WSS for the WebSocket routes. The handshake is bounded by the same
// timeouts as a request's headers and body, and its failures (a client
// that does not trust the certificate) are logged like other connection
// errors.
func ServeTLS(ctx context.Context, addr string, h http.Handler, logger *slog.Logger, cfg *tls.Config) (*Server, error) {
	return serve(ctx, addr, h, logger, cfg, defaultTimeouts)
}

type timeouts struct{ readHeader, read, write, idle time.Duration }

var defaultTimeouts = timeouts{
	readHeader: ReadHeaderTimeout,
	read:       ReadTimeout,
	write:      WriteTimeout,
	idle:       IdleTimeout,
}

// serve serves h on addr, over TLS when tlsCfg is not nil.
func serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger, tlsCfg *tls.Config, t timeouts) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("httpx: listen on %s: %w", addr, err)
	}
	if tlsCfg != nil {
		// http.Server finds the *tls.Conn and runs the handshake under
		// its read deadline; the config offers HTTP/1.1 only, which
		// hijacking (WebSocket) needs.
		ln = tls.NewListener(ln, tlsCfg)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: t.readHeader,
			ReadTimeout:       t.read,
			WriteTimeout:      t.write,
			IdleTimeout:       t.idle,
			MaxHeaderBytes:    64 << 10,
		},
		ln:   ln,
		errc: make(chan error, 1),
		done: make(chan struct{}),
	}
	if logger != nil {
		s.srv.ErrorLog = slog.NewLogLogger(logger.Handler(), slog.LevelWarn)
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("httpx: serve on %s: %w", s.Addr(), err)
		}
	}()
	return s, nil
}

// Addr returns the address the server listens on, with the real port when
// it was started on ":0" (e.g. "[::]:41234").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Err delivers at most one error: the reason the server stopped serving on
// its own. It stays silent after Shutdown. main selects on it alongside the
// shutdown signal.
func (s *Server) Err() <-chan error { return s.errc }

// RegisterOnShutdown registers f to be called when Shutdown starts, to end
// connections that Shutdown does not wait for or cannot close itself:
// hijacked ones (WebSocket) and long-lived streams (Server-Sent Events).
func (s *Server) RegisterOnShutdown(f func()) { s.srv.RegisterOnShutdown(f) }

// Shutdown stops accepting connections and waits for in-flight requests to
// finish. If ctx ends first, it closes the remaining connections and returns
// the context's error. Calling it again returns nil at once.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.once.Do(func() {
		if err = s.srv.Shutdown(ctx); err != nil {
			err = errors.Join(fmt.Errorf("httpx: shutdown: %w", err), s.srv.Close())
		}
		<-s.done
	})
	return err
}

// DisableDeadlines lifts the server's read and write timeouts for one
// request, for responses that legitimately stay open, such as Server-Sent
// Events. Without it the stream is cut, and its request context cancelled,
// after ReadTimeout or WriteTimeout. The handler then owns the job of ending
// the stream (on client disconnect, and on shutdown via RegisterOnShutdown).
//
// It returns an error when the ResponseWriter (after unwrapping middleware)
// does not support deadlines, as with httptest.ResponseRecorder.
func DisableDeadlines(w http.ResponseWriter) error {
	rc := http.NewResponseController(w)
	return errors.Join(rc.SetReadDeadline(time.Time{}), rc.SetWriteDeadline(time.Time{}))
}
