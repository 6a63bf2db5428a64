// Package lifecycle tests the four service binaries as an operator runs
// them: built with `go build`, configured only through the environment,
// pointed at a fresh database and vhost on the real servers, probed over
// HTTP and stopped with SIGTERM.
package lifecycle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// services are the binaries under test, by name.
var services = []string{"order", "inventory", "payment", "notification"}

// shutdownTimeout is the SHUTDOWN_TIMEOUT the services get; a clean exit
// must come within it.
const shutdownTimeout = 10 * time.Second

func TestLifecycle(t *testing.T) {
	bin := mustBuild(t, services...)

	for _, name := range services {
		t.Run(name+"/starts ready and drains on SIGTERM", func(t *testing.T) {
			t.Parallel()
			_, dbURL := pgtest.NewDB(t)
			p := mustStartService(t, filepath.Join(bin, name),
				"DATABASE_URL="+dbURL,
				"AMQP_URL="+rabbittest.NewVhost(t),
				"HTTP_ADDR=127.0.0.1:0",
				"SHUTDOWN_TIMEOUT="+shutdownTimeout.String(),
				"SHUTDOWN_DELAY=200ms",
			)
			base := "http://" + p.mustAddr(t)

			eventually(t, 30*time.Second, name+" /healthz to answer 200", func() bool {
				code, _, _ := get(base + "/healthz")
				return code == http.StatusOK
			})
			var body string
			eventually(t, 30*time.Second, name+" /readyz to answer 200", func() bool {
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

			resp, err := http.Get(base + "/metrics") //nolint:noctx // local test server
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

			p.signal(t, syscall.SIGTERM)
			code := p.mustExit(t, shutdownTimeout)
			if code != 0 {
				t.Fatalf("exit code after SIGTERM = %d, want 0\nstdout:\n%s\nstderr:\n%s", code, p.stdout.String(), p.stderr.String())
			}
			if !strings.Contains(p.stdout.String(), `"msg":"drained and stopped cleanly"`) {
				t.Errorf("log does not say the service drained:\n%s", p.stdout.String())
			}
			if s := p.stderr.String(); s != "" {
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
			p := mustStartService(t, filepath.Join(bin, "order"), append(tt.environ, "HTTP_ADDR=127.0.0.1:0")...)
			code := p.mustExit(t, 30*time.Second)
			if code != 1 {
				t.Errorf("exit code = %d, want 1", code)
			}
			lines := strings.Split(strings.TrimRight(p.stderr.String(), "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "order: ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("stderr = %q, want one line starting with \"order: \" and naming %q", p.stderr.String(), tt.want)
			}
			if strings.Contains(p.stderr.String()+p.stdout.String(), "guest:guest@") {
				t.Errorf("output leaks the broker password:\n%s%s", p.stdout.String(), p.stderr.String())
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

// mustBuild builds the services' binaries into a temporary directory and
// returns it. Each is built inside its own module, as its Dockerfile does,
// so the build works with or without the workspace.
func mustBuild(tb testing.TB, names ...string) string {
	tb.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = "/usr/local/go/bin/go"
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	for _, n := range names {
		cmd := exec.Command(goBin, "build", "-o", filepath.Join(dir, n), "./cmd/"+n)
		cmd.Dir = filepath.Join(root, "services", n)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("build %s: %v\n%s", n, err, out)
		}
	}
	return dir
}

// process is a running service binary with its output captured.
type process struct {
	cmd    *exec.Cmd
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	err    error // from Wait, set before done closes
}

// mustStartService starts the binary at path with the test's environment
// plus environ (which wins), and kills it when the test ends if it is still
// running. Settings meant for other runs (an operator's DATABASE_URL) are
// not inherited.
func mustStartService(tb testing.TB, path string, environ ...string) *process {
	tb.Helper()
	cmd := exec.Command(path)
	cmd.Env = append(filterEnv(os.Environ()), environ...)
	p := &process{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = cmd.Process.Kill()
			<-p.done
			tb.Logf("%s killed at the end of the test; its output:\n%s\n%s", filepath.Base(path), p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// filterEnv drops the variables the services read, so only what a test sets
// reaches them.
func filterEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "DATABASE_URL", "AMQP_URL", "HTTP_ADDR", "AUTH_JWT_SECRET", "ORDERLY_ENV",
			"OTEL_EXPORTER_OTLP_ENDPOINT", "LOG_LEVEL", "CONNECT_TIMEOUT", "SHUTDOWN_TIMEOUT", "SHUTDOWN_DELAY":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// mustAddr waits for the "http server listening" log line and returns the
// address it names: the services report the port they bound on :0.
func (p *process) mustAddr(tb testing.TB) string {
	tb.Helper()
	var addr string
	eventually(tb, 60*time.Second, "the service to log its listening address", func() bool {
		select {
		case <-p.done:
			tb.Fatalf("service exited before listening: %v\nstdout:\n%s\nstderr:\n%s", p.err, p.stdout.String(), p.stderr.String())
		default:
		}
		sc := bufio.NewScanner(strings.NewReader(p.stdout.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http server listening" {
				addr = line.Addr
				return true
			}
		}
		return false
	})
	return addr
}

func (p *process) signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %v: %v", sig, err)
	}
}

// mustExit waits up to d for the process to exit and returns its exit code.
func (p *process) mustExit(tb testing.TB, d time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		tb.Fatalf("process still running %v later\nstdout:\n%s\nstderr:\n%s", d, p.stdout.String(), p.stderr.String())
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode()
	}
	tb.Fatalf("wait: %v", p.err)
	return -1
}

// eventually polls cond until it holds, failing the test after d.
func eventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get returns the status and body of GET url, or 0 when it fails.
func get(url string) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url) //nolint:noctx // bounded by the client timeout
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// syncBuffer is a bytes.Buffer safe for the process's writes and the test's
// reads at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
