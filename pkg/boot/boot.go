// Package boot is the start-up and shutdown wiring that every Orderly service
// shares, so that none of it is copied between services: configuration from
// the environment, telemetry, the Postgres pool and its migrations, the
// RabbitMQ connection, health checks, the HTTP router, and a Run loop that
// starts the server, the outbox relay and the consumers and stops them in
// order on SIGTERM.
//
// A service's main is boot.Main("order", start), and its start reads:
//
//	cfg, err := boot.LoadConfig(environ, "order", "127.0.0.1:8080")
//	svc, err := boot.Start(ctx, cfg, boot.Messaging, ownMigrations)
//	svc.Publishes(eventsv1.ExchangeOrder)
//	svc.AddConsumers(consume.New(store, svc.Log).Consumers()...)
//	svc.Every("deadline sweep", time.Second, sweeper.Once)
//	httpapi.New(httpapi.Options{…}).Routes(svc.Router)
//	return svc, nil
package boot

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/telemetry"
)

// Messaging is the migration set of the outbox and inbox tables, for the
// services that publish or consume through them; pass it to Start along
// with the service's own. Its upkeep forgets message ids past
// inbox.Retention, hourly.
var Messaging = pg.Migration{
	FS:    migrations.Messaging,
	Table: "goose_messaging",
	Upkeep: &pg.Upkeep{Name: "inbox purge", Interval: time.Hour, Run: func(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
		return inbox.Purge(ctx, pool, inbox.Retention)
	}},
}

// Service is a started service: its resources are open and its HTTP router
// answers health and metrics. Between Start and Run the service adds its
// routes to Router, the exchanges it publishes to (Publishes), its consumers
// (AddConsumers) and its background work (Go, Every). Fields set by Start
// must not be replaced.
type Service struct {
	// Config is what the service was started with.
	Config Config
	// Log is the service's logger (JSON on stdout with trace ids).
	Log *slog.Logger
	// Telemetry holds the tracer and meter providers and the metrics registry.
	Telemetry *telemetry.Telemetry
	// Pool is the service's database, migrated.
	Pool *pgxpool.Pool
	// Rabbit is the broker connection; it re-dials by itself.
	Rabbit *rabbit.Conn
	// Health backs /readyz; services may Add checks of their own.
	Health *httpx.Health
	// Router already serves /healthz, /readyz and /metrics (only /healthz
	// when ADMIN_ADDR moves the others to the admin listener). It
	// resolves client addresses behind TRUSTED_PROXIES (httpx.ClientAddr).
	Router *chi.Mux

	// topology is declared by Run before anything else starts, so that no
	// event is unroutable once the services run: the exchanges of
	// Publishes and the consumers' queues.
	topology rabbit.Topology
	// relay publishes the outbox when the service Publishes; it stops
	// last, after the consumers, so that events they wrote while draining
	// go out, and then publisher is closed.
	relay     *outbox.Relay
	publisher *rabbit.Publisher

	workers []worker
	onHTTP  []func()

	// tls is the HTTP server's TLS configuration; nil serves plain HTTP.
	tls *tls.Config
	// admin serves /healthz, /readyz and /metrics on ADMIN_ADDR; nil
	// when it is unset.
	admin *chi.Mux

	addr      atomic.Pointer[string]
	adminAddr atomic.Pointer[string]

	closers   []closer
	closeOnce sync.Once
	closeErr  error
	running   atomic.Bool
}

// worker is a long-running part of the service that Run starts and stops.
type worker struct {
	name string
	run  func(ctx context.Context) error
}

// closer releases one resource opened by Start.
type closer struct {
	name  string
	close func(ctx context.Context) error
}

