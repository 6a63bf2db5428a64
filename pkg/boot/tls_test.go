package boot_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// TestStartOverTLS starts a service with every transport secured: HTTPS
// with TLS_CERT_FILE and TLS_KEY_FILE, and the broker over amqps://
// through a TLS terminator that demands a client certificate, trusted
// through AMQP_CA_FILE. Run declares its exchange over that link and the
// service answers /readyz over HTTPS to a client trusting only the CA.
func TestStartOverTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, dir)
	clientDir := t.TempDir()
	clientCert, clientKey := ca.Issue(t, "boottest").WriteFiles(t, clientDir)

	broker, err := url.Parse(rabbittest.NewVhost(t))
	if err != nil {
		t.Fatal(err)
	}
	term := tlstest.Terminate(t, broker.Host, &tls.Config{
		Certificates: []tls.Certificate{ca.Issue(t, "127.0.0.1").TLS(t)},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	})
	broker.Scheme, broker.Host = "amqps", term.Addr

	_, dbURL := pgtest.NewDB(t)
	cfg, err := boot.LoadConfig([]string{
		"ORDERLY_ENV=development",
		"DATABASE_URL=" + dbURL,
		"AMQP_URL=" + broker.String(),
		"AMQP_CA_FILE=" + ca.WriteCA(t, dir),
		"AMQP_CERT_FILE=" + clientCert,
		"AMQP_KEY_FILE=" + clientKey,
		"TLS_CERT_FILE=" + certFile,
		"TLS_KEY_FILE=" + keyFile,
		"HTTP_ADDR=127.0.0.1:0",
		"SHUTDOWN_TIMEOUT=10s",
		"SHUTDOWN_DELAY=0s",
		"LOG_LEVEL=warn",
	}, "boottest", ":0")
	if err != nil {
		t.Fatal(err)
	}
	svc := mustStart(t, cfg)
	svc.Publishes("boottest.events")
	ctx, stop := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- svc.Run(ctx) }()
	defer func() {
		stop()
		if err := <-runErr; err != nil {
			t.Errorf("Run = %v, want a clean shutdown", err)
		}
	}()

	client := ca.Client()
	poll.Until(t, 30*time.Second, "/readyz over HTTPS to answer 200", func() bool {
		if !strings.HasPrefix(svc.URL(), "https://") {
			return false
		}
		resp, err := client.Get(svc.URL() + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK && resp.TLS != nil
	})
	resp, err := http.Get(svc.URL() + "/healthz") //nolint:gosec // test URL on localhost
	if err == nil {
		_ = resp.Body.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("GET with the system's roots = %v, want an unknown-authority error", err)
	}
}

// TestStartRefusesBrokenTLSFiles checks that each broken TLS setting stops
// Start before it dials anything, with one line naming the variables.
func TestStartRefusesBrokenTLSFiles(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, dir)
	otherKey := filepath.Join(t.TempDir(), "key.pem")
	tlstest.WriteFile(t, otherKey, ca.Issue(t, "127.0.0.1").KeyPEM)
	notPEM := filepath.Join(dir, "not.pem")
	tlstest.WriteFile(t, notPEM, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")
	const amqps = "AMQP_URL=amqps://guest:guest@127.0.0.1:5671/"

	for _, tt := range []struct {
		name    string
		environ []string
		want    string
	}{
		{"server key of another certificate", []string{"TLS_CERT_FILE=" + certFile, "TLS_KEY_FILE=" + otherKey}, "TLS_CERT_FILE/TLS_KEY_FILE: certificate " + certFile + " with key " + otherKey + ": tls: private key does not match public key"},
		{"missing server certificate", []string{"TLS_CERT_FILE=" + missing, "TLS_KEY_FILE=" + keyFile}, "TLS_CERT_FILE/TLS_KEY_FILE: stat " + missing + ": no such file or directory"},
		{"server certificate not PEM", []string{"TLS_CERT_FILE=" + notPEM, "TLS_KEY_FILE=" + keyFile}, "TLS_CERT_FILE/TLS_KEY_FILE: certificate " + notPEM},
		{"missing broker CA", []string{amqps, "AMQP_CA_FILE=" + missing}, "AMQP_CA_FILE: open " + missing + ": no such file or directory"},
		{"broker CA not PEM", []string{amqps, "AMQP_CA_FILE=" + notPEM}, "AMQP_CA_FILE: " + notPEM + " holds no PEM certificate"},
		{"client key of another certificate", []string{amqps, "AMQP_CERT_FILE=" + certFile, "AMQP_KEY_FILE=" + otherKey}, "AMQP_CERT_FILE/AMQP_KEY_FILE: certificate " + certFile},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := boot.LoadConfig(append(tt.environ, "ORDERLY_ENV=development", "LOG_LEVEL=error"), "boottest", ":0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			svc, err := boot.Start(ctx, cfg, boot.Messaging)
			if err == nil {
				_ = svc.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("Start = %q, want one line containing %q", err, tt.want)
			}
		})
	}
}
