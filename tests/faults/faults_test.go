// Package faults runs shoppers' load against two replicas of every
// Orderly service, on the real binaries, PostgreSQL and RabbitMQ, injects
// faults while it runs, and then holds the system to the invariants of
// tests/invariants: every order ends, nobody is charged twice or for a
// cancelled order, stock is conserved, every shopper's WebSocket sees every
// status once and in order, a retried POST makes one order.
//
// One scenario a test: TestChaosNoFaults (the baseline), TestChaosCrash
// (SIGKILLs), TestChaosRollingRestart (SIGTERM of every replica in turn),
// TestChaosBroker (RabbitMQ stopped and its connections closed),
// TestChaosDatabase (PostgreSQL restarted in immediate mode),
// TestChaosNetwork (toxiproxy between the services and their backends) and
// TestChaosScale (replicas share every queue; one of each dies, a third
// joins).
//
// The tests are chaos tests: they load the whole machine and stop the
// shared broker and database, so they skip unless ORDERLY_CHAOS=1, which
// `make test` sets in its serialized step. Each starts its own stack
// (fresh databases and vhost), dropped at its end.
//
// Sizes: the small run by default (`make test`); ORDERLY_CHAOS_FULL=1
// (`make chaos`) for the full one, at least 1,000 orders a scenario.
// ORDERLY_CHAOS_ORDERS, ORDERLY_CHAOS_RATE, ORDERLY_CHAOS_KILLS and
// ORDERLY_CHAOS_SEED override either; the seed is logged, so a failing run
// can be replayed fault for fault (the moments are the same, the system's
// timing is not).
package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/orderly/orderly/tests/invariants"
	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// TestMain ignores toxiproxy's toxic goroutines: a link torn down while
// a toxic was piping can leave its stub blocked on a channel nobody reads
// any more (seen once in a CI run, after every test had passed). They
// belong to the in-process proxy of TestChaosNetwork, hold no connection
// and end with the test binary; Orderly's own goroutines are still checked.
func TestMain(m *testing.M) {
	stack.Main(m, goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"))
}

// cluster is a stack with two replicas of every service.
type cluster struct {
	s *stack.Stack

	mu       sync.Mutex
	replicas map[string][]*stack.Service // by service name, the stack's own first
	// serving marks the replicas a load balancer sends traffic to: not
	// one that is stopping, down or removed.
	serving map[*stack.Service]bool
}

// poolMax caps every replica's database pool: up to twelve processes
// (the scale scenario's) with pools of the services' default 16 could ask
// for twice PostgreSQL's default max_connections when a fault makes every
// pool fill up. Six is plenty at the scenarios' rate.
const poolMax = 6

// newCluster starts a stack with notification and a second replica of
// each service, and seeds a product per SKU with its stock.
func newCluster(t *testing.T, opts stack.Options, stocks map[string]int64) *cluster {
	t.Helper()
	opts.Notification = true
	if opts.PoolMax == 0 {
		opts.PoolMax = poolMax
	}
	s := stack.New(t, opts)
	c := &cluster{s: s, replicas: map[string][]*stack.Service{}, serving: map[*stack.Service]bool{}}
	for _, name := range stack.Names() {
		first := s.Service(name)
		c.replicas[name] = []*stack.Service{first}
		c.serving[first] = true
		c.add(t, name)
	}
	var products []stack.Product
	for i, sku := range sortedSKUs(stocks) {
		products = append(products, stack.Product{SKU: sku, PriceCents: int64(100 + i), Stock: int(stocks[sku])})
	}
	s.Seed(t, products...)
	return c
}

// Replicas is loadgen.Config.Replicas: the URLs of the serving replicas,
// as a load balancer that follows /readyz would route. A crashed replica
// keeps its place until it is back (a balancer notices a crash late, so
// clients do meet it); one that was stopped or removed leaves at once.
func (c *cluster) Replicas() (order, notification []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	urls := func(name string) []string {
		var out []string
		for _, svc := range c.replicas[name] {
			// A replica that is starting has no URL yet.
			if u := svc.URL(); c.serving[svc] && u != "" {
				out = append(out, u)
			}
		}
		return out
	}
	return urls("order"), urls("notification")
}

// replica returns the k-th replica of name.
func (c *cluster) replica(name string, k int) *stack.Service {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.replicas[name][k]
}

// setServing takes a replica in or out of the balancer's rotation.
func (c *cluster) setServing(svc *stack.Service, on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.serving[svc] = on
}

// isServing reports whether a replica is in the balancer's rotation.
func (c *cluster) isServing(svc *stack.Service) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.serving[svc]
}

// add starts one more replica of name and puts it in rotation.
func (c *cluster) add(t *testing.T, name string) *stack.Service {
	t.Helper()
	svc := c.s.AddReplica(t, name)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.replicas[name] = append(c.replicas[name], svc)
	c.serving[svc] = true
	return svc
}

// kill SIGKILLs one replica, waits down, and starts it again.
func (c *cluster) kill(t *testing.T, name string, k int, down time.Duration) {
	t.Helper()
	svc := c.replica(name, k)
	svc.Kill(t)
	time.Sleep(down) // the outage itself
	svc.Start(t)
}

// restart stops one replica as an orchestrator does (out of rotation,
// SIGTERM, a clean exit), starts it again and puts it back.
func (c *cluster) restart(t *testing.T, name string, k int) {
	t.Helper()
	svc := c.replica(name, k)
	c.setServing(svc, false)
	svc.Stop(t)
	svc.Start(t)
	c.setServing(svc, true)
}

// pids returns the process id of every replica, by replica.
func (c *cluster) pids() map[*stack.Service]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[*stack.Service]int{}
	for _, rs := range c.replicas {
		for _, svc := range rs {
			out[svc] = svc.PID()
		}
	}
	return out
}

