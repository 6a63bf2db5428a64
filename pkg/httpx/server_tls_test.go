package httpx

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/tlsconfig"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// TestServeTLS serves HTTPS with a throwaway CA's certificate: a client
// that trusts the CA gets its answer over HTTP/1.1 with TLS 1.3, or 1.2
// with an ECDHE+AEAD suite; a client that trusts only the system's roots,
// or offers only TLS 1.1 or only a CBC suite, fails the handshake.
func TestServeTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, t.TempDir())
	cfg, err := tlsconfig.Server(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ServeTLS(context.Background(), "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), slog.New(slog.DiscardHandler), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	resp, err := ca.Client().Get("https://" + srv.Addr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok" || resp.Proto != "HTTP/1.1" || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Errorf("GET over HTTPS = %d %s %q with %+v, want 200 over HTTP/1.1 and TLS 1.3", resp.StatusCode, resp.Proto, body, resp.TLS)
	}

	handshake := func(c *tls.Config) (tls.ConnectionState, error) {
		conn, err := tls.Dial("tcp", srv.Addr(), c)
		if err != nil {
			return tls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	state, err := handshake(&tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil || state.Version != tls.VersionTLS12 || state.NegotiatedProtocol != "http/1.1" {
		t.Errorf("TLS 1.2 handshake offering h2 = %v (version %x, protocol %q), want TLS 1.2 and http/1.1", err, state.Version, state.NegotiatedProtocol)
	}

	for _, tt := range []struct {
		name string
		cfg  *tls.Config
		want string
	}{
		{"a client that does not trust the CA", &tls.Config{}, "certificate signed by unknown authority"},
		{"TLS 1.1", &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, "protocol version"},
		{"a CBC suite", &tls.Config{RootCAs: ca.Pool(), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, "handshake failure"},
	} {
		_, err := handshake(tt.cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("handshake with %s = %v, want an error containing %q", tt.name, err, tt.want)
		}
		if tt.cfg.RootCAs == nil {
			var verr *tls.CertificateVerificationError
			if !errors.As(err, &verr) {
				t.Errorf("handshake with %s = %T, want a *tls.CertificateVerificationError", tt.name, err)
			}
		}
	}
}
