// Command notification runs Orderly's notification service: live order
// status for shoppers over WebSocket, Server-Sent Events and a tracking
// page (docs/decisions/0008-live-tracking.md).
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to 127.0.0.1:8083, DATABASE_URL to the orderly_notification database),
// plus NOTIFICATION_ALLOWED_ORIGINS (http://localhost:8083,
// http://127.0.0.1:8083), the live caps NOTIFICATION_MAX_PER_ORDER (20),
// NOTIFICATION_MAX_PER_CUSTOMER (50), NOTIFICATION_MAX_PER_CLIENT (200) and
// NOTIFICATION_MAX_PER_REPLICA (19500) (see config), NOTIFICATION_SEND_QUEUE (32),
// NOTIFICATION_HEARTBEAT (25s), NOTIFICATION_SSE_HEARTBEAT (15s),
// NOTIFICATION_WRITE_TIMEOUT (10s), NOTIFICATION_RETENTION (720h),
// NOTIFICATION_DASHBOARD_SOURCES (none; name=url of each service's /metrics),
// CONSUMER_WORKERS (16) and the tracking-token settings
// (boot.TrackingConfig: TRACKING_SECRET, TRACKING_SECRET_PREVIOUS,
// TRACKING_TOKEN_TTL). It stops gracefully on SIGTERM or SIGINT, closing
// its WebSockets with 1012. A configuration or start-up error is printed as
// one line on stderr and exits with status 1.
package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/services/notification/consume"
	"github.com/orderly/orderly/services/notification/dashboard"
	"github.com/orderly/orderly/services/notification/httpapi"
	"github.com/orderly/orderly/services/notification/live"
	"github.com/orderly/orderly/services/notification/postgres"
	"github.com/orderly/orderly/services/notification/scrape"
	"github.com/orderly/orderly/services/notification/web"
)

func main() { boot.Main("notification", start) }

// config is the notification service's configuration: the shared settings
// and its own.
type config struct {
	boot.Config
	// TrackingConfig checks the tracking tokens of the streams.
	boot.TrackingConfig
	// AllowedOrigins may open streams from a browser, besides the
	// service's own origin.
	AllowedOrigins []string `env:"NOTIFICATION_ALLOWED_ORIGINS" envDefault:"http://localhost:8083,http://127.0.0.1:8083" envSeparator:","`
	// The live caps, each counted on this replica (live.Options says why
	// each exists): MaxPerOrder the viewers of one order's tracking link
	// (tracking-token streams only), MaxPerCustomer the streams opened
	// with one customer's JWT, MaxPerClient the streams of one client
	// address, MaxPerReplica all of them (below the 20,000 open files a
	// process may have here).
	MaxPerOrder    int `env:"NOTIFICATION_MAX_PER_ORDER" envDefault:"20"`
	MaxPerCustomer int `env:"NOTIFICATION_MAX_PER_CUSTOMER" envDefault:"50"`
	MaxPerClient   int `env:"NOTIFICATION_MAX_PER_CLIENT" envDefault:"200"`
	MaxPerReplica  int `env:"NOTIFICATION_MAX_PER_REPLICA" envDefault:"19500"`
	// SendQueue bounds the messages waiting for one client.
	SendQueue int `env:"NOTIFICATION_SEND_QUEUE" envDefault:"32"`
	// Heartbeat is the WebSocket ping interval; SSEHeartbeat the event
	// stream's comment interval.
	Heartbeat    time.Duration `env:"NOTIFICATION_HEARTBEAT" envDefault:"25s"`
	SSEHeartbeat time.Duration `env:"NOTIFICATION_SSE_HEARTBEAT" envDefault:"15s"`
	// WriteTimeout bounds one write to a client.
	WriteTimeout time.Duration `env:"NOTIFICATION_WRITE_TIMEOUT" envDefault:"10s"`
	// Retention is how long a delivered or cancelled order stays
	// watchable.
	Retention time.Duration `env:"NOTIFICATION_RETENTION" envDefault:"720h"`
	// DashboardSources are the metrics endpoints (name=url) the
	// operators' dashboard reads dead letters and outbox backlogs from,
	// this service's own included; none shows none.
	DashboardSources []string `env:"NOTIFICATION_DASHBOARD_SOURCES" envSeparator:","`
}

