package boot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/orderly/orderly/pkg/httpx"
)

// Run declares Topology, starts the HTTP server, the consumers and other
// workers, and the outbox relay, then waits until ctx ends (SIGTERM or
// SIGINT, via Main) or a part fails. It then shuts
// down in this order, all within ShutdownTimeout:
//
//  1. /readyz answers 503, and stays so for ShutdownDelay while the server
//     still serves, so load balancers stop routing here;
//  2. the HTTP server stops accepting and finishes in-flight requests;
//  3. consumers and workers are cancelled and finish what they hold;
//  4. the relay publishes the batch in flight and stops;
//  5. the admin listener (ADMIN_ADDR), which answered /readyz with 503 all
//     along, stops;
//  6. the broker connection, the pool and telemetry are closed.
//
// Run returns nil after a clean shutdown on ctx's end, and otherwise an error
// naming the part that failed or did not stop in time. Call it once.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("boot: Run called twice")
	}
	if len(s.topology.Exchanges)+len(s.topology.Queues) > 0 {
		dctx, cancel := context.WithTimeout(ctx, s.Config.ConnectTimeout)
		err := s.Rabbit.Declare(dctx, s.topology)
		cancel()
		if err != nil {
			return errors.Join(fmt.Errorf("declare topology: %w", err), s.Close())
		}
	}
	if err := s.watchQueues(); err != nil {
		return errors.Join(err, s.Close())
	}

	var (
		srv *httpx.Server
		err error
	)
	if s.tls != nil {
		srv, err = httpx.ServeTLS(ctx, s.Config.HTTPAddr, s.Router, s.Log, s.tls)
	} else {
		srv, err = httpx.Serve(ctx, s.Config.HTTPAddr, s.Router, s.Log)
	}
	if err != nil {
		return errors.Join(err, s.Close())
	}
	for _, f := range s.onHTTP {
		srv.RegisterOnShutdown(f)
	}
	// The admin listener is plain HTTP even when the public one is not:
	// only the kubelet and Prometheus reach it, over the cluster network.
	var admin *httpx.Server
	if s.admin != nil {
		if admin, err = httpx.Serve(ctx, s.Config.AdminAddr, s.admin, s.Log); err != nil {
			return errors.Join(fmt.Errorf("admin listener: %w", err), srv.Shutdown(ctx), s.Close())
		}
		addr := admin.Addr()
		s.adminAddr.Store(&addr)
		s.Log.InfoContext(ctx, "admin server listening", "addr", addr)
	}
	addr := srv.Addr()
	s.addr.Store(&addr)
	s.Log.InfoContext(ctx, "http server listening", "addr", addr, "tls", s.tls != nil)

	// The parts get contexts of their own, not ctx, because they stop one
	// after the other rather than all at once when the signal arrives.
	failures := make(chan error, len(s.workers)+1)
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var working sync.WaitGroup
	for _, w := range s.workers {
		working.Go(func() { failures <- stopped(workCtx, w.name, w.run(workCtx)) })
	}
	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRelay()
	var relaying sync.WaitGroup
	if s.relay != nil {
		relaying.Go(func() { failures <- stopped(relayCtx, "outbox relay", s.relay.Run(relayCtx)) })
	}
	s.Log.InfoContext(ctx, "service ready", "workers", len(s.workers), "relay", s.relay != nil)

	var adminErr <-chan error // nil, never ready, without an admin listener
	if admin != nil {
		adminErr = admin.Err()
	}
	var cause error
	select {
	case <-ctx.Done():
		s.Log.InfoContext(ctx, "shutdown requested", "cause", context.Cause(ctx))
	case cause = <-srv.Err():
	case cause = <-adminErr:
	case cause = <-failures:
	}
	if cause != nil {
		s.Log.ErrorContext(ctx, "service failed; shutting down", "err", cause)
	}

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Config.ShutdownTimeout)
	defer cancel()
	log := s.Log.With("phase", "shutdown")
	started := time.Now()
	var errs []error
	step := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			log.ErrorContext(sctx, "shutdown step failed", "step", name, "err", err)
			return
		}
		log.InfoContext(sctx, "shutdown step done", "step", name, "elapsed", time.Since(started).Round(time.Millisecond).String())
	}

	s.Health.SetDraining()
	if cause == nil {
		select {
		case <-time.After(s.Config.ShutdownDelay):
		case <-sctx.Done():
		}
	}
	step("readiness off", nil)
	step("http drained", srv.Shutdown(sctx))
	stopWork()
	step("consumers and workers stopped", wait(sctx, &working))
	stopRelay()
	err = wait(sctx, &relaying)
	if s.publisher != nil && err == nil {
		err = s.publisher.Close()
	}
	step("relay stopped", err)
	if admin != nil {
		// Last to go before telemetry, so that probes and scrapes see
		// the whole drain (readiness 503 from the start).
		step("admin listener stopped", admin.Shutdown(sctx))
	}
	step("resources closed", s.closeAll(sctx))

	// Failures of parts while they were being stopped are reported too;
	// the one that caused the shutdown was already taken into cause.
	for drained := false; !drained; {
		select {
		case err := <-failures:
			if err != nil {
				errs = append(errs, err)
			}
		default:
			drained = true
		}
	}
	if cause != nil {
		errs = append([]error{cause}, errs...)
	}
	if len(errs) > 0 {
		log.ErrorContext(sctx, "stopped with errors", "elapsed", time.Since(started).Round(time.Millisecond).String())
		return errors.Join(errs...)
	}
	log.InfoContext(sctx, "drained and stopped cleanly", "elapsed", time.Since(started).Round(time.Millisecond).String())
	return nil
}

// stopped turns the result of a part into a failure, or nil when the part
// returned nil because its context ended, which is how parts stop.
func stopped(ctx context.Context, name string, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("%s: %w", name, err)
	case ctx.Err() == nil:
		return fmt.Errorf("%s: stopped unexpectedly", name)
	}
	return nil
}

// wait waits for wg until ctx ends.
func wait(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("did not stop in time: %w", ctx.Err())
	}
}

// OneLine flattens err into a single line (errors.Join separates with
// newlines), for the one line a service prints on stderr before exiting.
func OneLine(err error) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
