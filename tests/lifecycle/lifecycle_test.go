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
	"strconv"
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
				"ORDERLY_ENV=development",
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
		p := startOrder(t, "TLS_CERT_FILE="+certFile, "TLS_KEY_FILE="+keyFile)
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

	t.Run("order/serves /readyz and /metrics only on ADMIN_ADDR", func(t *testing.T) {
		t.Parallel()
		admin := freeAddr(t)
		p := startOrder(t, "ADMIN_ADDR="+admin)
		public, internal := "http://"+p.Addr(t), "http://"+admin
		poll.Until(t, 30*time.Second, "order /readyz on the admin listener to answer 200", func() bool {
			code, _, err := get(internal + "/readyz")
			return err == nil && code == http.StatusOK
		})
		for _, tt := range []struct {
			url  string
			want int
		}{
			{internal + "/metrics", http.StatusOK},
			{internal + "/healthz", http.StatusOK},
			{public + "/healthz", http.StatusOK},
			{public + "/readyz", http.StatusNotFound},
			{public + "/metrics", http.StatusNotFound},
		} {
			if code, _, err := get(tt.url); err != nil || code != tt.want {
				t.Errorf("GET %s = %d, %v; want %d", tt.url, code, err, tt.want)
			}
		}
		p.Signal(t, syscall.SIGTERM)
		if code := p.Exit(t, shutdownTimeout); code != 0 {
			t.Fatalf("exit code after SIGTERM = %d, want 0\nstderr:\n%s", code, p.Stderr.String())
		}
	})

	// A port nothing listens on.
	closed := freeAddr(t)

	// A configuration the production rules accept (the broker and database
	// are never reached: the refusals come first).
	production := []string{
		"AUTH_JWT_SECRET=lifecycle-test-secret-0123456789abcdef",
		"AUTH_JWT_ISSUER=https://id.example.test/",
		"AUTH_JWT_AUDIENCE=orderly",
		"AMQP_URL=amqps://payment:pw@" + closed + "/",
		"DATABASE_URL=postgres://payment:pw@" + closed + "/orderly_payment?sslmode=verify-full",
	}
	dev := func(env ...string) []string { return append([]string{"ORDERLY_ENV=development"}, env...) }
	refusals := []struct {
		name    string
		binary  string
		environ []string
		want    string // in the one line on stderr
	}{
		{"malformed AMQP_URL", "order", dev("AMQP_URL=http://127.0.0.1:5672/"), "AMQP_URL"},
		{"malformed DATABASE_URL", "order", dev("DATABASE_URL=postgres://127.0.0.1:notaport/x"), "DATABASE_URL"},
		{"unreachable Postgres", "order", dev("DATABASE_URL=postgres://postgres@" + closed + "/orderly_order"), "postgres at postgres://postgres@" + closed},
		{"unreachable RabbitMQ", "order", dev("AMQP_URL=amqp://guest:guest@"+closed+"/", "CONNECT_TIMEOUT=1s", "DATABASE_URL="+newDBURL(t)), "rabbitmq at amqp://guest:xxxxx@" + closed},
		{"invalid SHUTDOWN_TIMEOUT", "order", dev("SHUTDOWN_TIMEOUT=soon"), "SHUTDOWN_TIMEOUT"},
		// Secure by default: with no ORDERLY_ENV and no secret the service
		// is in production and refuses the development secret.
		{"no ORDERLY_ENV and no secret", "order", nil, "AUTH_JWT_SECRET: the development default is refused in production"},
		{"production with the development secret", "order", []string{"ORDERLY_ENV=production"}, "AUTH_JWT_SECRET"},
		{"a short secret with no ORDERLY_ENV", "order", append(production[1:], "AUTH_JWT_SECRET=short"), "AUTH_JWT_SECRET: must be at least 32 bytes"},
		{"the guest broker user with no ORDERLY_ENV", "order", append(production, "AMQP_URL=amqps://guest:guest@"+closed+"/"), "AMQP_URL: the guest user is refused"},
		{"plain amqp with no ORDERLY_ENV", "order", append(production, "AMQP_URL=amqp://order:pw@"+closed+"/"), "AMQP_URL: plain amqp:// is refused"},
		{"sslmode=require with no ORDERLY_ENV", "order", append(production, "DATABASE_URL=postgres://order:pw@"+closed+"/orderly_order?sslmode=require"), "DATABASE_URL: sslmode must be verify-full"},
		{"no issuer and no audience with no ORDERLY_ENV", "order", []string{production[0], production[3], production[4]}, "AUTH_JWT_ISSUER: must be set when ORDERLY_ENV=production"},
		{"no payment gateway with no ORDERLY_ENV", "payment", production, "PAYMENT_GATEWAY: no payment gateway is configured"},
		{"the simulated gateway in production", "payment", append(production, "PAYMENT_GATEWAY=simulated"), "PAYMENT_ALLOW_SIMULATED=true"},
		{"an unknown payment gateway", "payment", dev("PAYMENT_GATEWAY=stripe"), `PAYMENT_GATEWAY: "stripe" is not a known payment gateway`},
		{"TLS_CERT_FILE without TLS_KEY_FILE", "order", dev("TLS_CERT_FILE=" + certFile), "TLS_CERT_FILE/TLS_KEY_FILE: set both or neither"},
		{"a TLS key that does not match the certificate", "order", dev("TLS_CERT_FILE="+certFile, "TLS_KEY_FILE="+otherKey), "TLS_CERT_FILE/TLS_KEY_FILE: certificate " + certFile + " with key " + otherKey + ": tls: private key does not match public key"},
		{"an AMQP_CA_FILE that holds no certificate", "order", dev("AMQP_URL=amqps://guest:guest@127.0.0.1:5671/", "AMQP_CA_FILE="+notPEM), "AMQP_CA_FILE: " + notPEM + " holds no PEM certificate"},
	}
	for _, tt := range refusals {
		t.Run(tt.binary+"/refuses "+tt.name, func(t *testing.T) {
			t.Parallel()
			p := stack.StartProcess(t, stack.Binary(t, tt.binary), append(tt.environ, "HTTP_ADDR=127.0.0.1:0")...)
			code := p.Exit(t, 30*time.Second)
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			lines := strings.Split(strings.TrimRight(p.Stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tt.binary+": ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line starting with \"%s: \" and naming %q", p.Stderr.String(), tt.binary, tt.want)
			}
			if out := p.Stderr.String() + p.Stdout.String(); strings.Contains(out, "guest:guest@") || strings.Contains(out, ":pw@") {
				t.Errorf("output leaks a broker or database password:\n%s", out)
			}
		})
	}
}

