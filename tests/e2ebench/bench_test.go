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
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// The machinery every mode shares: settings, the stack with its catalog
// and generator, one measured run, the drain, and the orders' final
// states.

// common are the settings every mode reads.
type common struct {
	deadline  time.Duration
	env       []string
	writeDocs bool
	report    string
}

func loadCommon(tb testing.TB) common {
	tb.Helper()
	return common{
		deadline:  envDuration(tb, "ORDERLY_E2E_DEADLINE", 60*time.Second),
		env:       strings.Fields(os.Getenv("ORDERLY_E2E_ENV")),
		writeDocs: os.Getenv("ORDERLY_E2E_WRITE_DOCS") == "1",
		report:    os.Getenv("ORDERLY_E2E_REPORT"),
	}
}

// envDuration returns the positive duration in the environment variable
// name, or def when it is unset; anything else fails tb.
func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		tb.Fatalf("%s=%q: want a positive duration", name, v)
	}
	return d
}

// envFloat returns the positive number in the environment variable name,
// or def when it is unset; anything else fails tb.
func envFloat(tb testing.TB, name string, def float64) float64 {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		tb.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

// Seeded catalog: enough stock that no order of any mode is refused for
// want of it.
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

// bench is a running benchmark: the stack, the generator and the
// measuring instruments.
type bench struct {
	s      *stack.Stack
	gen    *loadgen.Generator
	skus   []string
	pg     *pgStats
	client *http.Client // metrics and profiles
	pprof  map[string]string
	svcs   []*stack.Service
	// run is the report's header: date, command, machine.
	run Run
}

// newBench starts the four services on fresh databases and vhost, seeds
// the catalog, and returns the benchmark with a generator of orders with
// c's deadline. With pprof, every service also serves net/http/pprof on an
// address of its own (bench.pprof). Everything ends with t.
func newBench(t *testing.T, m mode, c common, pprof bool) *bench {
	t.Helper()
	b := &bench{client: &http.Client{Timeout: time.Minute}}
	b.run = Run{Date: time.Now().UTC(), Command: command(os.Environ(), m)}
	b.run.Machine.LoadAverage = loadAverage()

	opts := stack.Options{
		Notification:   true,
		RateLimitRPS:   1_000_000,
		ReserveTimeout: 30 * time.Second,
		PaymentTimeout: 30 * time.Second,
		SweepInterval:  time.Second,
		Env:            c.env,
	}
	if pprof {
		b.pprof = map[string]string{}
		opts.ServiceEnv = map[string][]string{}
		for _, name := range stack.Names() {
			addr := freeAddr(t)
			b.pprof[name] = addr
			opts.ServiceEnv[name] = []string{"PPROF_ADDR=" + addr}
		}
	}
	b.s = stack.New(t, opts)
	b.svcs = []*stack.Service{b.s.Order, b.s.Inventory, b.s.Payment, b.s.Notification}
	b.pg = newPGStats(t, b.s)
	b.run.Machine.fill(t, b.pg)

	products := make([]stack.Product, skuCount)
	b.skus = make([]string, skuCount)
	for i := range products {
		b.skus[i] = fmt.Sprintf("E2E-%02d", i+1)
		products[i] = stack.Product{SKU: b.skus[i], PriceCents: int64(100 * (i + 1)), Currency: "EUR", Stock: skuStock}
	}
	b.s.Seed(t, products...)
	gen, err := loadgen.New(loadgen.Config{
		OrderURL:        b.s.Order.URL(),
		NotificationURL: b.s.Notification.URL(),
		Secret:          b.s.Secret,
		SKUs:            b.skus,
		Deadline:        c.deadline,
		Seed:            uint64(time.Now().UnixNano()), //nolint:gosec // any seed will do
	})
	if err != nil {
		t.Fatal(err)
	}
	b.gen = gen
	t.Cleanup(gen.Close)
	return b
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

// measure runs load (a run of the generator), waits until the system has
// drained, and returns what it measured from just before the run's first
// POST until then, with the run's result. When the system has not drained
// within drainLimit it returns the step measured until then and an error
// saying what was left: the caller decides whether that ends the test.
// Other failures fail tb.
func (b *bench) measure(tb testing.TB, drainLimit time.Duration, load func(context.Context) (*loadgen.Result, error)) (Step, *loadgen.Result, error) {
	tb.Helper()
	pids, dbs := b.pids(), b.pg.databases()
	m0 := b.scrape(tb)
	x0 := b.pg.commits(tb)
	c0 := sampleCPU(tb, pids, dbs)
	res, err := load(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	m1, drainErr := b.waitDrained(tb, res, drainLimit)
	c1 := sampleCPU(tb, pids, dbs)
	time.Sleep(settle) // pg_stat_database's reporting lag: a fixed time, not an event to poll for
	x1 := b.pg.commits(tb)
	return newStep(res, c0, c1, m0, m1, x1-x0), res, drainErr
}

// waitDrained polls until the system has nothing left to do for the
// run's orders: every order ended (the generator returned), no outbox
// holds an unpublished event, and neither the published nor the consumed
// counter moved for two polls in a row (no consumer is working on
// anything). When some order was created but not seen to end (it timed out
// on the client, or its WebSocket failed), it also waits until the order
// database holds no pending or reserved order; that check's queries are
// the only transactions the benchmark adds to the stack's databases. It
// returns the metrics at that moment, or the last metrics read and an
// error saying what was left once limit has passed.
func (b *bench) waitDrained(tb testing.TB, res *loadgen.Result, limit time.Duration) (metrics, error) {
	tb.Helper()
	checkDB := false
	for _, o := range res.Orders {
		if o.ID != "" && o.Outcome != loadgen.Confirmed && o.Outcome != loadgen.Cancelled {
			checkDB = true
			break
		}
	}
	deadline := time.Now().Add(limit)
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
		if err == nil {
			prev = m
		}
		if quiet >= 2 {
			open := 0
			if checkDB {
				open = b.openOrders(tb)
			}
			if open == 0 {
				return m, nil
			}
			why = fmt.Sprintf("%d orders pending or reserved", open)
		}
		if time.Now().After(deadline) {
			return prev, fmt.Errorf("the system did not drain within %v: %s", limit, why)
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

// unfinished reads, in the order database, the final state of every order
// of res that the order service created (a 201 with an id), and returns
// those that did not end confirmed, or cancelled with a reason, each as
// "id: what it is", sorted. An order still pending or reserved is read
// again every second until limit has passed: the saga's deadlines end
// every order in time unless something is broken.
func (b *bench) unfinished(tb testing.TB, res *loadgen.Result, limit time.Duration) []string {
	tb.Helper()
	var ids []string
	for _, o := range res.Orders {
		if o.ID != "" {
			ids = append(ids, o.ID)
		}
	}
	deadline := time.Now().Add(limit)
	for {
		bad, open := b.finalStates(tb, ids)
		if open == 0 || time.Now().After(deadline) {
			slices.Sort(bad)
			return bad
		}
		time.Sleep(time.Second) // the orders' deadlines are seconds apart: no need to poll faster
	}
}

// finalStates returns the orders of ids that are not confirmed, or
// cancelled with a reason, and how many of those are still pending or
// reserved.
func (b *bench) finalStates(tb testing.TB, ids []string) (bad []string, open int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := b.s.Order.DB.Query(ctx, "SELECT id::text, status, reason FROM orders WHERE id = ANY($1::uuid[])", ids)
	if err != nil {
		tb.Fatalf("read the orders' final states: %v", err)
	}
	type state struct{ id, status, reason string }
	states, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (state, error) {
		var s state
		err := r.Scan(&s.id, &s.status, &s.reason)
		return s, err
	})
	if err != nil {
		tb.Fatalf("read the orders' final states: %v", err)
	}
	found := make(map[string]bool, len(states))
	for _, s := range states {
		found[s.id] = true
		switch {
		case s.status == "confirmed", s.status == "cancelled" && s.reason != "":
			continue
		case s.status == "pending", s.status == "reserved":
			open++
		}
		bad = append(bad, fmt.Sprintf("%s: %s %q", s.id, s.status, s.reason))
	}
	for _, id := range ids {
		if !found[id] {
			bad = append(bad, id+": created (201) but not in the order database")
		}
	}
	return bad, open
}

// saveProfile fetches a CPU profile of secs seconds from a service's pprof
// listener and writes it to <dir>/<service>-<rate>.pprof. A failure is
// reported on tb but does not stop the run.
func (b *bench) saveProfile(tb testing.TB, dir, name, addr string, rate float64, secs int) {
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
	path := filepath.Join(dir, fmt.Sprintf("%s-%g.pprof", name, rate))
	if err := os.WriteFile(path, body, 0o600); err != nil {
		tb.Errorf("profile %s: %v", name, err)
		return
	}
	tb.Logf("CPU profile of %s (%d s during the %g/s step): %s", name, secs, rate, path)
}

// finish logs a mode's report, writes it as JSON when c.report asks, and
// rewrites the mode's docs section with section() when c.writeDocs asks
// and the test has not failed. It runs deferred, so that whatever happened
// the figures measured so far are shown; measured says whether there is
// anything to write.
func finish(t *testing.T, m mode, c common, report any, measured bool, tables, section func() string) {
	t.Helper()
	if !measured {
		return
	}
	t.Log("\n" + tables())
	if c.report != "" {
		if err := writeJSON(c.report, report); err != nil {
			t.Errorf("ORDERLY_E2E_REPORT: %v", err)
		}
	}
	if c.writeDocs && !t.Failed() {
		if err := writeDocs(m, section()); err != nil {
			t.Errorf("rewrite docs/benchmarks.md: %v", err)
		}
	}
}