// loadConfig reads the configuration from environ. It returns an error
// naming every invalid variable.
func loadConfig(environ []string) (config, error) {
	var cfg config
	err := boot.Load(environ, "notification", "127.0.0.1:8083", &cfg, func(p *boot.Problems) {
		cfg.CheckTracking(p, cfg.Config)
		for i, o := range cfg.AllowedOrigins {
			o = strings.TrimSpace(o)
			cfg.AllowedOrigins[i] = o
			u, err := url.Parse(o)
			p.Require(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Path == "" && u.RawQuery == "",
				"NOTIFICATION_ALLOWED_ORIGINS", "%q is not an origin (scheme://host[:port])", o)
		}
		p.Require(cfg.MaxPerOrder > 0, "NOTIFICATION_MAX_PER_ORDER", "must be positive")
		p.Require(cfg.MaxPerCustomer > 0, "NOTIFICATION_MAX_PER_CUSTOMER", "must be positive")
		p.Require(cfg.MaxPerClient > 0, "NOTIFICATION_MAX_PER_CLIENT", "must be positive")
		p.Require(cfg.MaxPerReplica > 0, "NOTIFICATION_MAX_PER_REPLICA", "must be positive")
		p.Require(cfg.SendQueue > 0, "NOTIFICATION_SEND_QUEUE", "must be positive")
		p.Require(cfg.Heartbeat > 0, "NOTIFICATION_HEARTBEAT", "must be positive")
		p.Require(cfg.SSEHeartbeat > 0, "NOTIFICATION_SSE_HEARTBEAT", "must be positive")
		p.Require(cfg.WriteTimeout > 0, "NOTIFICATION_WRITE_TIMEOUT", "must be positive")
		p.Require(cfg.Retention > 0, "NOTIFICATION_RETENTION", "must be positive")
		_, err := scrape.ParseTargets(cfg.DashboardSources)
		p.Require(err == nil, "NOTIFICATION_DASHBOARD_SOURCES", "%v", err)
	})
	if err != nil {
		return config{}, err
	}
	// More workers than the other services' 4: a worker mostly waits for
	// the shared commit of postgres.Writer (a goroutine, nothing more), and
	// a lane that retries a failed write in place (consume.save, up to
	// 20 s) holds back only the orders hashed to it, 1/16 of them. Each
	// lane's batch is what waited behind its previous one, so the commits
	// grow with the load either way.
	if cfg.ConsumerWorkers == 0 {
		cfg.ConsumerWorkers = 16
	}
	return cfg, nil
}