// Start sets up, in order, telemetry, the Postgres pool, the migration sets,
// the RabbitMQ connection, the health checks (postgres, rabbitmq, migrations)
// and the router. Reaching Postgres and RabbitMQ is bounded by
// cfg.ConnectTimeout. On failure it closes whatever it had opened and
// returns an error saying which step failed.
func Start(ctx context.Context, cfg Config, sets ...pg.Migration) (_ *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Service{Config: cfg}
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			_ = s.closeAll(cctx)
		}
	}()

	tel, flush, err := telemetry.Setup(ctx, telemetry.Config{
		Service:            cfg.Service,
		OTLPEndpoint:       cfg.OTLPEndpoint,
		ResourceAttributes: cfg.ResourceAttributes,
		LogLevel:           cfg.LogLevel,
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	s.onClose("telemetry", flush)
	s.Telemetry, s.Log = tel, tel.Logger
	// Packages that log through slog's default (pg.Migrate) get the same
	// JSON output; this is main's process, so setting it here is safe.
	slog.SetDefault(s.Log)
	s.Log.InfoContext(ctx, "starting", "config", cfg)

	// TLS files are read before anything is dialed, so that a broken
	// one stops the service at once with a line naming its variable.
	if s.tls, err = cfg.serverTLS(s.Log.With("component", "http-tls")); err != nil {
		return nil, err
	}
	brokerTLS, err := cfg.brokerTLS(s.Log.With("component", "rabbit-tls"))
	if err != nil {
		return nil, err
	}

	cctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	poolOpts := []func(*pgxpool.Config){
		defaultPoolSize(cfg.DatabaseURL),
		pg.WithTimeouts(pg.Timeouts{Statement: cfg.DBStatementTimeout, Lock: cfg.DBLockTimeout}),
	}
	if cfg.OTLPEndpoint != "" {
		// Statements are most of an order's spans (about 90 of its 110):
		// without a collector to send them to they would be built and
		// dropped, at 20–60 µs of CPU a transaction (BenchmarkTracing).
		poolOpts = append(poolOpts, pg.WithTracing(tel.TracerProvider))
	}
	s.Pool, err = pg.Connect(cctx, cfg.DatabaseURL, poolOpts...)
	if err != nil {
		// pgx may quote the connection string in its errors.
		return nil, fmt.Errorf("postgres at %s: %s", redactDSN(cfg.DatabaseURL), redactDSN(err.Error()))
	}
	s.onClose("postgres pool", func(context.Context) error { s.Pool.Close(); return nil })
	if err := pg.RecordStats(s.Pool, tel.MeterProvider); err != nil {
		return nil, err
	}

	if err := pg.Migrate(ctx, s.Pool, sets...); err != nil {
		return nil, fmt.Errorf("migrations: %w", err)
	}
	// The outbox and inbox are queue tables: without vacuum their dead rows
	// would stay for good and every scan would slow down with history.
	switch on, err := pg.AutovacuumOn(cctx, s.Pool); {
	case err != nil:
		return nil, fmt.Errorf("postgres: %w", err)
	case !on:
		s.Log.WarnContext(ctx, "autovacuum is off on the database server; this service vacuums its own tables")
		vac := &pg.Vacuumer{Pool: s.Pool, Log: s.Log.With("component", "table-maintenance")}
		s.Go("table maintenance", vac.Run)
	}

	host, _ := os.Hostname()
	s.Rabbit, err = rabbit.Dial(cctx, cfg.AMQPURL,
		rabbit.WithName(fmt.Sprintf("%s@%s/%d", cfg.Service, host, os.Getpid())),
		rabbit.WithTLS(brokerTLS),
		rabbit.WithLogger(s.Log.With("component", "rabbit")))
	if err != nil {
		return nil, fmt.Errorf("rabbitmq at %s: %s", redactDSN(cfg.AMQPURL), redactDSN(err.Error()))
	}
	s.onClose("rabbitmq connection", func(context.Context) error { return s.Rabbit.Close() })

	s.Health = httpx.NewHealth(s.Log, 0)
	s.Health.Add("postgres", s.Pool.Ping)
	s.Health.Add("rabbitmq", func(context.Context) error {
		if !s.Rabbit.Connected() {
			return errors.New("not connected")
		}
		return nil
	})
	s.Health.Add("migrations", migrationsApplied(s.Pool, sets))

	proxies, err := httpx.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil { // Validate has refused it already
		return nil, fmt.Errorf("TRUSTED_PROXIES: %w", err)
	}
	ro := httpx.RouterOptions{
		Logger:         s.Log,
		TracerProvider: tel.TracerProvider,
		Propagator:     tel.Propagator,
		MeterProvider:  tel.MeterProvider,
		Metrics:        tel.MetricsHandler(),
		Health:         s.Health,
		TrustedProxies: proxies,
		SeparateAdmin:  cfg.AdminAddr != "",
		RequestTimeout: cfg.RequestTimeout,
	}
	if s.Router, err = httpx.NewRouter(ro); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	if cfg.AdminAddr != "" {
		if s.admin, err = httpx.NewAdminRouter(ro); err != nil {
			return nil, fmt.Errorf("admin router: %w", err)
		}
	}
	if cfg.PprofAddr != "" {
		stop, err := servePprof(cfg.PprofAddr, s.Log)
		if err != nil {
			return nil, err
		}
		s.onClose("pprof listener", stop)
	}
	for _, set := range sets {
		if u := set.Upkeep; u != nil {
			s.Every(u.Name, u.Interval, func(ctx context.Context) (int64, error) { return u.Run(ctx, s.Pool) })
		}
	}
	return s, nil
}

// servePprof serves net/http/pprof on addr until the returned function is
// called.
func servePprof(addr string, log *slog.Logger) (func(context.Context) error, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return srv.Shutdown, nil
}

// DefaultMaxConns is the least size of a service's pool when the URL sets
// no pool_max_conns (pgx's default is the number of CPUs, at least 4):
// handlers hold a connection for a whole transaction, and with 2 cores 4
// connections queue HTTP requests behind the consumers.
const DefaultMaxConns = 16

// defaultPoolSize raises pgx's default pool size to DefaultMaxConns unless
// the URL sets pool_max_conns.
func defaultPoolSize(url string) func(*pgxpool.Config) {
	return func(c *pgxpool.Config) {
		if !strings.Contains(url, "pool_max_conns") {
			c.MaxConns = max(c.MaxConns, DefaultMaxConns)
		}
	}
}

// migrationsApplied returns a readiness check that passes once no migration
// of sets is pending. Applied migrations stay applied, so after the first
// success it stops asking the database.
func migrationsApplied(pool *pgxpool.Pool, sets []pg.Migration) func(context.Context) error {
	var done atomic.Bool
	return func(ctx context.Context) error {
		if done.Load() {
			return nil
		}
		n, err := pg.Pending(ctx, pool, sets...)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%d migrations pending", n)
		}
		done.Store(true)
		return nil
	}
}

