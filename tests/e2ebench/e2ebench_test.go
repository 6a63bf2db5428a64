// Package e2ebench measures the whole system as shoppers use it: the four
// real service binaries on the real PostgreSQL and RabbitMQ, driven by the
// open-loop generator of tests/loadgen (place an order, follow it on its
// WebSocket until confirmed), over a ladder of offered rates. It is not
// part of `make test`; run it with
//
//	make bench-e2e
//
// which is, in tests/,
//
//	ORDERLY_BENCH_E2E=1 ORDERLY_E2E_WRITE_DOCS=1 go test -v -count=1 -timeout 90m -run '^TestEndToEnd$' ./e2ebench/
//
// For each rate it reports the achieved rate (confirmed orders per second),
// placed→confirmed and POST latencies, errors by kind, and what each
// confirmed order cost: CPU milliseconds per process group (the four
// services, PostgreSQL, RabbitMQ, the generator), database transactions, and
// broker messages published and delivered. A step is measured from its
// first POST until the system has drained: every order ended, every outbox
// empty and no consumer busy.
//
// Settings (environment):
//
//   - ORDERLY_E2E_RATES: offered rates, orders per second (default
//     25,50,100,150,200,250,300). The ladder stops after the second
//     consecutive saturated step: fewer than 99 % of the orders confirmed
//     within their deadline, or an achieved rate under 95 % of the offered.
//   - ORDERLY_E2E_DURATION: how long each rate is offered (default 30s).
//   - ORDERLY_E2E_DEADLINE: one order's deadline, POST to terminal status
//     (default 60s).
//   - ORDERLY_E2E_ENV: extra settings for every service, space-separated
//     KEY=VALUE pairs (e.g. "CONSUMER_WORKERS=8").
//   - ORDERLY_E2E_WRITE_DOCS=1: rewrite the bench-e2e section of
//     docs/benchmarks.md with this run (`make bench-e2e` sets it).
//   - ORDERLY_E2E_REPORT=<file>: write the raw results as JSON.
//   - ORDERLY_E2E_PROFILE=<dir>: serve net/http/pprof from every service
//     (PPROF_ADDR) and save a CPU profile of each, taken during the step at
//     ORDERLY_E2E_PROFILE_RATE (default: the second step), as
//     <dir>/<service>-<rate>.pprof.
//
// PostgreSQL's and RabbitMQ's CPU is machine-wide (every postgres and
// beam.smp process): nothing else should run on the machine meanwhile.
package e2ebench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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

// params are the run's settings, from the environment.
type params struct {
	rates       []float64
	duration    time.Duration
	deadline    time.Duration
	env         []string
	writeDocs   bool
	report      string
	profileDir  string
	profileRate float64 // 0: the second step
}