// TestListensOnLoopbackByDefault checks that a service started without
// HTTP_ADDR listens on its port on 127.0.0.1 only, not on every interface.
func TestListensOnLoopbackByDefault(t *testing.T) {
	_, dbURL := pgtest.NewDB(t)
	// The registry's port may be taken on a developer's machine (make run);
	// the test needs it free.
	spec := stack.Services[0]
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(spec.Port))
	if err != nil {
		t.Skipf("port %d is in use (is make run running?): %v", spec.Port, err)
	}
	_ = ln.Close()
	p := stack.StartProcess(t, stack.Binary(t, spec.Name),
		"ORDERLY_ENV=development",
		"DATABASE_URL="+dbURL,
		"AMQP_URL="+rabbittest.NewVhost(t),
		"SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
		"SHUTDOWN_DELAY=0s",
	)
	if got, want := p.Addr(t), "127.0.0.1:"+strconv.Itoa(spec.Port); got != want {
		t.Errorf("%s listens on %s without HTTP_ADDR, want %s", spec.Name, got, want)
	}
	p.Signal(t, syscall.SIGTERM)
	if code := p.Exit(t, shutdownTimeout); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0\n%s", code, p.Stderr.String())
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

// freeAddr is a loopback address with a port nothing listens on: bound,
// then freed, for a setting that needs a fixed port.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startOrder starts the order binary in development mode on its own
// database and vhost, listening on a free port, with the settings extra
// added.
func startOrder(t *testing.T, extra ...string) *stack.Process {
	t.Helper()
	_, dbURL := pgtest.NewDB(t)
	return stack.StartProcess(t, stack.Binary(t, "order"), append([]string{
		"ORDERLY_ENV=development",
		"DATABASE_URL=" + dbURL,
		"AMQP_URL=" + rabbittest.NewVhost(t),
		"HTTP_ADDR=127.0.0.1:0",
		"SHUTDOWN_TIMEOUT=" + shutdownTimeout.String(),
		"SHUTDOWN_DELAY=0s",
	}, extra...)...)
}
