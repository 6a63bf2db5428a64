// Package e2ebench measures the whole system as shoppers use it: the four
// real service binaries on the real PostgreSQL and RabbitMQ, driven by the
// open-loop generator of tests/loadgen (place an order, follow it on its
// WebSocket until confirmed). None of it is part of `make test`: each mode
// is a test that skips unless its variable is set, run by its make target,
// which also rewrites the mode's section of docs/benchmarks.md (between
// <!-- <target>:begin --> and <!-- <target>:end -->) with the run's date,
// command, machine and figures. Each loads the whole machine for minutes:
// nothing else should run meanwhile.
//
// The ladder, TestEndToEnd (`make bench-e2e`, ORDERLY_BENCH_E2E=1), offers
// rising rates, each for a while. For each rate it reports the achieved
// rate (confirmed orders per second), placed→confirmed and POST latencies,
// errors by kind, and what each confirmed order cost: CPU milliseconds per
// process group (the four services, PostgreSQL, RabbitMQ, the generator),
// database transactions, and broker messages published and delivered. A
// step is measured from its first POST until the system has drained: every
// order ended, every outbox empty and no consumer busy. In tests/,
//
//	ORDERLY_BENCH_E2E=1 ORDERLY_E2E_WRITE_DOCS=1 go test -v -count=1 -timeout 90m -run '^TestEndToEnd$' ./e2ebench/
//
// Overload, TestOverload (`make bench-overload`, ORDERLY_BENCH_OVERLOAD=1),
// offers twice a sustainable rate for a minute, then a light rate for a
// minute, and reports a timeline window by window: orders offered, POSTs
// answered 201 and 503 (the order service's admission control) and
// otherwise, POST latency, confirmations, placed→confirmed latency of the
// orders placed in the window, and every service's RSS and goroutines. It
// reports how long after the overload the latency was back under twice the
// recovery phase's final p99 and each service's largest RSS. It fails only
// on a broken invariant: an order created (201) that did not end confirmed,
// or cancelled with a reason, in the order database; a 503 without a
// positive integer Retry-After (or not of type …/overloaded); any other 5xx.
//
// History, TestHistory (`make bench-history`, ORDERLY_BENCH_HISTORY=1),
// measures one rate on the fresh stack, then preloads the databases with
// what months of traffic leave behind (1,000,000 sent outbox events, which
// the relay deletes, so dead rows until vacuumed; 1,000,000 inbox records
// of the last 6 days; 100,000 finished orders with their items, history,
// idempotency keys, reservations, payments, refunds, statuses and feed),
// runs ANALYZE on them and waits for the services' own vacuum of the
// outbox, and measures the same rate again. It reports both steps as the
// ladder does, their ratios, and the tables' sizes before and after.
//
// Soak, TestSoak (`make bench-soak`, ORDERLY_BENCH_SOAK=1), offers half a
// sustainable rate for ten minutes and reports, sample window by window,
// orders offered and confirmed, placed→confirmed latency, CPU per
// confirmed order, every service's RSS and goroutines, and the sizes of
// the tables with churn or retention, then the first against the last
// window with the slope of each figure. It fails only when an order the
// order service created did not end.
//
// Settings (environment), for every mode:
//
//   - ORDERLY_E2E_DEADLINE: one order's deadline, POST to terminal status
//     (default 60s).
//   - ORDERLY_E2E_ENV: extra settings for every service, space-separated
//     KEY=VALUE pairs (e.g. "CONSUMER_WORKERS=8").
//   - ORDERLY_E2E_WRITE_DOCS=1: rewrite the mode's section of
//     docs/benchmarks.md with this run (the make targets set it); a run
//     that failed leaves the docs alone.
//   - ORDERLY_E2E_REPORT=<file>: write the raw results as JSON.
//
// The ladder:
//
//   - ORDERLY_E2E_RATES: offered rates, orders per second (default
//     25,50,100,150,200,250,300). The ladder stops after the second
//     consecutive saturated step: fewer than 99 % of the orders confirmed
//     within their deadline, or an achieved rate under 95 % of the offered.
//   - ORDERLY_E2E_DURATION: how long each rate is offered (default 30s).
//   - ORDERLY_E2E_PROFILE=<dir>: serve net/http/pprof from every service
//     (PPROF_ADDR) and save a CPU profile of each, taken during the step at
//     ORDERLY_E2E_PROFILE_RATE (default: the second step), as
//     <dir>/<service>-<rate>.pprof.
//
// Overload:
//
//   - ORDERLY_OVERLOAD_RATE: the overload's rate (default 400/s, twice the
//     200/s this machine sustains), offered for ORDERLY_OVERLOAD_DURATION
//     (60s).
//   - ORDERLY_RECOVERY_RATE: the rate offered right after (default 60/s),
//     for ORDERLY_RECOVERY_DURATION (60s).
//   - ORDERLY_OVERLOAD_WINDOW: the timeline's window (default 5s; services
//     are sampled every second, a window shows the largest sample).
//
// History:
//
//   - ORDERLY_HISTORY_RATE: the rate measured before and after the
//     preload (default 180/s), each time for ORDERLY_E2E_DURATION (30s).
//   - ORDERLY_HISTORY_SCALE: multiplies the preloaded counts (default 1;
//     0.05 for a quick try).
//
// Soak:
//
//   - ORDERLY_SOAK_RATE: the rate offered (default 100/s, half the 200/s
//     this machine sustains), for ORDERLY_SOAK_DURATION (10m).
//   - ORDERLY_SOAK_SAMPLE: the sample window (default 30s).
//
// PostgreSQL's and RabbitMQ's CPU is machine-wide (every postgres and
// beam.smp process): nothing else should run on the machine meanwhile.
package e2ebench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// params are the ladder's settings, from the environment.
type params struct {
	common
	rates       []float64
	duration    time.Duration
	profileDir  string
	profileRate float64 // 0: the second step
}