func loadParams(tb testing.TB) params {
	tb.Helper()
	p := params{
		rates:      []float64{25, 50, 100, 150, 200, 250, 300},
		duration:   30 * time.Second,
		deadline:   60 * time.Second,
		env:        strings.Fields(os.Getenv("ORDERLY_E2E_ENV")),
		writeDocs:  os.Getenv("ORDERLY_E2E_WRITE_DOCS") == "1",
		report:     os.Getenv("ORDERLY_E2E_REPORT"),
		profileDir: os.Getenv("ORDERLY_E2E_PROFILE"),
	}
	if v := os.Getenv("ORDERLY_E2E_RATES"); v != "" {
		rates, err := parseRates(v)
		if err != nil {
			tb.Fatalf("ORDERLY_E2E_RATES: %v", err)
		}
		p.rates = rates
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"ORDERLY_E2E_DURATION", &p.duration}, {"ORDERLY_E2E_DEADLINE", &p.deadline}} {
		if v := os.Getenv(d.name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x <= 0 {
				tb.Fatalf("%s=%q: want a positive duration", d.name, v)
			}
			*d.dst = x
		}
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

// Seeded catalog: enough stock that no order of the whole ladder is
// refused for want of it.
const (
	skuCount = 20
	skuStock = 100_000_000
)

// settle is how long a step waits, once drained, before reading
// pg_stat_database. A backend reports its counts at most once a second,
// and one that goes idle with counts it could not report yet (it reported
// less than a second before) reports them only after PGSTAT_IDLE_INTERVAL,
// 10 s, in PostgreSQL 15. Measured: 1.5 s after the drain, 3–4 % of a
// step's commits were still unreported; they showed up between 1.5 and 12 s
// (and would have been counted in the next step). The wait adds the
// services' idle commits (~8 per second: deadline sweeps, relay polls), a
// fraction of a percent of a step's.
const settle = 11 * time.Second

// drainPoll is how often the drain check scrapes the services' metrics:
// each scrape costs the services a little CPU, so not at poll.Interval.
const drainPoll = 250 * time.Millisecond

// bench is the running benchmark: the stack, the generator and the
// measuring instruments.
type bench struct {
	p      params
	s      *stack.Stack
	gen    *loadgen.Generator
	pg     *pgStats
	client *http.Client // metrics and profiles
	pprof  map[string]string
	svcs   []*stack.Service
	report Report
}

func TestEndToEnd(t *testing.T) {
	if os.Getenv("ORDERLY_BENCH_E2E") != "1" {
		t.Skip("end-to-end load benchmark (minutes, the whole machine): run `make bench-e2e`")
	}
	p := loadParams(t)
	b := &bench{p: p, client: &http.Client{Timeout: time.Minute}}
	b.report = Report{Date: time.Now().UTC(), Command: command(os.Environ()), Duration: p.duration.Seconds(), Deadline: p.deadline.Seconds()}
	b.report.Machine.LoadAverage = loadAverage()

	opts := stack.Options{
		Notification:   true,
		RateLimitRPS:   1_000_000,
		ReserveTimeout: 30 * time.Second,
		PaymentTimeout: 30 * time.Second,
		SweepInterval:  time.Second,
		Env:            p.env,
	}
	if p.profileDir != "" {
		if err := os.MkdirAll(p.profileDir, 0o750); err != nil {
			t.Fatalf("ORDERLY_E2E_PROFILE: %v", err)
		}
		b.pprof = map[string]string{}
		opts.ServiceEnv = map[string][]string{}
		for _, name := range stack.Services {
			addr := freeAddr(t)
			b.pprof[name] = addr
			opts.ServiceEnv[name] = []string{"PPROF_ADDR=" + addr}
		}
	}
	b.s = stack.New(t, opts)
	b.svcs = []*stack.Service{b.s.Order, b.s.Inventory, b.s.Payment, b.s.Notification}
	b.pg = newPGStats(t, b.s)
	b.report.Machine.fill(t, b.pg)

	products := make([]stack.Product, skuCount)
	skus := make([]string, skuCount)
	for i := range products {
		skus[i] = fmt.Sprintf("E2E-%02d", i+1)
		products[i] = stack.Product{SKU: skus[i], PriceCents: int64(100 * (i + 1)), Currency: "EUR", Stock: skuStock}
	}
	b.s.Seed(t, products...)
	gen, err := loadgen.New(loadgen.Config{
		OrderURL:        b.s.Order.URL(),
		NotificationURL: b.s.Notification.URL(),
		Secret:          b.s.Secret,
		SKUs:            skus,
		Deadline:        p.deadline,
		Seed:            uint64(time.Now().UnixNano()), //nolint:gosec // any seed will do
	})
	if err != nil {
		t.Fatal(err)
	}
	b.gen = gen
	defer gen.Close()

	// Whatever happened, say what was measured; the docs only change after
	// a run that completed.
	defer func() {
		t.Log("\n" + b.report.Tables())
		if p.report != "" {
			if err := b.report.WriteJSON(p.report); err != nil {
				t.Errorf("ORDERLY_E2E_REPORT: %v", err)
			}
		}
		if p.writeDocs && !t.Failed() && len(b.report.Steps) > 0 {
			if err := b.report.WriteDocs(); err != nil {
				t.Errorf("rewrite docs/benchmarks.md: %v", err)
			}
		}
	}()

	profileStep := min(1, len(p.rates)-1)
	if p.profileRate != 0 {
		profileStep = slices.Index(p.rates, p.profileRate)
	}
	saturated := 0
	for i, rate := range p.rates {
		st := b.step(t, rate, p.profileDir != "" && i == profileStep)
		b.report.Steps = append(b.report.Steps, st)
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

// freeAddr returns a loopback address with a port that was free a moment
// ago (a service binds it soon after).
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// pids maps the services' current process ids to their names.
func (b *bench) pids() map[int]string {
	m := map[int]string{}
	for _, svc := range b.svcs {
		m[svc.PID()] = svc.Name
	}
	return m
}

// bases are the services' base URLs.
func (b *bench) bases() []string {
	var u []string
	for _, svc := range b.svcs {
		u = append(u, svc.URL())
	}
	return u
}

func (b *bench) scrape(tb testing.TB) metrics {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := scrape(ctx, b.client, b.bases())
	if err != nil {
		tb.Fatalf("scrape metrics: %v", err)
	}
	return m
}

// step offers rate for the duration, waits until the system has drained,
// and returns what the step measured. With profile it also saves a CPU
// profile of every service taken during the step.
func (b *bench) step(tb testing.TB, rate float64, profile bool) Step {
	tb.Helper()
	pids, dbs := b.pids(), b.pg.databases()
	m0 := b.scrape(tb)
	x0 := b.pg.commits(tb)
	c0 := sampleCPU(tb, pids, dbs)

	var profiles sync.WaitGroup
	defer profiles.Wait() // also when the step fails: they report on tb
	if profile {
		secs := min(20, int(b.p.duration.Seconds())-5)
		secs = max(secs, 1)
		for name, addr := range b.pprof {
			profiles.Go(func() { b.saveProfile(tb, name, addr, rate, secs) })
		}
	}
	res, err := b.gen.Run(context.Background(), rate, b.p.duration)
	if err != nil {
		tb.Fatal(err)
	}
	m1 := b.waitDrained(tb, res)
	c1 := sampleCPU(tb, pids, dbs)
	profiles.Wait()
	time.Sleep(settle) // pg_stat_database's reporting lag: a fixed time, not an event to poll for
	x1 := b.pg.commits(tb)
	return newStep(res, c0, c1, m0, m1, x1-x0)
}

// waitDrained polls until the system has nothing left to do for the
// step's orders: every order ended (the generator returned), no outbox
// holds an unpublished event, and neither the published nor the consumed
// counter moved for two polls in a row (no consumer is working on
// anything). When some order was created but not seen to end (it timed out
// on the client, or its WebSocket failed), it also waits until the order
// database holds no pending or reserved order; that check's queries are
// the only transactions the benchmark adds to the stack's databases. It
// returns the metrics at that moment and fails tb after ten minutes.
func (b *bench) waitDrained(tb testing.TB, res *loadgen.Result) metrics {
	tb.Helper()
	checkDB := false
	for _, o := range res.Orders {
		if o.ID != "" && o.Outcome != loadgen.Confirmed && o.Outcome != loadgen.Cancelled {
			checkDB = true
			break
		}
	}
	deadline := time.Now().Add(10 * time.Minute)
	var (
		prev  metrics
		quiet = -1 // polls in a row with nothing moving; -1 before the first
		why   string
	)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		m, err := scrape(ctx, b.client, b.bases())
		cancel()
		switch {
		case err != nil:
			quiet, why = -1, err.Error()
		case m.pending > 0:
			quiet, why = 0, fmt.Sprintf("%g events in outboxes", m.pending)
		case quiet >= 0 && m.published == prev.published && m.consumed == prev.consumed:
			quiet++
		default:
			quiet, why = 0, "messages still flowing"
		}
		prev = m
		if quiet >= 2 {
			open := 0
			if checkDB {
				open = b.openOrders(tb)
			}
			if open == 0 {
				return m
			}
			why = fmt.Sprintf("%d orders pending or reserved", open)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the system did not drain within 10 minutes: %s", why)
		}
		time.Sleep(drainPoll) // the poll's interval
	}
}

// openOrders returns how many orders are neither confirmed nor cancelled.
func (b *bench) openOrders(tb testing.TB) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := b.s.Order.DB.QueryRow(ctx, "SELECT count(*) FROM orders WHERE status IN ('pending', 'reserved')").Scan(&n); err != nil {
		tb.Fatalf("count open orders: %v", err)
	}
	return n
}

// saveProfile fetches a CPU profile of secs seconds from a service's pprof
// listener and writes it to <dir>/<service>-<rate>.pprof. A failure is
// reported on tb but does not stop the run.
func (b *bench) saveProfile(tb testing.TB, name, addr string, rate float64, secs int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+30)*time.Second)
	defer cancel()
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		tb.Errorf("profile %s: %v", name, err)
		return
	}
	resp, err := b.client.Do(req)
	if err != nil {
		tb.Errorf("profile %s: %v", name, err)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Errorf("profile %s: status %d, %v", name, resp.StatusCode, err)
		return
	}
	path := filepath.Join(b.p.profileDir, fmt.Sprintf("%s-%g.pprof", name, rate))
	if err := os.WriteFile(path, body, 0o600); err != nil {
		tb.Errorf("profile %s: %v", name, err)
		return
	}
	tb.Logf("CPU profile of %s (%d s during the %g/s step): %s", name, secs, rate, path)
}
