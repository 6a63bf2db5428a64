// Command payment runs Orderly's payment service: authorizing, declining and
// refunding order payments through the payment gateway (docs/saga.md, steps
// 4 and 7), and an admin API to look them up.
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to :8082, DATABASE_URL to the orderly_payment database), plus
// PAYMENT_GATEWAY_LATENCY (how long the simulated gateway takes to answer,
// default 0). It stops gracefully on SIGTERM or SIGINT. A configuration or
// start-up error is printed as one line on stderr and exits with status 1.
package main

import (
	"context"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/payment/consume"
	"github.com/orderly/orderly/services/payment/gateway"
	"github.com/orderly/orderly/services/payment/httpapi"
	"github.com/orderly/orderly/services/payment/postgres"
)

func main() { boot.Main("payment", start) }

// maxGatewayLatency bounds PAYMENT_GATEWAY_LATENCY: a handler makes up to
// three gateway calls within the consumer's 30 s handler timeout.
const maxGatewayLatency = 5 * time.Second

// config is the payment service's configuration: the shared settings and
// its own.
type config struct {
	boot.Config
	// GatewayLatency is how long the simulated gateway takes per call.
	GatewayLatency time.Duration `env:"PAYMENT_GATEWAY_LATENCY" envDefault:"0s"`
}

// loadConfig reads the configuration from environ. It returns an error
// naming every invalid variable.
func loadConfig(environ []string) (config, error) {
	var cfg config
	err := boot.Load(environ, "payment", ":8082", &cfg, func(p *boot.Problems) {
		p.Require(cfg.GatewayLatency >= 0 && cfg.GatewayLatency <= maxGatewayLatency, "PAYMENT_GATEWAY_LATENCY",
			"must be between 0s and %s", maxGatewayLatency)
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
	svc, err := boot.Start(ctx, cfg.Config, boot.Messaging,
		postgres.Migration)
	if err != nil {
		return nil, err
	}
	svc.Log.InfoContext(ctx, "payment settings",
		"payment_gateway", "simulated", "payment_gateway_latency", cfg.GatewayLatency.String())

	svc.Publishes(eventsv1.ExchangePayment)
	store := postgres.New(svc.Pool)
	svc.AddConsumers(consume.New(store, svc.Log.With("component", "payments"), gateway.NewSimulated(cfg.GatewayLatency)).Consumers()...)
	httpapi.New(httpapi.Options{Store: store, Verifier: cfg.Verifier(), RateLimitRPS: cfg.RateLimitRPS, Log: svc.Log}).Routes(svc.Router)
	return svc, nil
}
