// Package faults runs shoppers' load against two replicas of every
// Orderly service, on the real binaries, PostgreSQL and RabbitMQ, injects
// faults while it runs, and then holds the system to the invariants of
// tests/invariants: every order ends, nobody is charged twice or for a
// cancelled order, stock is conserved, every shopper's WebSocket sees every
// status once and in order, a retried POST makes one order.
//
// The tests are chaos tests: they load the whole machine, so they skip
// unless ORDERLY_CHAOS=1, which `make test` sets in its serialized step.
// Each starts its own stack (fresh databases and vhost), dropped at its end.
//
// Sizes (TestChaosCrash): the small run by default (800 orders at 50/s,
// 4 kills, one per service); ORDERLY_CHAOS_FULL=1 (`make chaos`) for the full one (2,000
// orders at 50/s, 10 kills). ORDERLY_CHAOS_ORDERS, ORDERLY_CHAOS_RATE,
// ORDERLY_CHAOS_KILLS and ORDERLY_CHAOS_SEED override either; the seed is
// logged, so a failing run can be replayed kill for kill (the moments are
// the same, the system's timing is not).
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

	"github.com/orderly/orderly/tests/invariants"
	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// cluster is a stack with two replicas of every service.
type cluster struct {
	s        *stack.Stack
	replicas map[string][]*stack.Service // by service name, the stack's own first

	mu   sync.Mutex
	urls map[string][]string // the replicas' last known base URLs
}

// newCluster starts a stack with notification and a second replica of
// each service, and seeds skus products with stocks.
func newCluster(t *testing.T, stocks map[string]int64) *cluster {
	t.Helper()
	s := stack.New(t, stack.Options{Notification: true})
	c := &cluster{s: s, replicas: map[string][]*stack.Service{}, urls: map[string][]string{}}
	for _, name := range stack.Names() {
		first := s.Service(name)
		second := s.AddReplica(t, name)
		c.replicas[name] = []*stack.Service{first, second}
		c.urls[name] = []string{first.URL(), second.URL()}
	}
	var products []stack.Product
	for i, sku := range sortedSKUs(stocks) {
		products = append(products, stack.Product{SKU: sku, PriceCents: int64(100 + i), Stock: int(stocks[sku])})
	}
	s.Seed(t, products...)
	return c
}

// Replicas is loadgen.Config.Replicas: a killed replica keeps its old URL
// until it is back, so the load keeps trying it as a client behind a slow
// load balancer would.
func (c *cluster) Replicas() (order, notification []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.urls["order"]), slices.Clone(c.urls["notification"])
}

// kill SIGKILLs one replica, waits down, and starts it again.
func (c *cluster) kill(t *testing.T, name string, k int, down time.Duration) {
	t.Helper()
	svc := c.replicas[name][k]
	svc.Kill(t)
	time.Sleep(down) // the outage itself
	svc.Start(t)
	c.mu.Lock()
	c.urls[name][k] = svc.URL()
	c.mu.Unlock()
}

// scenario is one load run with its faults.
type scenario struct {
	orders int
	rate   float64
	kills  int
	seed   uint64
}

