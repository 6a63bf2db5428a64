package boot_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

func TestRunServiceReturnsTheStartError(t *testing.T) {
	t.Parallel()
	want := errors.New("invalid configuration: X: bad")
	err := boot.RunService(context.Background(), []string{"X=1"}, func(_ context.Context, environ []string) (*boot.Service, error) {
		if !slices.Equal(environ, []string{"X=1"}) {
			t.Errorf("start got environ %q, want [X=1]", environ)
		}
		return nil, want
	})
	if !errors.Is(err, want) {
		t.Errorf("RunService = %v, want the start error", err)
	}
}

func TestRunServiceRunsUntilTheContextEnds(t *testing.T) {
	t.Parallel()
	cfg := newTestConfig(t)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var svc *boot.Service
	running := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- boot.RunService(ctx, nil, func(ctx context.Context, _ []string) (*boot.Service, error) {
			s, err := boot.Start(ctx, cfg, boot.Messaging)
			if err != nil {
				return nil, err
			}
			svc = s
			s.Go("probe", func(ctx context.Context) error {
				close(running)
				<-ctx.Done()
				return nil
			})
			return s, nil
		})
	}()
	select {
	case <-running:
	case err := <-done:
		t.Fatalf("RunService returned before the service ran: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the service did not start running within 30s")
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunService = %v, want nil after a clean shutdown", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunService did not return within the shutdown timeout")
	}
	if err := svc.Pool.Ping(context.Background()); err == nil {
		t.Error("pool still usable after RunService returned")
	}
}

// mainScenario, set in the environment of a copy of this test binary, names
// the boot.Main scenario that the copy plays: Main exits the process, so it
// is tested in one of its own.
const mainScenario = "BOOT_TEST_MAIN_SCENARIO"

func TestMainPrintsOneLineAndExits1OnError(t *testing.T) {
	if os.Getenv(mainScenario) == "fail" {
		boot.Main("boottest", func(_ context.Context, environ []string) (*boot.Service, error) {
			if !slices.Contains(environ, mainScenario+"=fail") {
				return nil, errors.New("start did not get the process environment")
			}
			return nil, errors.Join(errors.New("invalid configuration: X: bad"), errors.New("postgres\nunreachable"))
		})
		return // not reached unless Main failed to exit
	}
	t.Parallel()
	code, stderr := runMain(t, "fail")
	if want := "boottest: invalid configuration: X: bad; postgres; unreachable\n"; code != 1 || stderr != want {
		t.Errorf("exit code %d, stderr %q; want 1 and %q", code, stderr, want)
	}
}

func TestMainDrainsOnSIGTERMAndExits0(t *testing.T) {
	if os.Getenv(mainScenario) == "sigterm" {
		boot.Main("boottest", func(ctx context.Context, environ []string) (*boot.Service, error) {
			cfg, err := boot.LoadConfig(environ, "boottest", ":0")
			if err != nil {
				return nil, err
			}
			svc, err := boot.Start(ctx, cfg, boot.Messaging)
			if err != nil {
				return nil, err
			}
			// Once running, the service gets the operator's SIGTERM; without
			// Main's handler it would kill the process.
			svc.Go("terminator", func(ctx context.Context) error {
				if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
					return err
				}
				<-ctx.Done()
				return nil
			})
			return svc, nil
		})
		return
	}
	t.Parallel()
	_, dbURL := pgtest.NewDB(t)
	code, stderr := runMain(t, "sigterm",
		"ORDERLY_ENV=development",
		"DATABASE_URL="+dbURL,
		"AMQP_URL="+rabbittest.NewVhost(t),
		"HTTP_ADDR=127.0.0.1:0",
		"SHUTDOWN_TIMEOUT=10s",
		"SHUTDOWN_DELAY=0s",
		"LOG_LEVEL=warn",
	)
	if code != 0 || stderr != "" {
		t.Errorf("exit code %d, stderr %q; want 0 and nothing", code, stderr)
	}
}

// runMain runs the calling test again in a copy of this test binary, which
// plays scenario through boot.Main, and returns the copy's exit code and
// stderr.
func runMain(t *testing.T, scenario string, environ ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+t.Name()+"$") //nolint:gosec // re-runs this test binary
	cmd.Env = append(append(os.Environ(), mainScenario+"="+scenario), environ...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run the %s scenario: %v", scenario, err)
	}
	return cmd.ProcessState.ExitCode(), stderr.String()
}