func loadParams(tb testing.TB) params {
	tb.Helper()
	p := params{
		common:     loadCommon(tb),
		rates:      []float64{25, 50, 100, 150, 200, 250, 300},
		duration:   envDuration(tb, "ORDERLY_E2E_DURATION", 30*time.Second),
		profileDir: os.Getenv("ORDERLY_E2E_PROFILE"),
	}
	if v := os.Getenv("ORDERLY_E2E_RATES"); v != "" {
		rates, err := parseRates(v)
		if err != nil {
			tb.Fatalf("ORDERLY_E2E_RATES: %v", err)
		}
		p.rates = rates
	}
	if v := os.Getenv("ORDERLY_E2E_PROFILE_RATE"); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 || !slices.Contains(p.rates, r) {
			tb.Fatalf("ORDERLY_E2E_PROFILE_RATE=%q: want one of the rates %v", v, p.rates)
		}
		p.profileRate = r
	}
	return p
}

// parseRates parses "25,50,100" into positive rates.
func parseRates(s string) ([]float64, error) {
	var rates []float64
	for f := range strings.SplitSeq(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// ladderDrainLimit bounds one step's drain.
const ladderDrainLimit = 10 * time.Minute

func TestEndToEnd(t *testing.T) {
	if os.Getenv(modeLadder.gate) != "1" {
		t.Skip("end-to-end load benchmark (minutes, the whole machine): run `make bench-e2e`")
	}
	p := loadParams(t)
	if p.profileDir != "" {
		if err := os.MkdirAll(p.profileDir, 0o750); err != nil {
			t.Fatalf("ORDERLY_E2E_PROFILE: %v", err)
		}
	}
	b := newBench(t, modeLadder, p.common, p.profileDir != "")
	report := Report{Run: b.run, Duration: p.duration.Seconds(), Deadline: p.deadline.Seconds()}

	// Whatever happened, say what was measured; the docs only change after
	// a run that completed.
	defer func() {
		finish(t, modeLadder, p.common, &report, len(report.Steps) > 0, report.Tables, report.Section)
	}()

	profileStep := min(1, len(p.rates)-1)
	if p.profileRate != 0 {
		profileStep = slices.Index(p.rates, p.profileRate)
	}
	saturated := 0
	for i, rate := range p.rates {
		st := b.step(t, p, rate, p.profileDir != "" && i == profileStep)
		report.Steps = append(report.Steps, st)
		t.Logf("%g/s: %d sent, %d confirmed (%.1f %%), achieved %.1f/s, placed→confirmed p50 %s p99 %s; drained %.1f s after the last order ended%s",
			rate, st.Sent, st.Confirmed, 100*st.ConfirmedShare, st.Achieved, fmtMS(st.ToConfirmed.P50), fmtMS(st.ToConfirmed.P99), st.DrainS, satNote(st.Saturated))
		if st.Saturated {
			saturated++
		} else {
			saturated = 0
		}
		if saturated == 2 && i < len(p.rates)-1 {
			t.Logf("two consecutive saturated steps: not offering %v", p.rates[i+1:])
			break
		}
	}
}

func satNote(sat bool) string {
	if sat {
		return " (saturated)"
	}
	return ""
}

// step offers rate for the ladder's duration, waits until the system has
// drained, and returns what the step measured. With profile it also saves
// a CPU profile of every service taken during the step.
func (b *bench) step(tb testing.TB, p params, rate float64, profile bool) Step {
	tb.Helper()
	var profiles sync.WaitGroup
	defer profiles.Wait() // also when the step fails: they report on tb
	if profile {
		secs := min(20, int(p.duration.Seconds())-5)
		secs = max(secs, 1)
		for name, addr := range b.pprof {
			profiles.Go(func() { b.saveProfile(tb, p.profileDir, name, addr, rate, secs) })
		}
	}
	st, _, err := b.measure(tb, ladderDrainLimit, func(ctx context.Context) (*loadgen.Result, error) {
		return b.gen.Run(ctx, rate, p.duration)
	})
	if err != nil {
		tb.Fatal(err)
	}
	return st
}
