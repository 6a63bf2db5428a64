package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// Options tune a stack. The zero value suits most tests: saga deadlines
// long enough not to fire by accident on a busy machine, a fast deadline
// sweep, no rate limiting to speak of.
type Options struct {
	// ReserveTimeout and PaymentTimeout are the order service's saga step
	// deadlines (ORDER_RESERVE_TIMEOUT, ORDER_PAYMENT_TIMEOUT); default 15s,
	// long enough that a busy machine never trips them by accident.
	ReserveTimeout, PaymentTimeout time.Duration
	// SweepInterval is how often the order service looks for orders past
	// their deadline (ORDER_SWEEP_INTERVAL); default 200ms.
	SweepInterval time.Duration
	// GatewayLatency is the simulated payment gateway's latency
	// (PAYMENT_GATEWAY_LATENCY); zero leaves the service's default.
	GatewayLatency time.Duration
	// RateLimitRPS is every service's per-caller request limit
	// (RATE_LIMIT_RPS); default 10,000, so that tests are never limited by
	// accident.
	RateLimitRPS int
	// Notification also starts the notification service.
	Notification bool
	// Env is added to every service's environment, after the stack's own
	// settings (so it wins). LOG_LEVEL must stay info or debug: the stack
	// learns each service's port from its "http server listening" line.
	Env []string
	// ServiceEnv is added to one service's environment (keyed by name,
	// "order"), after Env, for settings that must differ between services
	// (a PPROF_ADDR each, for profiling).
	ServiceEnv map[string][]string
	// AMQPURL is the vhost the stack uses; empty gives it a fresh one
	// (rabbittest.NewVhost). A test that prepares the vhost itself (broker
	// users, pre-declared exchanges) passes it here.
	AMQPURL string
	// Dial, when set, rewrites the host:port of the servers the services
	// are given: kind is "postgres" (DATABASE_URL) or "amqp" (AMQP_URL),
	// and the address it returns takes the place of hostport. A test puts
	// a proxy between the services and their backends with it (network
	// faults); the stack's own pools (Service.DB) and Stack.AMQPURL keep
	// the direct address, so the test can look behind a broken link.
	Dial func(kind, hostport string) string
	// PoolMax, when positive, caps each service process's database pool
	// (pool_max_conns in its DATABASE_URL). Scenarios that run many
	// replicas set it, so that their pools together stay within the
	// server's max_connections (100 by default) even when a fault makes
	// every pool grow to its cap.
	PoolMax int
}

// Stack is a running set of services with their own databases and vhost.
type Stack struct {
	// Secret is the AUTH_JWT_SECRET every service shares.
	Secret []byte
	// TrackingSecret is the TRACKING_SECRET of order (which mints tracking
	// tokens) and notification (which checks them).
	TrackingSecret []byte
	// AMQPURL is the stack's vhost.
	AMQPURL string

	Order, Inventory, Payment, Notification *Service
	byName                                  map[string]*Service

	client *http.Client
	tokens sync.Map // subject → token
}

// Service is one running service of a stack.
type Service struct {
	// Name is the binary's name ("order").
	Name string
	// DBURL is the service's own database, and DB a pool on it for tests
	// that look behind the API (row counts).
	DBURL string
	DB    *pgxpool.Pool

	env  []string
	mu   sync.Mutex
	url  string
	proc *Process
}

