// Package stack runs Orderly's real service binaries for tests: it builds
// them once per test binary, gives every stack its own databases on the real
// PostgreSQL and its own RabbitMQ vhost, starts the services on free ports,
// waits until they are ready, and talks to them through their public HTTP
// APIs. Everything it starts or creates is stopped or dropped by t.Cleanup.
//
// A test package that uses it declares
//
//	func TestMain(m *testing.M) { stack.Main(m) }
//
// so that the binaries are built at most once and removed afterwards.
package stack

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly/orderly/pkg/leaktest"
	"github.com/orderly/orderly/pkg/poll"
)

// build is the state of the once-per-process build of the binaries.
var build struct {
	mu   sync.Mutex
	dir  string          // where the binaries go; set by Main or on first use
	done map[string]bool // binaries already built into dir
	err  map[string]error
}

// Main runs the package's tests, fails the binary if they passed but left
// goroutines running (see leaktest; opts are goleak's, for a library's
// goroutine that outlives the tests by design), and then removes the
// binaries the stack built for them. Call it from TestMain; it does not
// return.
func Main(m *testing.M, opts ...goleak.Option) {
	leaktest.Main(m, append(opts, goleak.Cleanup(func(code int) {
		build.mu.Lock()
		if build.dir != "" {
			_ = os.RemoveAll(build.dir)
		}
		build.mu.Unlock()
		os.Exit(code)
	}))...)
}

// Binary returns the path of service name's binary, building it on first
// use (with `go build`, inside the service's own module, as its Dockerfile
// does). A failed build fails tb, and every later test that needs it.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	build.mu.Lock()
	defer build.mu.Unlock()
	if build.dir == "" {
		dir, err := os.MkdirTemp("", "orderly-stack-bin-")
		if err != nil {
			tb.Fatalf("stack: temp dir for binaries: %v", err)
		}
		build.dir = dir
		build.done = map[string]bool{}
		build.err = map[string]error{}
	}
	if err := build.err[name]; err != nil {
		tb.Fatalf("stack: build %s failed earlier: %v", name, err)
	}
	path := filepath.Join(build.dir, name)
	if build.done[name] {
		return path
	}
	root, err := RepoRoot()
	if err != nil {
		tb.Fatalf("stack: %v", err)
	}
	src, pkg := filepath.Join(root, "services", name), "./cmd/"+name
	if name == "devrun" {
		src, pkg = filepath.Join(root, "tests"), "./cmd/devrun"
	}
	cmd := exec.Command(goBinary(), "build", "-o", path, pkg)
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		build.err[name] = fmt.Errorf("%w\n%s", err, out)
		tb.Fatalf("stack: build %s: %v\n%s", name, err, out)
	}
	build.done[name] = true
	return path
}

// goBinary is the go command: on PATH, else where the Makefile looks.
func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// RepoRoot returns the repository's root: the nearest parent of the working
// directory that holds go.work.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.work above the working directory")
		}
		dir = parent
	}
}

// Process is a running binary with its output captured.
type Process struct {
	Name   string
	Stdout *Buffer
	Stderr *Buffer

	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, set before done closes
}

// StartProcess starts the binary at path with the test's environment minus
// the variables the services read (an operator's DATABASE_URL must not leak
// in), plus environ. A process still running when tb ends is killed, and
// its output logged.
func StartProcess(tb testing.TB, path string, environ ...string) *Process {
	tb.Helper()
	p := startProcess(tb, path, environ...)
	tb.Cleanup(func() {
		if p.Running() {
			_ = p.cmd.Process.Kill()
			<-p.done
			tb.Logf("%s killed at the end of the test; its output:\n%s\n%s", p.Name, p.Stdout.Tail(64<<10), p.Stderr.String())
		}
	})
	return p
}

