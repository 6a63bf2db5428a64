// Command payment runs Orderly's payment service: authorizing, declining and refunding order payments through the payment gateway.
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to :8082, DATABASE_URL to the orderly_payment database) and stops
// gracefully on SIGTERM or SIGINT. A configuration or start-up error is
// printed as one line on stderr and exits with status 1.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/orderly/orderly/pkg/boot"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "payment:", boot.OneLine(err))
		os.Exit(1)
	}
}

// run wires the service and blocks until it has shut down. It returns nil
// after a clean shutdown on ctx's end.
func run(ctx context.Context) error {
	cfg, err := boot.LoadConfig(os.Environ(), "payment", ":8082")
	if err != nil {
		return err
	}
	svc, err := boot.Start(ctx, cfg, boot.Messaging)
	if err != nil {
		return err
	}
	defer svc.Close() // a no-op once Run has shut the service down

	// The service publishes only through its outbox, so the relay runs
	// from the start; the exchange exists before the first event does.
	svc.Topology.Exchanges = []string{eventsv1.ExchangePayment}
	svc.Relay = svc.NewRelay()
	return svc.Run(ctx)
}
