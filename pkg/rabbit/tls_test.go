package rabbit_test

import (
	"context"
	"crypto/tls"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/pkg/tlsconfig"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// newTLSBroker puts a TLS terminator that demands a client certificate
// signed by ca in front of the local broker, and returns the amqps:// URL
// of a fresh vhost through it.
func newTLSBroker(tb testing.TB, ca *tlstest.CA) (amqps string, term *tlstest.Terminator) {
	tb.Helper()
	u, err := url.Parse(rabbittest.NewVhost(tb))
	if err != nil {
		tb.Fatal(err)
	}
	term = tlstest.Terminate(tb, u.Host, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(tb, "127.0.0.1").TLS(tb)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	})
	u.Scheme, u.Host = "amqps", term.Addr
	return u.String(), term
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
// keeps doing so after the link drops (the re-dial uses the same TLS
// configuration). A broker certificate from another CA fails the dial at
// once with a clear error, and so, at the broker's end, does a missing
// client certificate.
func TestDialTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	amqps, term := newTLSBroker(t, ca)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := rabbit.Dial(ctx, amqps, rabbit.WithTLS(clientTLS(t, ca, ca)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Declare(ctx, rabbit.Topology{Exchanges: []string{"test.events"}}); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	startConsumer(t, conn, testQueue("test.tls"), rec.handle)
	pub := conn.NewPublisher()
	defer pub.Close()
	publishAll(t, pub, []rabbit.Message{msg(1, "a")})
	poll.Until(t, 10*time.Second, "the message over TLS to come back", func() bool { return rec.count() == 1 })

	gen := conn.Generation()
	term.Drop()
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