// startProcess starts the binary as StartProcess does, leaving its end to
// the caller.
func startProcess(tb testing.TB, path string, environ ...string) *Process {
	tb.Helper()
	cmd := exec.Command(path)
	cmd.Env = append(FilterEnv(os.Environ()), environ...)
	p := &Process{Name: filepath.Base(path), Stdout: &Buffer{}, Stderr: &Buffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("stack: start %s: %v", path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p
}

// serviceEnv are the variables that some service reads.
var serviceEnv = map[string]bool{
	"DATABASE_URL": true, "AMQP_URL": true, "HTTP_ADDR": true, "AUTH_JWT_SECRET": true,
	"AUTH_JWT_ISSUER": true, "AUTH_JWT_AUDIENCE": true, "ORDERLY_ENV": true,
	"OTEL_EXPORTER_OTLP_ENDPOINT": true, "LOG_LEVEL": true, "CONNECT_TIMEOUT": true,
	"SHUTDOWN_TIMEOUT": true, "SHUTDOWN_DELAY": true, "RATE_LIMIT_RPS": true,
	"ORDER_RESERVE_TIMEOUT": true, "ORDER_PAYMENT_TIMEOUT": true, "ORDER_SWEEP_INTERVAL": true,
	"PAYMENT_GATEWAY_LATENCY": true, "PPROF_ADDR": true,
	"AUTH_JWT_SECRET_PREVIOUS": true, "AUTH_JWT_MAX_TTL": true,
	"TRACKING_SECRET": true, "TRACKING_SECRET_PREVIOUS": true, "TRACKING_TOKEN_TTL": true,
	"PAYMENT_GATEWAY": true, "PAYMENT_ALLOW_SIMULATED": true,
}

// FilterEnv returns environ without the variables the services read, so
// that only what a test sets reaches them.
func FilterEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if serviceEnv[k] || strings.HasPrefix(k, "NOTIFICATION_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// PID returns the operating system's id of the process; after the process
// exited it may belong to another one.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Addr waits up to a minute for the "http server listening" log line and
// returns the address it names: the services report the port they bound on
// :0. It fails tb if the process exits first.
func (p *Process) Addr(tb testing.TB) string {
	tb.Helper()
	var addr string
	poll.UntilNil(tb, time.Minute, p.Name+" to log its listening address", func() error {
		if !p.Running() {
			tb.Fatalf("%s exited before listening: %v\nstdout:\n%s\nstderr:\n%s", p.Name, p.err, p.Stdout.Tail(64<<10), p.Stderr.String())
		}
		sc := bufio.NewScanner(strings.NewReader(p.Stdout.String()))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http server listening" {
				addr = line.Addr
				return nil
			}
		}
		return errors.New("not yet")
	})
	return addr
}

// Signal sends sig to the process.
func (p *Process) Signal(tb testing.TB, sig os.Signal) {
	tb.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("stack: signal %v to %s: %v", sig, p.Name, err)
	}
}

// Exit waits up to d for the process to exit and returns its exit code. It
// fails tb when the process is still running then.
func (p *Process) Exit(tb testing.TB, d time.Duration) int {
	tb.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		tb.Fatalf("%s still running %v later\nstdout:\n%s\nstderr:\n%s", p.Name, d, p.Stdout.Tail(64<<10), p.Stderr.String())
	}
	var exitErr *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &exitErr):
		return exitErr.ExitCode()
	}
	tb.Fatalf("stack: wait for %s: %v", p.Name, p.err)
	return -1
}

// Buffer keeps what a process writes, safe for the process's writes and a
// test's reads at once. It keeps the last bufferLimit bytes at most (the
// start of a service's log, where it says where it listens, is read long
// before that), so that a service logging for minutes under load does not
// grow the test's memory without bound.
type Buffer struct {
	mu  sync.Mutex
	buf []byte
}

// bufferLimit bounds what a Buffer keeps.
const bufferLimit = 8 << 20

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf)+len(p) > bufferLimit {
		// Keep the newer half: one copy per bufferLimit/2 bytes written.
		keep := b.buf[len(b.buf)-min(len(b.buf), bufferLimit/2):]
		b.buf = append(b.buf[:0], keep...)
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// String returns what is kept of the output so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Tail returns at most the last n bytes written, from a line start.
func (b *Buffer) Tail(n int) string {
	s := b.String()
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return "…\n" + s
}