func (sc scenario) run(t *testing.T) {
	t.Helper()
	start := time.Now()
	rng := rand.New(rand.NewPCG(sc.seed, sc.seed^0x5eed)) //nolint:gosec // reproducible chaos, not secrets
	// Twenty SKUs; two with little stock, so that some orders are
	// cancelled out_of_stock and the release path runs under the faults too.
	stocks := map[string]int64{}
	for i := range 20 {
		stocks[fmt.Sprintf("CHAOS-%02d", i)] = 100_000
	}
	stocks["CHAOS-00"], stocks["CHAOS-01"] = 15, 15
	c := newCluster(t, stocks)

	gen, err := loadgen.New(loadgen.Config{
		Replicas:  c.Replicas,
		Resume:    true,
		Secret:    c.s.Secret,
		SKUs:      sortedSKUs(stocks),
		Customers: 200,
		// Far beyond the saga's own deadlines (15 s a step): an order
		// ends long before its watcher gives up.
		Deadline: 3 * time.Minute,
		Seed:     sc.seed,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gen.Close)

	window := time.Duration(float64(sc.orders) / sc.rate * float64(time.Second))
	// Kill moments, spread over the load's window; a kill whose moment
	// comes while the previous victim is still down waits for it, so the
	// other replica of a service is always up.
	var moments []time.Duration
	for range sc.kills {
		moments = append(moments, window/20+time.Duration(rng.Int64N(int64(window*8/10))))
	}
	slices.Sort(moments)
	t.Logf("seed %d: %d orders at %.0f/s over %v, %d kills", sc.seed, sc.orders, sc.rate, window, sc.kills)

	sampler := invariants.StartSampler(c.s.Inventory.DB, 50*time.Millisecond)
	// invariants.Check stops it, but a test that fails before the check
	// must not leave it querying a database that is being dropped.
	t.Cleanup(func() { sampler.Stop() })
	var res *loadgen.Result
	loadDone := make(chan struct{})
	loadStart := time.Now()
	go func() {
		defer close(loadDone)
		res, err = gen.Run(context.Background(), sc.rate, window)
	}()
	// Victims come in shuffled rounds of every service, so that each is
	// killed once before any is killed twice: a run of four kills or more
	// crashes every service, order included (whose crash is what makes
	// POSTs fail and be retried).
	var victims []string
	for len(victims) < len(moments) {
		round := slices.Clone(stack.Names())
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		victims = append(victims, round...)
	}
	for i, at := range moments {
		if wait := time.Until(loadStart.Add(at)); wait > 0 {
			time.Sleep(wait) // the schedule of the faults
		}
		name, k := victims[i], rng.IntN(2)
		down := time.Second + time.Duration(rng.Int64N(int64(2*time.Second)))
		t.Logf("kill %d at %.1fs: %s replica %d, down %v", i+1, time.Since(loadStart).Seconds(), name, k+1, down.Round(time.Millisecond))
		c.kill(t, name, k, down)
	}
	<-loadDone
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %d sent, %d created, %d confirmed, %d cancelled, errors %v, in %.1fs",
		res.Sent, res.Created, res.Confirmed, res.Cancelled, res.Errors, res.Finished.Sub(res.Start).Seconds())

	invariants.Check(t, invariants.Run{
		Stack:        c.s,
		Generator:    gen,
		Result:       res,
		OrderURL:     func() string { o, _ := c.Replicas(); return o[0] },
		InitialStock: stocks,
		Sampler:      sampler,
	})
	t.Logf("scenario took %.1fs", time.Since(start).Seconds())
}

// TestChaosNoFaults is the baseline: the same load and checks as
// TestChaosCrash without a fault, so that a violation there is the faults'
// doing, and the checker is known to pass on a healthy system.
func TestChaosNoFaults(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") != "1" {
		t.Skip("chaos test (loads the machine): set ORDERLY_CHAOS=1 or run `make test`")
	}
	scenario{orders: 200, rate: 50, seed: seed(t)}.run(t)
}

// TestChaosCrash kills a random replica of a random service with SIGKILL
// at random moments of the load, and starts it again 1–3 s later.
func TestChaosCrash(t *testing.T) {
	if os.Getenv("ORDERLY_CHAOS") != "1" {
		t.Skip("chaos test (loads the machine): set ORDERLY_CHAOS=1 or run `make test`")
	}
	sc := scenario{orders: 800, rate: 50, kills: 4, seed: seed(t)}
	if os.Getenv("ORDERLY_CHAOS_FULL") == "1" {
		sc.orders, sc.kills = 2000, 10
	}
	sc.orders = envInt(t, "ORDERLY_CHAOS_ORDERS", sc.orders)
	sc.rate = float64(envInt(t, "ORDERLY_CHAOS_RATE", int(sc.rate)))
	sc.kills = envInt(t, "ORDERLY_CHAOS_KILLS", sc.kills)
	sc.run(t)
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