// New builds the binaries (once per test binary), creates a database per
// service and a vhost, starts order, inventory and payment (and
// notification when asked) and waits until every one is ready. All of it is
// undone when tb ends.
func New(tb testing.TB, o Options) *Stack {
	tb.Helper()
	if o.ReserveTimeout == 0 {
		o.ReserveTimeout = 15 * time.Second
	}
	if o.PaymentTimeout == 0 {
		o.PaymentTimeout = 15 * time.Second
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = 200 * time.Millisecond
	}
	if o.RateLimitRPS == 0 {
		o.RateLimitRPS = 10000
	}
	if o.AMQPURL == "" {
		o.AMQPURL = rabbittest.NewVhost(tb)
	}
	s := &Stack{
		Secret:         NewSecret(),
		TrackingSecret: NewSecret(),
		AMQPURL:        o.AMQPURL,
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512, IdleConnTimeout: 30 * time.Second},
		},
	}
	tb.Cleanup(s.client.CloseIdleConnections)
	common := []string{
		// The local servers have no TLS and the broker user is guest:
		// development mode, which the services run in only when told.
		"ORDERLY_ENV=development",
		"AMQP_URL=" + redial(tb, o.Dial, "amqp", s.AMQPURL),
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + string(s.Secret),
		"SHUTDOWN_TIMEOUT=10s",
		"SHUTDOWN_DELAY=0s",
		"RATE_LIMIT_RPS=" + strconv.Itoa(o.RateLimitRPS),
	}
	extra := map[string][]string{
		"order": {
			"ORDER_RESERVE_TIMEOUT=" + o.ReserveTimeout.String(),
			"ORDER_PAYMENT_TIMEOUT=" + o.PaymentTimeout.String(),
			"ORDER_SWEEP_INTERVAL=" + o.SweepInterval.String(),
			"TRACKING_SECRET=" + string(s.TrackingSecret),
		},
		// Every shopper of a test comes from 127.0.0.1: the per-address
		// cap on live streams would limit a load test by accident, as
		// RATE_LIMIT_RPS would.
		"notification": {"TRACKING_SECRET=" + string(s.TrackingSecret), "NOTIFICATION_MAX_PER_CLIENT=100000"},
	}
	if o.GatewayLatency > 0 {
		extra["payment"] = []string{"PAYMENT_GATEWAY_LATENCY=" + o.GatewayLatency.String()}
	}
	var names []string
	for _, n := range Names() {
		if n != "notification" || o.Notification {
			names = append(names, n)
		}
	}
	for _, n := range names {
		Binary(tb, n)
	}
	svcs := make([]*Service, len(names))
	for i, n := range names {
		pool, dbURL := pgtest.NewDB(tb)
		svcURL := redial(tb, o.Dial, "postgres", dbURL)
		if o.PoolMax > 0 {
			svcURL += "&pool_max_conns=" + strconv.Itoa(o.PoolMax)
		}
		env := append(append(append([]string{"DATABASE_URL=" + svcURL}, common...), extra[n]...), o.Env...)
		env = append(env, o.ServiceEnv[n]...)
		svcs[i] = &Service{Name: n, DBURL: dbURL, DB: pool, env: env}
	}
	// The stack, not the test or subtest that (re)starts a service, owns
	// its processes: they are stopped when the stack's test ends, before
	// the databases are dropped.
	tb.Cleanup(func() {
		// Stop them gracefully and together; dump their logs when the test
		// failed, since they are what explains a saga that went wrong.
		for _, svc := range svcs {
			if p := svc.process(); p != nil && p.Running() {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			}
		}
		for _, svc := range svcs {
			p := svc.process()
			if p == nil {
				continue
			}
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
				tb.Logf("%s did not stop within 15 s of SIGTERM and was killed", svc.Name)
			}
			if tb.Failed() {
				tb.Logf("=== %s log (tail) ===\n%s\n%s", svc.Name, p.Stdout.Tail(32<<10), p.Stderr.String())
			}
		}
	})
	// Start them all before waiting for any: each declares its own queues,
	// so nothing published once all are ready is unroutable.
	for _, svc := range svcs {
		svc.launch(tb)
	}
	for _, svc := range svcs {
		svc.waitReady(tb)
	}
	s.byName = make(map[string]*Service, len(svcs))
	for _, svc := range svcs {
		s.byName[svc.Name] = svc
	}
	s.Order, s.Inventory, s.Payment, s.Notification = s.byName["order"], s.byName["inventory"], s.byName["payment"], s.byName["notification"]
	return s
}

// redial returns rawURL with its host:port replaced by what dial makes of
// it, or rawURL itself when dial is nil.
func redial(tb testing.TB, dial func(kind, hostport string) string, kind, rawURL string) string {
	tb.Helper()
	if dial == nil {
		return rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		tb.Fatalf("stack: parse the %s URL: %v", kind, err)
	}
	u.Host = dial(kind, u.Host)
	return u.String()
}

// NewSecret returns a random secret of 64 hex digits, for AUTH_JWT_SECRET
// or TRACKING_SECRET.
func NewSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return []byte(hex.EncodeToString(b))
}

// TrackingToken returns the tracking token of orderID, as the order service
// would mint it now: for orders a test makes up and publishes directly.
func (s *Stack) TrackingToken(orderID string) string {
	return authn.NewTrackingTokens(s.TrackingSecret, nil, time.Hour).Token(orderID, time.Now())
}

// Service returns the running service named name, or nil when the stack
// does not run it.
func (s *Stack) Service(name string) *Service { return s.byName[name] }

// URL returns the service's base URL ("http://127.0.0.1:port"). It changes
// when the service is restarted.
func (svc *Service) URL() string {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.url
}

// PID returns the process id of the service's current process (it changes
// when the service is restarted), or 0 when it was never started.
func (svc *Service) PID() int {
	p := svc.process()
	if p == nil {
		return 0
	}
	return p.PID()
}

