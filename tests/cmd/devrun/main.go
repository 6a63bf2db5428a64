// Command devrun runs the whole Orderly stack on a developer's machine; it is
// what `make run` starts. It creates each service's database when missing,
// starts the four service binaries on their default ports with the caller's
// environment, prefixes every log line with the service's name, prints the
// URLs once every service is ready, seeds a demo catalog through the
// inventory admin API (only the products that are missing, so a restart
// keeps what the developer changed), mints a demo customer's and an admin's
// bearer tokens, and prints ready-to-paste commands that place and fetch an
// order. It stays in the foreground until Ctrl-C or SIGTERM, which it passes
// on to every service before waiting for them to drain. If a service exits
// on its own, devrun stops the others and exits 1.
//
// Environment:
//
//	ORDERLY_BIN_DIR             where the service binaries are (default: devrun's own directory)
//	ORDERLY_ADMIN_DATABASE_URL  server on which to create the databases
//	                            (default postgres://postgres@127.0.0.1:5432/postgres)
//	SHUTDOWN_TIMEOUT            passed on to the services; devrun waits a little longer
//	AUTH_JWT_SECRET, AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE
//	                            passed on to the services, and used to sign the demo
//	                            tokens (the secret defaults to the development one)
//
// Everything else in the environment (AUTH_JWT_SECRET, AMQP_URL, LOG_LEVEL,
// ORDERLY_ENV, …) reaches every service unchanged, except DATABASE_URL and
// HTTP_ADDR, which differ per service and are set by devrun. ORDERLY_ENV
// defaults to development here (the services' own default is production,
// which refuses the local servers' guest user and plain connections).
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/orderly/orderly/tests/stack"
)

// service is one binary devrun starts, with the address it listens on by
// default.
type service struct {
	name string
	port string
	what string
}

// services are the registry's (tests/stack), in start order.
var services = func() []service {
	out := make([]service, len(stack.Services))
	for i, s := range stack.Services {
		out[i] = service{name: s.Name, port: strconv.Itoa(s.Port), what: s.Role}
	}
	return out
}()

const defaultAdminURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx, stop)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "devrun:", err)
		os.Exit(1)
	}
}