// start opens the service's resources and wires its parts, ready for Run.
func start(ctx context.Context, environ []string) (*boot.Service, error) {
	cfg, err := loadConfig(environ)
	if err != nil {
		return nil, err
	}
	svc, err := boot.Start(ctx, cfg.Config, postgres.Migration)
	if err != nil {
		return nil, err
	}
	svc.Log.InfoContext(ctx, "notification settings",
		"allowed_origins", cfg.AllowedOrigins,
		"max_per_order", cfg.MaxPerOrder, "max_per_customer", cfg.MaxPerCustomer,
		"max_per_client", cfg.MaxPerClient, "max_per_replica", cfg.MaxPerReplica, "send_queue", cfg.SendQueue,
		"heartbeat", cfg.Heartbeat.String(), "sse_heartbeat", cfg.SSEHeartbeat.String(),
		"write_timeout", cfg.WriteTimeout.String(), "retention", cfg.Retention.String(),
		"dashboard_sources", cfg.DashboardSources, cfg.TrackingAttr())
	store := postgres.New(svc.Pool)
	meter := svc.Telemetry.MeterProvider.Meter("github.com/orderly/orderly/services/notification")

	hub, err := live.NewHub(live.Options{
		Store:          store,
		MaxPerOrder:    cfg.MaxPerOrder,
		MaxPerCustomer: cfg.MaxPerCustomer,
		MaxPerClient:   cfg.MaxPerClient,
		MaxPerReplica:  cfg.MaxPerReplica,
		SendQueue:      cfg.SendQueue,
		Heartbeat:      cfg.Heartbeat,
		SSEHeartbeat:   cfg.SSEHeartbeat,
		WriteTimeout:   cfg.WriteTimeout,
		Log:            svc.Log.With("component", "live"),
		Meter:          meter,
		Tracer:         svc.Telemetry.TracerProvider.Tracer("github.com/orderly/orderly/services/notification/live"),
	})
	if err != nil {
		_ = svc.Close()
		return nil, err
	}
	// WebSockets and event streams are not requests the server waits for:
	// the hub closes them when the server starts shutting down, and its
	// worker waits for them to be gone.
	svc.OnHTTPShutdown(hub.Shutdown)
	svc.Go("live hub", hub.Run)

	// Every change is consumed once, by one replica, and stored; storing it
	// announces it (NOTIFY), and each replica's listener hands it to its
	// own hub (docs/decisions/0008-live-tracking.md).
	// The operators' dashboard streams over the same hub, and counts the
	// orders placed from what the listener hears
	// (docs/decisions/0017-ops-dashboard.md).
	targets, _ := scrape.ParseTargets(cfg.DashboardSources) // checked by loadConfig
	var sources dashboard.Sources
	if len(targets) > 0 {
		sources = scrape.New(targets, nil)
	}
	board, err := dashboard.New(dashboard.Options{Store: store, Sources: sources, Hub: hub, Log: svc.Log.With("component", "dashboard")})
	if err != nil {
		_ = svc.Close()
		return nil, err
	}
	svc.Go("dashboard", board.Run)

	writer := postgres.NewWriter(store)
	listener := postgres.NewListener(svc.Pool, hub, svc.Log.With("component", "status-listener"))
	listener.Heard = board.Observe
	if err := observeStore(meter, writer, listener); err != nil {
		_ = svc.Close()
		return nil, err
	}
	svc.AddConsumers(consume.New(writer).Consumers()...)
	svc.Go("status listener", listener.Run)

	svc.Every("retention purge", time.Hour, func(ctx context.Context) (int64, error) {
		return store.PurgeFinished(ctx, cfg.Retention)
	})

	httpapi.New(httpapi.Options{
		Hub:            hub,
		Orders:         store,
		Verifier:       cfg.Verifier(),
		Tracking:       cfg.TrackingTokens(),
		AllowedOrigins: cfg.AllowedOrigins,
		RateLimitRPS:   cfg.RateLimitRPS,
		Page:           web.Handler(),
		Board:          board,
		DashboardPage:  web.Dashboard(),
		Log:            svc.Log,
	}).Routes(svc.Router)
	return svc, nil
}

// observeStore exports w's counts as notification_store_commits_total and
// notification_store_changes_total (their ratio is the mean batch, which
// grows with the load), and l's as
// notification_listener_notifications_total (changes announced by any
// replica and heard here) and notification_listener_resyncs_total (one at
// start and one per reconnect of the listening connection). It returns an
// error when a metric cannot be created.
func observeStore(meter metric.Meter, w *postgres.Writer, l *postgres.Listener) error {
	commits, err := meter.Int64ObservableCounter("notification.store.commits",
		metric.WithDescription("Transactions that stored status changes."))
	if err != nil {
		return fmt.Errorf("metric: %w", err)
	}
	changes, err := meter.Int64ObservableCounter("notification.store.changes",
		metric.WithDescription("Status changes stored (redeliveries included)."))
	if err != nil {
		return fmt.Errorf("metric: %w", err)
	}
	heard, err := meter.Int64ObservableCounter("notification.listener.notifications",
		metric.WithDescription("Status changes announced by the database (stored by any replica) and received by this replica's listener."))
	if err != nil {
		return fmt.Errorf("metric: %w", err)
	}
	resyncs, err := meter.Int64ObservableCounter("notification.listener.resyncs",
		metric.WithDescription("Times the listener (re)started listening and republished the latest status of every watched order: once at start, then once per reconnect."))
	if err != nil {
		return fmt.Errorf("metric: %w", err)
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s, ls := w.Stats(), l.Stats()
		o.ObserveInt64(commits, s.Commits)
		o.ObserveInt64(changes, s.Changes)
		o.ObserveInt64(heard, ls.Notifications)
		o.ObserveInt64(resyncs, ls.Resyncs)
		return nil
	}, commits, changes, heard, resyncs)
	if err != nil {
		return fmt.Errorf("metric: %w", err)
	}
	return nil
}
