// Command order runs Orderly's order service: the public REST API for
// placing, querying and cancelling orders, and the saga that drives each
// order to a final state (docs/saga.md, steps 1, 3, 5, 8, 9 and 10).
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to 127.0.0.1:8080, DATABASE_URL to the orderly_order database), plus
// ORDER_RESERVE_TIMEOUT (30s), ORDER_PAYMENT_TIMEOUT (30s),
// ORDER_SWEEP_INTERVAL (1s), ORDER_ADMISSION_MAX_LAG (5s) and the
// tracking-token settings (boot.TrackingConfig: TRACKING_SECRET,
// TRACKING_SECRET_PREVIOUS, TRACKING_TOKEN_TTL). It stops gracefully on
// SIGTERM or SIGINT. A configuration or start-up error is printed as one
// line on stderr and exits with status 1.
package main

import (
	"context"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/admission"
	"github.com/orderly/orderly/services/order/consume"
	"github.com/orderly/orderly/services/order/httpapi"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
	"github.com/orderly/orderly/services/order/sweep"
)

func main() { boot.Main("order", start) }

// config is the order service's configuration: the shared settings and its
// own.
type config struct {
	boot.Config
	// TrackingConfig signs the orders' tracking tokens.
	boot.TrackingConfig
	// ReserveTimeout is how long a new order waits for inventory's answer
	// before it is cancelled with reason timeout.
	ReserveTimeout time.Duration `env:"ORDER_RESERVE_TIMEOUT" envDefault:"30s"`
	// PaymentTimeout is how long a reserved order waits for payment's answer.
	PaymentTimeout time.Duration `env:"ORDER_PAYMENT_TIMEOUT" envDefault:"30s"`
	// SweepInterval is how often overdue orders are looked for.
	SweepInterval time.Duration `env:"ORDER_SWEEP_INTERVAL" envDefault:"1s"`
	// AdmissionMaxLag is how far the saga may lag behind before new orders
	// are refused with 503 (order.Admission); 0 takes every order.
	AdmissionMaxLag time.Duration `env:"ORDER_ADMISSION_MAX_LAG" envDefault:"5s"`
}

// loadConfig reads the configuration from environ. It returns an error
// naming every invalid variable.
func loadConfig(environ []string) (config, error) {
	var cfg config
	err := boot.Load(environ, "order", "127.0.0.1:8080", &cfg, func(p *boot.Problems) {
		cfg.CheckTracking(p, cfg.Config)
		p.Require(cfg.ReserveTimeout > 0, "ORDER_RESERVE_TIMEOUT", "must be positive")
		p.Require(cfg.PaymentTimeout > 0, "ORDER_PAYMENT_TIMEOUT", "must be positive")
		p.Require(cfg.SweepInterval > 0, "ORDER_SWEEP_INTERVAL", "must be positive")
		p.Require(cfg.AdmissionMaxLag >= 0, "ORDER_ADMISSION_MAX_LAG", "must not be negative")
	})
	if err != nil {
		return config{}, err
	}
	return cfg, nil
}

// start opens the service's resources and wires its parts, ready for Run.
func start(ctx context.Context, environ []string) (*boot.Service, error) {
	cfg, err := loadConfig(environ)
	if err != nil {
		return nil, err
	}
	svc, err := boot.Start(ctx, cfg.Config, boot.Messaging, postgres.Migration)
	if err != nil {
		return nil, err
	}
	svc.Log.InfoContext(ctx, "order settings",
		"order_reserve_timeout", cfg.ReserveTimeout.String(), "order_payment_timeout", cfg.PaymentTimeout.String(),
		"order_sweep_interval", cfg.SweepInterval.String(), "order_admission_max_lag", cfg.AdmissionMaxLag.String(),
		cfg.TrackingAttr())
	timeouts := order.Timeouts{Reserve: cfg.ReserveTimeout, Payment: cfg.PaymentTimeout}
	store := postgres.New(svc.Pool)
	meter := svc.Telemetry.MeterProvider.Meter("github.com/orderly/orderly/services/order")
	if store.Metrics, err = order.NewSagaMetrics(meter); err != nil {
		_ = svc.Close()
		return nil, err
	}

	svc.Publishes(eventsv1.ExchangeOrder)
	svc.AddConsumers(consume.New(store, svc.Log.With("component", "saga"), timeouts).Consumers()...)

	svc.Every("deadline sweep", cfg.SweepInterval, sweep.NewDeadlines(store, timeouts, 100).Once)
	svc.Every("idempotency key purge", time.Hour, store.PurgeKeys)

	gate := &admission.Gate{
		Store:    store,
		Timeouts: timeouts,
		Policy:   order.Admission{MaxLag: cfg.AdmissionMaxLag},
		Log:      svc.Log.With("component", "admission"),
		Meter:    meter,
	}
	svc.Go("admission gate", gate.Run)

	httpapi.New(httpapi.Options{
		Store:        store,
		Timeouts:     timeouts,
		Verifier:     cfg.Verifier(),
		Tracking:     cfg.TrackingTokens(),
		RateLimitRPS: cfg.RateLimitRPS,
		Admission:    gate,
		Log:          svc.Log,
	}).Routes(svc.Router)
	return svc, nil
}