// Publishes declares exchanges at Run and has Run run an outbox relay: the
// service's outbox is published through its own confirm channel on the
// service's broker connection.
func (s *Service) Publishes(exchanges ...string) {
	s.topology.Exchanges = append(s.topology.Exchanges, exchanges...)
	if s.relay != nil {
		return
	}
	s.publisher = s.Rabbit.NewPublisher()
	s.relay = &outbox.Relay{
		Pool:      s.Pool,
		Publisher: s.publisher,
		Log:       s.Log.With("component", "outbox-relay"),
		Meter:     s.Telemetry.MeterProvider.Meter("github.com/orderly/orderly/pkg/outbox"),
	}
}

// AddConsumers has Run declare each consumer's queue and then run it (see
// AddConsumer).
func (s *Service) AddConsumers(cs ...*rabbit.Consumer) {
	for _, c := range cs {
		s.AddConsumer(c)
	}
}

// AddConsumer has Run declare c's queue and then run c, filling in the
// broker connection and logger when c leaves them nil, and its workers from
// CONSUMER_WORKERS when c.Workers is 0 (both 0: rabbit.Consumer's
// default). Consumers stop after the HTTP server has drained and finish the
// messages they hold.
func (s *Service) AddConsumer(c *rabbit.Consumer) {
	s.topology.Queues = append(s.topology.Queues, c.Queue)
	if c.Conn == nil {
		c.Conn = s.Rabbit
	}
	if c.Workers == 0 {
		c.Workers = s.Config.ConsumerWorkers
	}
	if c.Log == nil {
		c.Log = s.Log.With("component", "consumer", "queue", c.Queue.Name)
	}
	if c.Meter == nil && s.Telemetry != nil {
		c.Meter = s.Telemetry.MeterProvider.Meter("github.com/orderly/orderly/pkg/rabbit")
	}
	s.Go("consumer "+c.Queue.Name, c.Run)
}

// QueueDepthInterval is how often a service asks the broker how many
// messages wait in its queues (rabbit.Depths): often enough for a
// Prometheus scrape every 15 s to see a backlog grow, rarely enough to
// cost the broker nothing.
const QueueDepthInterval = 5 * time.Second

// watchQueues has Run report the depth of the consumers' queues, their
// retry queues and DLQs as messaging_queue_depth, every
// QueueDepthInterval. A service without consumers reports nothing.
func (s *Service) watchQueues() error {
	if len(s.topology.Queues) == 0 || s.Telemetry == nil {
		return nil
	}
	d, err := rabbit.NewDepths(s.Rabbit, s.Telemetry.MeterProvider.Meter("github.com/orderly/orderly/pkg/rabbit"), s.topology.Queues...)
	if err != nil {
		return err
	}
	s.Every("queue depth", QueueDepthInterval, d.Sample)
	return nil
}

