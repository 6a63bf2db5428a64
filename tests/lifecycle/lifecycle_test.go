// Package lifecycle tests the four service binaries as an operator runs
// them: built with `go build`, configured only through the environment,
// pointed at a fresh database and vhost on the real servers, probed over
// HTTP and stopped with SIGTERM.
package lifecycle

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
	"github.com/orderly/orderly/tests/stack"
)

// services are the binaries under test, by name.
var services = stack.Names()

// shutdownTimeout is the SHUTDOWN_TIMEOUT the services get; a clean exit
// must come within it.
const shutdownTimeout = 10 * time.Second

func TestMain(m *testing.M) { stack.Main(m) }

func TestLifecycle(t *testing.T) {
	for _, name := range services {
		stack.Binary(t, name)
	}

	for _, name := range services {
		t.Run(name+"/starts ready and drains on SIGTERM", func(t *testing.T) {
			t.Parallel()
			_, dbURL := pgtest.NewDB(t)
			p := stack.StartProcess(t, stack.Binary(t, name),
				"DATABASE_URL="+dbURL,
				"AMQP_URL="+rabbittest.NewVhost(t),
				"HTTP_ADDR=127.0.0.1:0",
				"SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
				"SHUTDOWN_DELAY=200ms",
			)
			base := "http://" + p.Addr(t)

			poll.Until(t, 30*time.Second, name+" /healthz to answer 200", func() bool {
				code, _, _ := get(base + "/healthz")
				return code == http.StatusOK
			})
			var body string
			poll.Until(t, 30*time.Second, name+" /readyz to answer 200", func() bool {
				var code int
				code, body, _ = get(base + "/readyz")
				return code == http.StatusOK
			})
			var ready struct {
				Checks map[string]string `json:"checks"`
			}
			if err := json.Unmarshal([]byte(body), &ready); err != nil {
				t.Fatalf("/readyz body %q: %v", body, err)
			}
			for _, check := range []string{"postgres", "rabbitmq", "migrations"} {
				if ready.Checks[check] != "ok" {
					t.Errorf("/readyz check %s = %q, want ok (body %s)", check, ready.Checks[check], body)
				}
			}

			resp, err := http.Get(base + "/metrics")
			if err != nil {
				t.Fatalf("GET /metrics: %v", err)
			}
			metrics, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("GET /metrics = %d %q, want 200 text/plain", resp.StatusCode, ct)
			}
			for _, want := range []string{"# TYPE go_goroutines gauge", "# TYPE http_server_request_duration_seconds histogram"} {
				if !bytes.Contains(metrics, []byte(want)) {
					t.Errorf("/metrics lacks %q", want)
				}
			}

			p.Signal(t, syscall.SIGTERM)
			code := p.Exit(t, shutdownTimeout)
			if code != 0 {
				t.Fatalf("exit code after SIGTERM = %d, want 0\nstdout:\n%s\nstderr:\n%s", code, p.Stdout.String(), p.Stderr.String())
			}
			if !strings.Contains(p.Stdout.String(), `"msg":"drained and stopped cleanly"`) {
				t.Errorf("log does not say the service drained:\n%s", p.Stdout.String())
			}
			if s := p.Stderr.String(); s != "" {
				t.Errorf("stderr after a clean shutdown: %s", s)
			}
		})
	}

	// Transport security: a throwaway CA, the order service's certificate
	// and broken settings.
	ca := tlstest.NewCA(t)
	tlsDir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "127.0.0.1").WriteFiles(t, tlsDir)
	otherKey := filepath.Join(t.TempDir(), "key.pem")
	tlstest.WriteFile(t, otherKey, ca.Issue(t, "127.0.0.1").KeyPEM)
	notPEM := filepath.Join(tlsDir, "not.pem")
	tlstest.WriteFile(t, notPEM, []byte("not a certificate\n"))

	t.Run("order/serves HTTPS with TLS_CERT_FILE and TLS_KEY_FILE", func(t *testing.T) {
		t.Parallel()
		_, dbURL := pgtest.NewDB(t)
		p := stack.StartProcess(t, stack.Binary(t, "order"),
			"DATABASE_URL="+dbURL,
			"AMQP_URL="+rabbittest.NewVhost(t),
			"HTTP_ADDR=127.0.0.1:0",
			"TLS_CERT_FILE="+certFile,
			"TLS_KEY_FILE="+keyFile,
			"SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
			"SHUTDOWN_DELAY=0s",
		)
		base := "https://" + p.Addr(t)
		client := ca.Client()
		poll.Until(t, 30*time.Second, "order /healthz to answer 200 over HTTPS", func() bool {
			resp, err := client.Get(base + "/healthz")
			if err != nil {
				return false
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusOK && resp.TLS != nil
		})
		if code, _, err := get(base + "/healthz"); err == nil {
			t.Errorf("GET with the system's roots = %d, want a failed handshake", code)
		}
		p.Signal(t, syscall.SIGTERM)
		if code := p.Exit(t, shutdownTimeout); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr.String())
		}
	})

	// A port nothing listens on: bind one, then free it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()

	refusals := []struct {
		name    string
		environ []string
		want    string // in the one line on stderr
	}{
		{"malformed AMQP_URL", []string{"AMQP_URL=http://127.0.0.1:5672/"}, "AMQP_URL"},
		{"malformed DATABASE_URL", []string{"DATABASE_URL=postgres://127.0.0.1:notaport/x"}, "DATABASE_URL"},
		{"unreachable Postgres", []string{"DATABASE_URL=postgres://postgres@" + closed + "/orderly_order"}, "postgres at postgres://postgres@" + closed},
		{"unreachable RabbitMQ", []string{"AMQP_URL=amqp://guest:guest@" + closed + "/", "CONNECT_TIMEOUT=1s", "DATABASE_URL=" + newDBURL(t)}, "rabbitmq at amqp://guest:xxxxx@" + closed},
		{"invalid SHUTDOWN_TIMEOUT", []string{"SHUTDOWN_TIMEOUT=soon"}, "SHUTDOWN_TIMEOUT"},
		{"production with the development secret", []string{"ORDERLY_ENV=production"}, "AUTH_JWT_SECRET"},
		{"TLS_CERT_FILE without TLS_KEY_FILE", []string{"TLS_CERT_FILE=" + certFile}, "TLS_CERT_FILE/TLS_KEY_FILE: set both or neither"},
		{"a TLS key that does not match the certificate", []string{"TLS_CERT_FILE=" + certFile, "TLS_KEY_FILE=" + otherKey}, "TLS_CERT_FILE/TLS_KEY_FILE: certificate " + certFile + " with key " + otherKey + ": tls: private key does not match public key"},
		{"an AMQP_CA_FILE that holds no certificate", []string{"AMQP_URL=amqps://guest:guest@127.0.0.1:5671/", "AMQP_CA_FILE=" + notPEM}, "AMQP_CA_FILE: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range refusals {
		t.Run("order/refuses "+tt.name, func(t *testing.T) {
			t.Parallel()
			p := stack.StartProcess(t, stack.Binary(t, "order"), append(tt.environ, "HTTP_ADDR=127.0.0.1:0")...)
			code := p.Exit(t, 30*time.Second)
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			lines := strings.Split(strings.TrimRight(p.Stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "order: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line starting with \"order: \" and naming %q", p.Stderr.String(), tt.want)
			}
			if strings.Contains(p.Stderr.String()+p.Stdout.String(), "guest:guest@") {
				t.Errorf("output leaks the broker password:\n%s%s", p.Stdout.String(), p.Stderr.String())
			}
		})
	}
}

// newDBURL returns the URL of a fresh, empty database dropped after the test.
func newDBURL(tb testing.TB) string {
	tb.Helper()
	_, u := pgtest.NewDB(tb)
	return u
}

// get returns the status and body of GET url, or 0 when it fails.
func get(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url) // bounded by the client timeout
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
