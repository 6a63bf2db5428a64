// Command notification runs Orderly's notification service: live order status for shoppers over WebSocket, Server-Sent Events and a tracking page.
//
// It is configured through the environment (see boot.Config; HTTP_ADDR
// defaults to :8083, DATABASE_URL to the orderly_notification database) and stops
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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notification:", boot.OneLine(err))
		os.Exit(1)
	}
}

// run wires the service and blocks until it has shut down. It returns nil
// after a clean shutdown on ctx's end.
func run(ctx context.Context) error {
	cfg, err := boot.LoadConfig(os.Environ(), "notification", ":8083")
	if err != nil {
		return err
	}
	svc, err := boot.Start(ctx, cfg, boot.Messaging)
	if err != nil {
		return err
	}
	defer svc.Close() // a no-op once Run has shut the service down

	// The notification service publishes nothing, so it needs no outbox
	// relay and declares no exchange of its own.
	return svc.Run(ctx)
}
