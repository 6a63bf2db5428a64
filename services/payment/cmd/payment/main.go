// Command payment runs Orderly's payment service: authorizing, declining and
// refunding order payments through the payment gateway (docs/saga.md, steps
// 4 and 7), and an admin API to look them up.
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to 127.0.0.1:8082, DATABASE_URL to the orderly_payment database), plus
// PAYMENT_GATEWAY (the payment gateway: simulated, the default in
// development; production has no default and refuses simulated unless
// PAYMENT_ALLOW_SIMULATED=true, for staging) and PAYMENT_GATEWAY_LATENCY (how
// long the simulated gateway takes to answer, default 0). It stops
// gracefully on SIGTERM or SIGINT. A configuration or start-up error is
// printed as one line on stderr and exits with status 1.
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

// gatewaySimulated is PAYMENT_GATEWAY's name of gateway.Simulated, the only
// gateway so far; a real provider's adapter adds its name beside it, a case
// in chooseGateway and one in start.
const gatewaySimulated = "simulated"

// config is the payment service's configuration: the shared settings and
// its own.
type config struct {
	boot.Config
	// Gateway names the payment gateway. Unset, it is simulated in
	// development and none in production, which then refuses to start: a
	// deployment that takes money names its gateway.
	Gateway string `env:"PAYMENT_GATEWAY"`
	// AllowSimulated lets production run the simulated gateway, for a
	// staging deployment; without it production refuses simulated, which
	// authorizes pm_card_ok whatever the card.
	AllowSimulated bool `env:"PAYMENT_ALLOW_SIMULATED"`
	// GatewayLatency is how long the simulated gateway takes per call.
	GatewayLatency time.Duration `env:"PAYMENT_GATEWAY_LATENCY" envDefault:"0s"`
}

// chooseGateway settles which payment gateway c runs, recording in p why it
// cannot run any: the default follows ORDERLY_ENV, so it is filled in here,
// once boot.Load has read it.
func (c *config) chooseGateway(p *boot.Problems) {
	if c.Gateway == "" && c.Env == boot.EnvDevelopment {
		c.Gateway = gatewaySimulated
	}
	switch c.Gateway {
	case "":
		p.Require(false, "PAYMENT_GATEWAY", "no payment gateway is configured (%s, the only one so far, is for development and staging)", gatewaySimulated)
	case gatewaySimulated:
		p.Require(c.Env != boot.EnvProduction || c.AllowSimulated, "PAYMENT_GATEWAY",
			"%s authorizes pm_card_ok whatever the card, so production refuses it unless PAYMENT_ALLOW_SIMULATED=true (staging)", gatewaySimulated)
	default:
		p.Require(false, "PAYMENT_GATEWAY", "%q is not a known payment gateway (known: %s)", c.Gateway, gatewaySimulated)
	}
}

// loadConfig reads the configuration from environ. It returns an error
// naming every invalid variable.
func loadConfig(environ []string) (config, error) {
	var cfg config
	err := boot.Load(environ, "payment", "127.0.0.1:8082", &cfg, func(p *boot.Problems) {
		cfg.chooseGateway(p)
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
	svc.Log.InfoContext(ctx, "payment settings", "payment_gateway", cfg.Gateway,
		"payment_allow_simulated", cfg.AllowSimulated, "payment_gateway_latency", cfg.GatewayLatency.String())
	if cfg.Env == boot.EnvProduction {
		svc.Log.WarnContext(ctx, "the simulated payment gateway runs in production (PAYMENT_ALLOW_SIMULATED=true): it authorizes pm_card_ok whatever the card")
	}
	// chooseGateway accepted simulated, the only gateway so far.
	gw := gateway.NewSimulated(cfg.GatewayLatency)

	svc.Publishes(eventsv1.ExchangePayment)
	store := postgres.New(svc.Pool)
	svc.AddConsumers(consume.New(store, svc.Log.With("component", "payments"), gw).Consumers()...)
	httpapi.New(httpapi.Options{Store: store, Verifier: cfg.Verifier(), RateLimitRPS: cfg.RateLimitRPS, Log: svc.Log}).Routes(svc.Router)
	return svc, nil
}
