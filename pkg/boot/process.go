package boot

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// StartFunc opens a service's resources and wires its parts from environ
// (as from os.Environ), ready for Run. On error it leaves nothing open.
type StartFunc func(ctx context.Context, environ []string) (*Service, error)

// Main is the whole main function of a service binary called name: it runs
// the service started by start until SIGTERM or SIGINT and returns after a
// clean shutdown. On a configuration, start-up or shutdown error it prints
// "<name>: <error>" as one line on stderr and exits with status 1, which is
// what operators and the lifecycle tests expect of every service.
func Main(name string, start StartFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := RunService(ctx, os.Environ(), start)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", OneLine(err))
		os.Exit(1)
	}
}

// RunService starts the service with start and runs it until ctx ends or a
// part fails; it returns once the service has shut down, nil after a clean
// shutdown on ctx's end. A start error is returned as is.
func RunService(ctx context.Context, environ []string, start StartFunc) error {
	svc, err := start(ctx, environ)
	if err != nil {
		return err
	}
	defer svc.Close() // a no-op once Run has shut the service down
	return svc.Run(ctx)
}