// scenario is one load run with its faults.
type scenario struct {
	orders int
	rate   float64
	seed   uint64
	full   bool // the full size (`make chaos`), not make test's
	// opts are the stack's options (the zero value suits most).
	opts stack.Options
	// fault breaks things while the load runs: it is called when the load
	// starts, and the run waits for it and the load both.
	fault func(t *testing.T, f *faultRun)
	// drops are the WebSocket drops the scenario allows
	// (invariants.Run.Drops); nil allows any.
	drops []string
	// after checks what the scenario promises beyond the invariants,
	// once the checker is done.
	after func(t *testing.T, c *cluster, res *loadgen.Result)
}

// faultRun is what a scenario's fault works with.
type faultRun struct {
	c      *cluster
	rng    *rand.Rand
	start  time.Time     // when the load started
	window time.Duration // how long it offers orders

	mu     sync.Mutex
	placed []string // orders the fault placed itself (probes)
}

// at sleeps until the given share of the load's window has passed.
func (f *faultRun) at(share float64) {
	if wait := time.Until(f.start.Add(time.Duration(share * float64(f.window)))); wait > 0 {
		time.Sleep(wait) // the schedule of the faults
	}
}

// since is how long the load has run, for the log.
func (f *faultRun) since() string {
	return fmt.Sprintf("%.1fs", time.Since(f.start).Seconds())
}

// chaosStocks are the run's SKUs: twenty, two with little stock, so that
// some orders are cancelled out_of_stock and the release path runs under
// the faults too.
func chaosStocks() map[string]int64 {
	stocks := map[string]int64{}
	for i := range 20 {
		stocks[fmt.Sprintf("CHAOS-%02d", i)] = 100_000
	}
	stocks["CHAOS-00"], stocks["CHAOS-01"] = 15, 15
	return stocks
}

func (sc scenario) run(t *testing.T) {
	t.Helper()
	start := time.Now()
	stocks := chaosStocks()
	c := newCluster(t, sc.opts, stocks)

	gen, err := loadgen.New(loadgen.Config{
		Replicas:  c.Replicas,
		Resume:    true,
		Secret:    c.s.Secret,
		SKUs:      sortedSKUs(stocks),
		Customers: 200,
		// Some cards are declined, so that the payment-declined path
		// (stock released, nothing charged) runs under the faults too.
		DeclineEvery: 25,
		// Far beyond the saga's own deadlines (15 s a step): an order
		// ends long before its watcher gives up.
		Deadline: 3 * time.Minute,
		Seed:     sc.seed,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gen.Close)

	f := &faultRun{
		c:      c,
		rng:    rand.New(rand.NewPCG(sc.seed, sc.seed^0x5eed)), //nolint:gosec // reproducible chaos, not secrets
		window: time.Duration(float64(sc.orders) / sc.rate * float64(time.Second)),
	}
	t.Logf("seed %d: %d orders at %.0f/s over %v", sc.seed, sc.orders, sc.rate, f.window)

	sampler := invariants.StartSampler(c.s.Inventory.DB, 50*time.Millisecond)
	// invariants.Check stops it, but a test that fails before the check
	// must not leave it querying a database that is being dropped.
	t.Cleanup(func() { sampler.Stop() })
	var res *loadgen.Result
	loadDone := make(chan struct{})
	f.start = time.Now()
	go func() {
		defer close(loadDone)
		res, err = gen.Run(context.Background(), sc.rate, f.window)
	}()
	if sc.fault != nil {
		sc.fault(t, f)
	}
	<-loadDone
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %d sent, %d created, %d confirmed, %d cancelled, errors %v, in %.1fs",
		res.Sent, res.Created, res.Confirmed, res.Cancelled, res.Errors, res.Finished.Sub(res.Start).Seconds())

	invariants.Check(t, invariants.Run{
		Stack:     c.s,
		Generator: gen,
		Result:    res,
		OrderURL: func() string {
			o, _ := c.Replicas()
			return o[0]
		},
		InitialStock: stocks,
		Sampler:      sampler,
		Placed:       f.placed,
		Drops:        sc.drops,
	})
	if sc.after != nil {
		sc.after(t, c, res)
	}
	t.Logf("scenario took %.1fs", time.Since(start).Seconds())
}

// newScenario returns the scenario of a chaos test, small or full size
// (ORDERLY_CHAOS_FULL=1), with the environment's overrides; it skips the
// test unless ORDERLY_CHAOS=1.
func newScenario(t *testing.T, small, full int) scenario {
	t.Helper()
	if os.Getenv("ORDERLY_CHAOS") != "1" {
		t.Skip("chaos test (loads the machine, stops the broker and database): set ORDERLY_CHAOS=1 or run `make test`")
	}
	sc := scenario{orders: small, rate: 50, seed: seed(t)}
	if os.Getenv("ORDERLY_CHAOS_FULL") == "1" {
		sc.orders, sc.full = full, true
	}
	sc.orders = envInt(t, "ORDERLY_CHAOS_ORDERS", sc.orders)
	sc.rate = float64(envInt(t, "ORDERLY_CHAOS_RATE", int(sc.rate)))
	return sc
}

// seed returns ORDERLY_CHAOS_SEED, or a fresh one.
func seed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("ORDERLY_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("ORDERLY_CHAOS_SEED: %q is not a number", v)
		}
		return n
	}
	return uint64(time.Now().UnixNano()) //nolint:gosec // a clock reading is never negative
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		t.Fatalf("%s: %q is not a non-negative number", name, v)
	}
	return n
}

func sortedSKUs(stocks map[string]int64) []string {
	skus := make([]string, 0, len(stocks))
	for s := range stocks {
		skus = append(skus, s)
	}
	slices.Sort(skus)
	return skus
}
