// Command inventory runs Orderly's inventory service: the product catalog and
// stock, reserving, committing and releasing units for orders
// (docs/saga.md, steps 2, 6 and 11).
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to 127.0.0.1:8081, DATABASE_URL to the orderly_inventory database), plus
// RESERVATION_SWEEP_INTERVAL (default 5s). It stops gracefully on SIGTERM or
// SIGINT. A configuration or start-up error is printed as one line on stderr
// and exits with status 1.
package main

import (
	"context"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/consume"
	"github.com/orderly/orderly/services/inventory/httpapi"
	"github.com/orderly/orderly/services/inventory/postgres"
)

func main() { boot.Main("inventory", start) }

// config is the inventory service's configuration: the shared settings and
// its own.
type config struct {
	boot.Config
	// SweepInterval is how often held reservations past their expiry are
	// released.
	SweepInterval time.Duration `env:"RESERVATION_SWEEP_INTERVAL" envDefault:"5s"`
}

// loadConfig reads the configuration from environ. It returns an error
// naming every invalid variable.
func loadConfig(environ []string) (config, error) {
	var cfg config
	err := boot.Load(environ, "inventory", "127.0.0.1:8081", &cfg, func(p *boot.Problems) {
		p.Require(cfg.SweepInterval > 0, "RESERVATION_SWEEP_INTERVAL", "must be positive")
	})
	if err != nil {
		return config{}, err
	}
	// One worker by default: every batch of saga steps locks the product
	// rows it moves, so batches of other workers would mostly wait for it;
	// one worker takes whatever waits in one transaction instead.
	if cfg.ConsumerWorkers == 0 {
		cfg.ConsumerWorkers = 1
	}
	return cfg, nil
}

// start opens the service's resources and wires its parts, ready for Run.
func start(ctx context.Context, environ []string) (*boot.Service, error) {
	cfg, err := loadConfig(environ)
	if err != nil {
		return nil, err
	}
	svc, err := boot.Start(ctx, cfg.Config, boot.Messaging,
		postgres.Migration)
	if err != nil {
		return nil, err
	}
	svc.Log.InfoContext(ctx, "inventory settings",
		"reservation_sweep_interval", cfg.SweepInterval.String())
	store := postgres.New(svc.Pool)

	svc.Publishes(eventsv1.ExchangeInventory)
	svc.AddConsumers(consume.New(store, svc.Log.With("component", "saga")).Consumers()...)
	// A sweep releases at most 1000, so that a huge backlog cannot hold
	// it for long between ticks; it continues at the next one.
	svc.Every("reservation sweep", cfg.SweepInterval, func(ctx context.Context) (int64, error) {
		n, err := store.ReleaseExpired(ctx, 1000)
		return int64(n), err
	})
	httpapi.New(httpapi.Options{Store: store, Verifier: cfg.Verifier(), RateLimitRPS: cfg.RateLimitRPS, Log: svc.Log}).Routes(svc.Router)
	return svc, nil
}