func (svc *Service) process() *Process {
	svc.mu.Lock()
	defer svc.mu.Unlock()
	return svc.proc
}

// launch starts the binary without waiting for it.
func (svc *Service) launch(tb testing.TB) {
	tb.Helper()
	p := startProcess(tb, Binary(tb, svc.Name), svc.env...)
	svc.mu.Lock()
	svc.proc, svc.url = p, ""
	svc.mu.Unlock()
}

// waitReady waits for the listening address and a 200 from /readyz.
func (svc *Service) waitReady(tb testing.TB) {
	tb.Helper()
	p := svc.process()
	base := "http://" + p.Addr(tb)
	poll.Ready(tb, time.Minute, base, func() error {
		if !p.Running() {
			return fmt.Errorf("%s exited while starting: %w\n%s\n%s", svc.Name, p.err, p.Stdout.Tail(32<<10), p.Stderr.String())
		}
		return nil
	})
	svc.mu.Lock()
	svc.url = base
	svc.mu.Unlock()
}

// Stop sends SIGTERM and waits for a clean exit (status 0).
func (svc *Service) Stop(tb testing.TB) {
	tb.Helper()
	p := svc.process()
	p.Signal(tb, syscall.SIGTERM)
	if code := p.Exit(tb, 20*time.Second); code != 0 {
		tb.Fatalf("%s exited with %d after SIGTERM\n%s\n%s", svc.Name, code, p.Stdout.Tail(32<<10), p.Stderr.String())
	}
}

// Kill sends SIGKILL and waits for the process to die: a crash, with no
// drain.
func (svc *Service) Kill(tb testing.TB) {
	tb.Helper()
	p := svc.process()
	p.Signal(tb, syscall.SIGKILL)
	p.Exit(tb, 10*time.Second)
}

// Start runs the service again on the same database and vhost (on a new
// port; see URL) and waits until it is ready. The service must have been
// stopped.
func (svc *Service) Start(tb testing.TB) {
	tb.Helper()
	if p := svc.process(); p != nil && p.Running() {
		tb.Fatalf("stack: %s is still running", svc.Name)
	}
	svc.launch(tb)
	svc.waitReady(tb)
}

// Log returns what the service's current process has written to stdout.
func (svc *Service) Log() string { return svc.process().Stdout.String() }

// Token returns a customer token for subject, valid for an hour.
func (s *Stack) Token(tb testing.TB, subject string) string {
	tb.Helper()
	return s.token(tb, subject, "")
}

// AdminToken returns a token with the admin role, valid for an hour.
func (s *Stack) AdminToken(tb testing.TB) string {
	tb.Helper()
	return s.token(tb, "ops-admin", authn.RoleAdmin)
}

func (s *Stack) token(tb testing.TB, subject, role string) string {
	tb.Helper()
	key := role + "/" + subject
	if t, ok := s.tokens.Load(key); ok {
		return t.(string)
	}
	t, err := authn.Issue(s.Secret, authn.Claims{Subject: subject, Role: role, ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	if err != nil {
		tb.Fatalf("stack: issue token: %v", err)
	}
	s.tokens.Store(key, t)
	return t
}

// NewCustomer returns a fresh customer id (a UUID) and a token for it.
func (s *Stack) NewCustomer(tb testing.TB) (id, token string) {
	tb.Helper()
	id = NewUUID()
	return id, s.Token(tb, id)
}

// NewUUID returns a random (version 4) UUID.
func NewUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// callContext returns a context bounded by d for one call against the stack.
func callContext(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

// AddReplica starts another process of the stack's service name on the
// same database and vhost (on a port of its own; see URL) and waits until
// it is ready: a second replica behind the same queues, as production runs
// several. It is stopped when tb ends, before the stack's own services. A
// replica that cannot start fails tb.
func (s *Stack) AddReplica(tb testing.TB, name string) *Service {
	tb.Helper()
	orig := s.byName[name]
	if orig == nil {
		tb.Fatalf("stack: %s is not running, so it has no replica to add", name)
	}
	svc := &Service{Name: name, DBURL: orig.DBURL, DB: orig.DB, env: orig.env}
	tb.Cleanup(func() {
		p := svc.process()
		if p == nil || !p.Running() {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			tb.Logf("%s replica did not stop within 15 s of SIGTERM and was killed", name)
		}
		if tb.Failed() {
			tb.Logf("=== %s replica log (tail) ===\n%s\n%s", name, p.Stdout.Tail(32<<10), p.Stderr.String())
		}
	})
	svc.launch(tb)
	svc.waitReady(tb)
	return svc
}
