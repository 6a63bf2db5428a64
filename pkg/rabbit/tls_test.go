package rabbit_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/pkg/tlsconfig"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// tlsBroker is a TLS terminator that demands a client certificate signed
// by a test CA, in front of the local broker.
type tlsBroker struct {
	// URL is the amqps:// URL of a fresh vhost through the terminator.
	URL  string
	term *tlstest.Terminator
	// cert is the certificate the terminator presents.
	cert atomic.Pointer[tls.Certificate]
}

func newTLSBroker(tb testing.TB, ca *tlstest.CA) *tlsBroker {
	tb.Helper()
	u, err := url.Parse(rabbittest.NewVhost(tb))
	if err != nil {
		tb.Fatal(err)
	}
	b := &tlsBroker{}
	b.present(tb, ca)
	b.term = tlstest.Terminate(tb, u.Host, &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return b.cert.Load(), nil },
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      ca.Pool(),
		MinVersion:     tls.VersionTLS12,
	})
	u.Scheme, u.Host = "amqps", b.term.Addr
	b.URL = u.String()
	return b
}

// present has the terminator present a certificate signed by ca from its
// next handshake on.
func (b *tlsBroker) present(tb testing.TB, ca *tlstest.CA) {
	tb.Helper()
	cert := ca.Issue(tb, "127.0.0.1").TLS(tb)
	b.cert.Store(&cert)
}

// clientTLS is the broker connection's TLS configuration trusting roots,
// with a client certificate signed by ca.
func clientTLS(tb testing.TB, ca *tlstest.CA, roots *tlstest.CA) *tls.Config {
	tb.Helper()
	certFile, keyFile := ca.Issue(tb, "orderly-test").WriteFiles(tb, tb.TempDir())
	kp, err := tlsconfig.NewKeyPair(certFile, keyFile, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return tlsconfig.Client(roots.Pool(), kp)
}

// TestDialTLS connects over amqps:// through a TLS terminator in front of
// the local broker, with a client certificate, publishes and consumes, and
// keeps doing so after the link drops. Re-dials verify the broker as the
// first dial did: while it presents a certificate from another CA they
// fail, with a warning. A broker certificate from another CA fails the
// first dial at once with a clear error, and so, at the broker's end, does
// a missing client certificate.
func TestDialTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	broker := newTLSBroker(t, ca)
	amqps := broker.URL

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var logs syncBuffer
	conn, err := rabbit.Dial(ctx, amqps, rabbit.WithTLS(clientTLS(t, ca, ca)), rabbit.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() }) // after the consumer's cleanup stops it
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{"test.events"}}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	startConsumer(t, conn, testQueue("test.tls"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a")})
	poll.Until(t, 10*time.Second, "the message over TLS to come back", func() bool { return rec.count() == 1 })

	// The broker turns up with a certificate of another CA: re-dials fail
	// and say why; with the right one back, the link comes back.
	broker.present(t, tlstest.NewCA(t))
	broker.term.Drop()
	poll.Until(t, 10*time.Second, "a warning that the re-dial failed verification", func() bool {
		return strings.Contains(logs.String(), `level=WARN msg="rabbitmq reconnect failed" err="tls: failed to verify certificate: x509: certificate signed by unknown authority`)
	})
	gen := conn.Generation()
	broker.present(t, ca)
	poll.Until(t, 10*time.Second, "the connection to be re-dialed over TLS", func() bool {
		return conn.Generation() > gen && conn.Connected()
	})
	poll.Until(t, 10*time.Second, "a message after the re-dial to come back", func() bool {
		for _, err := range pub.Publish(ctx, []rabbit.Message{msg(2, "a")}) {
			if err != nil {
				return false
			}
		}
		return true
	})
	poll.Until(t, 10*time.Second, "the consumer to get it", func() bool { return rec.count() >= 2 })

	t.Run("broker certificate from another CA", func(t *testing.T) {
		t.Parallel()
		other := tlstest.NewCA(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		started := time.Now()
		_, err := rabbit.Dial(ctx, amqps, rabbit.WithTLS(clientTLS(t, ca, other)))
		if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
			t.Errorf("Dial = %v, want an unknown-authority error", err)
		}
		if d := time.Since(started); d > 5*time.Second {
			t.Errorf("Dial took %v to fail, want it at once", d)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c, err := rabbit.Dial(ctx, amqps, rabbit.WithTLS(tlsconfig.Client(ca.Pool(), nil))); err == nil {
			_ = c.Close()
			t.Error("Dial without the client certificate the broker demands succeeded")
		}
	})
}

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
