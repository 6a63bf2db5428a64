package tlsconfig_test

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/tlsconfig"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// TestKeyPairReloads replaces the files the way a renewal does and checks
// that the next handshake gets the new pair, and that a pair that does not
// load is reported once while the previous one stays in use.
func TestKeyPairReloads(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	first := ca.Issue(t, "127.0.0.1")
	certFile, keyFile := first.WriteFiles(t, dir)
	var logs bytes.Buffer
	kp, err := tlsconfig.NewKeyPair(certFile, keyFile, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string { return kp.Certificate().Leaf.SerialNumber.String() }
	if got, want := serial(), first.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("serial = %s, want %s", got, want)
	}

	// Half a renewal: the new certificate is there, its key not yet.
	second := ca.Issue(t, "127.0.0.1")
	tlstest.WriteFile(t, certFile, second.CertPEM)
	for range 3 {
		if got, want := serial(), first.Leaf.SerialNumber.String(); got != want {
			t.Fatalf("with a mismatched key the serial = %s, want the previous %s", got, want)
		}
	}
	if n := strings.Count(logs.String(), "do not load"); n != 1 {
		t.Errorf("the broken pair was reported %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "private key does not match public key") {
		t.Errorf("the log does not say why the pair did not load:\n%s", logs.String())
	}

	tlstest.WriteFile(t, keyFile, second.KeyPEM)
	if got, want := serial(), second.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("after the renewal the serial = %s, want %s", got, want)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("the reload was not logged:\n%s", logs.String())
	}

	// A file that disappears (a botched deploy) leaves the pair in use.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if got, want := serial(), second.Leaf.SerialNumber.String(); got != want {
		t.Fatalf("with the key file gone the serial = %s, want %s", got, want)
	}
}

// TestBrokenFiles checks that each broken setting is refused at once with
// an error naming the file.
func TestBrokenFiles(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, t.TempDir())
	otherKey := filepath.Join(t.TempDir(), "key.pem")
	tlstest.WriteFile(t, otherKey, ca.Issue(t, "127.0.0.1").KeyPEM)
	notPEM := filepath.Join(dir, "not.pem")
	tlstest.WriteFile(t, notPEM, []byte("not a certificate\n"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tt := range []struct {
		name string
		load func() error
		want string
	}{
		{"missing certificate file", func() error { _, err := tlsconfig.Server(missing, keyFile, nil); return err }, missing},
		{"missing key file", func() error { _, err := tlsconfig.Server(certFile, missing, nil); return err }, missing},
		{"certificate not PEM", func() error { _, err := tlsconfig.Server(notPEM, keyFile, nil); return err }, "failed to find any PEM data in certificate input"},
		{"key not PEM", func() error { _, err := tlsconfig.Server(certFile, notPEM, nil); return err }, "failed to find any PEM data in key input"},
		{"key of another certificate", func() error { _, err := tlsconfig.Server(certFile, otherKey, nil); return err }, "private key does not match public key"},
		{"missing CA file", func() error { _, err := tlsconfig.LoadCA(missing); return err }, missing},
		{"CA not PEM", func() error { _, err := tlsconfig.LoadCA(notPEM); return err }, notPEM + " holds no PEM certificate"},
		{"a key file as CA file", func() error { _, err := tlsconfig.LoadCA(keyFile); return err }, "holds no PEM certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.load()
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error = %v, want one line containing %q", err, tt.want)
			}
		})
	}
}

// TestClient checks the client's trust: only the CA of AMQP_CA_FILE, and
// the client certificate when one is given.
func TestClient(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	client := ca.Issue(t, "orderly-client")
	certFile, keyFile := client.WriteFiles(t, dir)
	roots, err := tlsconfig.LoadCA(ca.WriteCA(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewKeyPair(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := tlsconfig.Client(roots, kp)
	if cfg.MinVersion != tls.VersionTLS12 || cfg.RootCAs == nil || !cfg.RootCAs.Equal(ca.Pool()) {
		t.Errorf("config = %+v, want TLS 1.2+ trusting only the CA", cfg)
	}
	got, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{})
	if err != nil || !got.Leaf.Equal(client.Leaf) {
		t.Errorf("client certificate = %v, %v; want the one of AMQP_CERT_FILE", got, err)
	}

	if cfg := tlsconfig.Client(nil, nil); cfg.RootCAs != nil || cfg.GetClientCertificate != nil {
		t.Errorf("Client(nil, nil) = %+v, want the system roots and no client certificate", cfg)
	}
}