// run starts the stack and blocks until it has stopped. stopSignals ends
// devrun's own signal handling once shutdown starts, so that a second Ctrl-C
// is caught by the forced-stop handler instead.
func run(ctx context.Context, stopSignals func()) error {
	binDir := os.Getenv("ORDERLY_BIN_DIR")
	if binDir == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find binaries: %w (set ORDERLY_BIN_DIR)", err)
		}
		binDir = filepath.Dir(exe)
	}
	adminURL := os.Getenv("ORDERLY_ADMIN_DATABASE_URL")
	if adminURL == "" {
		adminURL = defaultAdminURL
	}
	wait := 30 * time.Second
	if s := os.Getenv("SHUTDOWN_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("SHUTDOWN_TIMEOUT: %w", err)
		}
		wait = d + 10*time.Second
	}
	for _, s := range services {
		if _, err := os.Stat(filepath.Join(binDir, s.name)); err != nil { //nolint:gosec // the developer's own ORDERLY_BIN_DIR
			return fmt.Errorf("service binary: %w (run `make run`, which builds them, or set ORDERLY_BIN_DIR)", err)
		}
	}

	dbURLs, err := createDatabases(ctx, adminURL)
	if err != nil {
		return err
	}

	out := &lockedWriter{w: os.Stdout}
	var children []*child
	exited := make(chan *child, len(services))
	for _, s := range services {
		c, err := start(s, filepath.Join(binDir, s.name), dbURLs[s.name], out, exited)
		if err != nil {
			stopAll(children, wait)
			return err
		}
		children = append(children, c)
	}

	readyCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	err = waitReady(readyCtx, exited)
	cancel()
	switch {
	case ctx.Err() != nil:
		// Interrupted while starting: stop quietly below.
	case err != nil:
		stopAll(children, wait)
		return err
	default:
		demo, err := seedDemo(ctx, dbURLs["order"])
		if err != nil {
			if ctx.Err() == nil {
				stopAll(children, wait)
				return err
			}
			break
		}
		out.print(banner(demo))
	}

	var failed *child
	select {
	case <-ctx.Done():
	case failed = <-exited:
	}
	stopSignals()
	forced := make(chan os.Signal, 1)
	signal.Notify(forced, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(forced)
	go func() {
		<-forced
		out.print("devrun: second signal, killing the services\n")
		for _, c := range children {
			_ = c.cmd.Process.Kill()
		}
	}()

	out.print("devrun: stopping the services\n")
	errs := stopAll(children, wait)
	if failed != nil {
		return fmt.Errorf("%s exited on its own (%w); stopped the others", failed.name, failed.err)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	out.print("devrun: every service stopped cleanly\n")
	return nil
}

// createDatabases creates orderly_<service> for every service that lacks
// one, on the server of adminURL, and returns each service's DATABASE_URL.
// The services migrate their databases themselves when they start.
func createDatabases(ctx context.Context, adminURL string) (map[string]string, error) {
	u, err := url.Parse(adminURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, fmt.Errorf("ORDERLY_ADMIN_DATABASE_URL: want a postgres:// URL such as %s", defaultAdminURL)
	}
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL at %s: %w (is it running?)", u.Redacted(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	urls := make(map[string]string, len(services))
	for _, s := range services {
		name := "orderly_" + s.name
		var exists bool
		if err := conn.QueryRow(cctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
			return nil, fmt.Errorf("look up database %s: %w", name, err)
		}
		if !exists {
			_, err := conn.Exec(cctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
			// 42P04: another devrun created it in between, which is fine.
			if err != nil && pgCode(err) != "42P04" {
				return nil, fmt.Errorf("create database %s: %w", name, err)
			}
			fmt.Printf("devrun: created database %s\n", name)
		}
		du := *u
		du.Path = "/" + name
		urls[s.name] = du.String()
	}
	return urls, nil
}

// pgCode returns the SQLSTATE of a Postgres error, or "".
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// child is a running service.
type child struct {
	service
	cmd  *exec.Cmd
	done chan struct{}
	err  error // from Wait, set before done closes
}

// start runs the service's binary with the caller's environment (in
// development mode and with the dashboard reading every service's metrics,
// unless it says otherwise) and its own DATABASE_URL and HTTP_ADDR, its output prefixed with its name. exited receives the child
// when it ends.
func start(s service, path, dbURL string, out *lockedWriter, exited chan<- *child) (*child, error) {
	cmd := exec.Command(path) //nolint:gosec // a binary from the developer's own ORDERLY_BIN_DIR
	// The caller's ORDERLY_ENV, if any, comes later and wins: exec keeps the
	// last value of a variable.
	env := append([]string{"ORDERLY_ENV=development", "NOTIFICATION_DASHBOARD_SOURCES=" + dashboardSources()}, passthrough(os.Environ())...)
	cmd.Env = append(env, "DATABASE_URL="+dbURL, "HTTP_ADDR=127.0.0.1:"+s.port)
	prefix := fmt.Sprintf("%-12s | ", s.name)
	stdout := &prefixWriter{prefix: prefix, out: out}
	stderr := &prefixWriter{prefix: prefix, out: out}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// A process group of its own keeps the terminal's Ctrl-C away from
		// the service, so that devrun alone decides when and how it stops;
		// Pdeathsig stops it if devrun itself is killed.
		Setpgid:   true,
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	c := &child{service: s, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		stdout.flush()
		stderr.flush()
		close(c.done)
		exited <- c
	}()
	return c, nil
}

// dashboardSources is every service's /metrics, for the operators'
// dashboard (NOTIFICATION_DASHBOARD_SOURCES; only notification reads it).
func dashboardSources() string {
	out := make([]string, len(services))
	for i, s := range services {
		out[i] = s.name + "=http://127.0.0.1:" + s.port + "/metrics"
	}
	return strings.Join(out, ",")
}

// passthrough returns the caller's environment without the settings that
// differ per service.
func passthrough(environ []string) []string {
	var env []string
	for _, kv := range environ {
		if strings.HasPrefix(kv, "DATABASE_URL=") || strings.HasPrefix(kv, "HTTP_ADDR=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// waitReady polls every service's /readyz until all answer 200. It returns
// an error when a service exits first or ctx ends.
func waitReady(ctx context.Context, exited <-chan *child) error {
	client := http.Client{Timeout: 2 * time.Second}
	pending := make(map[string]string, len(services))
	for _, s := range services {
		pending[s.name] = "http://127.0.0.1:" + s.port + "/readyz"
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for len(pending) > 0 {
		select {
		case c := <-exited:
			return fmt.Errorf("%s exited while starting: %w (its log is above)", c.name, c.err)
		case <-ctx.Done():
			var names []string
			for n := range pending {
				names = append(names, n)
			}
			return fmt.Errorf("not ready in time: %s", strings.Join(names, ", "))
		case <-tick.C:
		}
		for name, u := range pending {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				delete(pending, name)
			}
		}
	}
	return nil
}

// stopAll sends SIGTERM to every child still running and waits up to wait
// for all of them, killing those that outlast it. It returns one error per
// child that did not exit cleanly.
func stopAll(children []*child, wait time.Duration) []error {
	for _, c := range children {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(wait)
	var errs []error
	for _, c := range children {
		select {
		case <-c.done:
		case <-deadline:
			_ = c.cmd.Process.Kill()
			<-c.done
			errs = append(errs, fmt.Errorf("%s did not stop within %v and was killed", c.name, wait))
			continue
		}
		if c.err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, c.err))
		}
	}
	return errs
}

// lockedWriter serializes whole writes from several services, so that their
// lines never interleave mid-line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) print(s string) { _, _ = io.WriteString(l, s) }

// prefixWriter writes each complete line it is given to out with prefix in
// front; a trailing partial line waits for the rest, or for flush.
type prefixWriter struct {
	prefix string
	out    io.Writer

	mu  sync.Mutex
	buf []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	var lines bytes.Buffer
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		lines.WriteString(p.prefix)
		lines.Write(p.buf[:i+1])
		p.buf = p.buf[i+1:]
	}
	if lines.Len() > 0 {
		if _, err := p.out.Write(lines.Bytes()); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		_, _ = p.out.Write([]byte(p.prefix + string(p.buf) + "\n"))
		p.buf = nil
	}
}
