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
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
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