// Go has Run run fn alongside the consumers (a timeout sweeper, a cache
// refresher): its context ends when the service drains, and it should then
// finish its work and return nil. A non-nil error, or a return before the
// service stops, is a failure that shuts the service down.
func (s *Service) Go(name string, fn func(ctx context.Context) error) {
	s.workers = append(s.workers, worker{name: name, run: fn})
}

// everyRunTimeout is the least time a run of Every's is given (a run also
// gets its interval, when that is longer). A run that waits on a database
// that stopped answering (a network black hole) would otherwise wait for
// good, and the work (a deadline sweep) would stop with it; a bounded run
// fails, its connection is discarded, and the next tick starts afresh.
const everyRunTimeout = 30 * time.Second

// Every has Run run fn at start and then every interval, until the service
// drains: the one loop of periodic work (sweeps, purges). Each run's context
// ends after the interval or 30s, whichever is longer. A failure is
// logged and tried again at the next tick, since it only delays the work;
// a positive count is logged as what the run did.
func (s *Service) Every(name string, interval time.Duration, fn func(ctx context.Context) (int64, error)) {
	log := s.Log.With("component", name)
	bound := max(interval, everyRunTimeout)
	run := func(ctx context.Context) (int64, error) {
		ctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		return fn(ctx)
	}
	s.Go(name, func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			if n, err := run(ctx); err != nil && ctx.Err() == nil {
				log.WarnContext(ctx, name+" failed", "err", err)
			} else if n > 0 {
				log.InfoContext(ctx, name+" done", "count", n)
			}
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
			}
		}
	})
}

// OnHTTPShutdown registers f to run when the HTTP server starts shutting
// down, to end connections it does not wait for (WebSocket, Server-Sent
// Events).
func (s *Service) OnHTTPShutdown(f func()) { s.onHTTP = append(s.onHTTP, f) }

// URL returns the base URL of the HTTP server: http://, or https:// when
// TLS_CERT_FILE is set, and the address of Addr; "" until Run has started
// listening.
func (s *Service) URL() string {
	addr := s.Addr()
	switch {
	case addr == "":
		return ""
	case s.tls != nil:
		return "https://" + addr
	}
	return "http://" + addr
}

// Addr returns the address the HTTP server listens on, with the real port
// when HTTP_ADDR ended in ":0", or "" until Run has started listening.
func (s *Service) Addr() string {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// AdminURL returns the base URL of the admin listener (http://, with the
// real port when ADMIN_ADDR ended in ":0"): where /readyz and /metrics are
// served. It is "" until Run has started listening, and always when
// ADMIN_ADDR is unset.
func (s *Service) AdminURL() string {
	if a := s.adminAddr.Load(); a != nil {
		return "http://" + *a
	}
	return ""
}

// ReadyURL returns the URL of the service's /readyz: on the admin listener
// when ADMIN_ADDR is set, else on the public one; "" until Run has started
// listening.
func (s *Service) ReadyURL() string {
	base := s.URL()
	if s.admin != nil {
		base = s.AdminURL()
	}
	if base == "" {
		return ""
	}
	return base + "/readyz"
}

// onClose registers a resource to release, in reverse order of opening.
func (s *Service) onClose(name string, f func(context.Context) error) {
	s.closers = append(s.closers, closer{name: name, close: f})
}

// Close releases what Start opened (broker connection, pool, telemetry), in
// reverse order, each bounded by ShutdownTimeout. Run already does it, so
// Close matters only when the service fails before or instead of Run; defer
// it right after Start. Calling it again returns the first result.
func (s *Service) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.Config.ShutdownTimeout)
	defer cancel()
	return s.closeAll(ctx)
}

func (s *Service) closeAll(ctx context.Context) error {
	s.closeOnce.Do(func() {
		var errs []error
		for i := len(s.closers) - 1; i >= 0; i-- {
			c := s.closers[i]
			if err := within(ctx, c.close); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// within runs f and waits for it until ctx ends, so a close that hangs (a
// pool waiting for a connection that is never released) cannot hold the
// shutdown past its deadline.
func within(ctx context.Context, f func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}
