// Package rabbit is Orderly's RabbitMQ transport on amqp091-go: a connection
// that re-dials by itself after a broker restart or a dropped link, idempotent
// topology (topic exchanges, quorum queues with a delivery limit, delayed
// retry queues and a dead-letter queue), a publisher with many confirms in
// flight, and a consumer with manual acks, prefetch and ordered workers.
//
// Recovery is our own loop rather than amqp091-go's experimental Recovery:
// every reconnect opens new channels, so a delivery received before a drop can
// only fail to ack (it is redelivered anyway); it can never ack a different
// message that reuses its delivery tag on the new channel.
package rabbit

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ErrClosed is returned by operations on a Conn after Close.
var ErrClosed = errors.New("rabbit: connection closed")

// Conn is a self-healing AMQP connection. It is safe for concurrent use.
type Conn struct {
	url  string
	name string
	log  *slog.Logger
	tls  *tls.Config // for amqps://; nil takes amqp091-go's defaults

	mu      sync.Mutex
	conn    *amqp.Connection // nil while disconnected
	gen     uint64           // incremented on every successful dial
	changed chan struct{}    // closed and replaced whenever conn changes
	closed  bool

	done chan struct{}
	wg   sync.WaitGroup
}

// Option configures Dial.
type Option func(*Conn)

// WithName sets the connection name shown by the broker (rabbitmqctl list_connections).
func WithName(name string) Option { return func(c *Conn) { c.name = name } }

// WithLogger sets the logger for connection state changes.
func WithLogger(l *slog.Logger) Option { return func(c *Conn) { c.log = l } }

// WithTLS sets the TLS configuration of an amqps:// connection (trusted
// CAs, client certificate); every re-dial uses it too. Its ServerName
// defaults to the URL's host, or to its server_name parameter. A nil cfg
// leaves amqp091-go's defaults: the system's roots. It does not apply to
// amqp:// URLs.
func WithTLS(cfg *tls.Config) Option { return func(c *Conn) { c.tls = cfg } }

// Dial connects to url and keeps the connection up until Close, re-dialing
// with capped exponential backoff whenever it drops. The first dial must
// succeed before ctx ends, so a wrong URL or a missing broker stops a service
// at start with a clear error instead of a silent retry loop. A broker
// certificate that does not verify fails the first dial at once, since
// trying again cannot help.
func Dial(ctx context.Context, url string, opts ...Option) (*Conn, error) {
	c := &Conn{url: url, log: slog.Default(), changed: make(chan struct{}), done: make(chan struct{})}
	for _, o := range opts {
		o(c)
	}
	uri, err := amqp.ParseURI(url)
	if err != nil {
		return nil, fmt.Errorf("rabbit: parse url: %w", err)
	}
	if c.tls != nil && c.tls.ServerName == "" {
		// A copy, because amqp091-go would otherwise fill it in on ours.
		c.tls = c.tls.Clone()
		c.tls.ServerName = cmp.Or(uri.ServerName, uri.Host)
	}
	var conn *amqp.Connection
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		conn, err = c.dial()
		if err == nil {
			break
		}
		if untrusted(err) {
			return nil, fmt.Errorf("rabbit: dial %s:%d: %w", uri.Host, uri.Port, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("rabbit: dial %s:%d: %w", uri.Host, uri.Port, err)
		case <-time.After(backoff):
		}
	}
	c.set(conn)
	c.wg.Add(1)
	go c.supervise(conn)
	return c, nil
}

func (c *Conn) dial() (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	if c.name != "" {
		props.SetClientConnectionName(c.name)
	}
	return amqp.DialConfig(c.url, amqp.Config{
		Heartbeat:       5 * time.Second,
		Properties:      props,
		Dial:            amqp.DefaultDial(5 * time.Second),
		TLSClientConfig: c.tls,
	})
}

func (c *Conn) set(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	if conn != nil {
		c.gen++
	}
	close(c.changed)
	c.changed = make(chan struct{})
}

// supervise waits for the connection to close and dials again until Close.
func (c *Conn) supervise(conn *amqp.Connection) {
	defer c.wg.Done()
	for {
		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.done:
			return
		case err := <-closed:
			c.set(nil)
			c.log.Warn("rabbitmq connection lost", "err", err)
		}
		for backoff := 50 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
			select {
			case <-c.done:
				return
			case <-time.After(backoff):
			}
			var err error
			if conn, err = c.dial(); err == nil {
				break
			}
			if untrusted(err) {
				// Not a passing outage: the broker's certificate changed
				// to one that AMQP_CA_FILE does not cover.
				c.log.Warn("rabbitmq reconnect failed", "err", err, "retry_in", backoff)
				continue
			}
			c.log.Debug("rabbitmq reconnect failed", "err", err, "retry_in", backoff)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			_ = conn.Close()
			return
		}
		c.mu.Unlock()
		c.set(conn)
		c.log.Info("rabbitmq connection restored", "generation", c.Generation())
	}
}

// untrusted reports whether err is the broker's certificate failing
// verification, which trying again does not mend.
func untrusted(err error) bool {
	_, ok := errors.AsType[*tls.CertificateVerificationError](err)
	return ok
}

// Generation counts successful dials; it changes exactly when every channel
// opened before has become unusable.
func (c *Conn) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Connected reports whether the link to the broker is up right now; services
// use it for readiness.
func (c *Conn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil && !c.conn.IsClosed()
}

// Channel opens a channel on the current connection, waiting for a reconnect
// if the link is down. It returns the channel with the generation it belongs
// to, or ctx's error, or ErrClosed after Close.
func (c *Conn) Channel(ctx context.Context) (*amqp.Channel, uint64, error) {
	for {
		c.mu.Lock()
		conn, gen, changed, closed := c.conn, c.gen, c.changed, c.closed
		c.mu.Unlock()
		if closed {
			return nil, 0, ErrClosed
		}
		if conn != nil {
			ch, err := conn.Channel()
			if err == nil {
				return ch, gen, nil
			}
			if !conn.IsClosed() {
				return nil, 0, fmt.Errorf("rabbit: open channel: %w", err)
			}
			// The link dropped under us; the supervisor will replace it.
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-changed:
		case <-c.done:
			return nil, 0, ErrClosed
		}
	}
}

// Close stops reconnecting and closes the connection; channels opened from it
// close too.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	conn := c.conn
	c.mu.Unlock()
	close(c.done)
	var err error
	if conn != nil {
		err = conn.Close()
	}
	c.wg.Wait()
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}
