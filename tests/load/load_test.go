// Package load measures the order API under a fixed request rate: the real
// binaries on the real PostgreSQL and RabbitMQ, POST /v1/orders alone from
// an open-loop generator (requests start on schedule whether or not earlier
// ones have answered, so a slow server cannot slow the load down and hide
// its own latency). The saga runs behind the API as in production, sharing
// the machine.
//
//	cd tests && go test -run '^$' -bench PlaceOrder -benchtime 1x ./load/
//
// ORDERLY_LOAD_RATES (default "200,500", requests per second) and
// ORDERLY_LOAD_DURATION (default 10s) change the runs.
package load

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

func TestMain(m *testing.M) { stack.Main(m) }

// BenchmarkPlaceOrder runs POST /v1/orders at each rate for the duration,
// with 50 customers ordering one of 10 well-stocked products by card
// pm_card_ok, and reports the achieved rate, latency percentiles, errors
// and how long the saga took to confirm every order of the run. Each rate
// is one run, whatever b.N says: a fixed-rate test has no "iterations".
func BenchmarkPlaceOrder(b *testing.B) {
	rates := []int{200, 500}
	if v := os.Getenv("ORDERLY_LOAD_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Split(v, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				b.Fatalf("ORDERLY_LOAD_RATES: %q is not a positive number", f)
			}
			rates = append(rates, r)
		}
	}
	duration := 10 * time.Second
	if v := os.Getenv("ORDERLY_LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("ORDERLY_LOAD_DURATION: %q is not a positive duration", v)
		}
		duration = d
	}

	// Deadlines far away: a backlog in the saga must not turn into
	// timeouts that the API measurement does not care about.
	s := stack.New(b, stack.Options{ReserveTimeout: 10 * time.Minute, PaymentTimeout: 10 * time.Minute, RateLimitRPS: 1_000_000, Env: loadEnv()})
	var products []stack.Product
	for i := range 10 {
		products = append(products, stack.Product{SKU: fmt.Sprintf("LOAD-%02d", i), PriceCents: int64(100 + i), Stock: 10_000_000})
	}
	s.Seed(b, products...)
	tokens := make([]string, 50)
	for i := range tokens {
		_, tokens[i] = s.NewCustomer(b)
	}

	// Each rate twice: with the saga running behind the API, as in
	// production, and with inventory and payment stopped, so that the
	// order service only takes orders and publishes OrderPlaced (the rest
	// waits in the queues until they come back). The second isolates the
	// API's own cost from the saga's share of the two cores.
	for _, saga := range []string{"running", "paused"} {
		for _, rate := range rates {
			b.Run(fmt.Sprintf("saga=%s/rate=%d", saga, rate), func(b *testing.B) {
				if saga == "paused" {
					s.Inventory.Stop(b)
					s.Payment.Stop(b)
				}
				res := run(b, s, rate, duration, tokens, products, func() {
					if saga == "paused" {
						s.Inventory.Start(b)
						s.Payment.Start(b)
					}
				})
				b.ReportMetric(0, "ns/op") // meaningless for a fixed-rate run
				b.ReportMetric(res.achieved, "req/s")
				b.ReportMetric(ms(res.pct(0.50)), "p50-ms")
				b.ReportMetric(ms(res.pct(0.90)), "p90-ms")
				b.ReportMetric(ms(res.pct(0.99)), "p99-ms")
				b.ReportMetric(ms(res.pct(1)), "max-ms")
				b.ReportMetric(float64(res.errors), "errors")
				b.ReportMetric(res.settle.Seconds(), "saga-drain-s")
				b.Logf("saga %s, rate %d/s for %v: %d sent, %d × 201, %d errors %v, achieved %.0f req/s; p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms; every order confirmed %.1f s after the last response",
					saga, rate, duration, res.sent, len(res.latencies), res.errors, res.codes, res.achieved,
					ms(res.pct(0.5)), ms(res.pct(0.9)), ms(res.pct(0.99)), ms(res.pct(1)), res.settle.Seconds())
			})
		}
	}
}

// result is one fixed-rate run.
type result struct {
	sent      int
	latencies []time.Duration // of the 201s, sorted
	errors    int
	codes     map[string]int // errors by status or transport failure
	achieved  float64        // 201s per second of the run's wall time
	settle    time.Duration  // last response → every order confirmed
}

// pct returns the q-quantile of the latencies (1 is the maximum).
func (r result) pct(q float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	i := int(q*float64(len(r.latencies))+0.5) - 1
	return r.latencies[max(0, min(i, len(r.latencies)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// run sends rate requests per second for d, each started on its schedule in
// its own goroutine, then calls after and waits until the saga has
// confirmed every order.
func run(b *testing.B, s *stack.Stack, rate int, d time.Duration, tokens []string, products []stack.Product, after func()) result {
	b.Helper()
	n := int(float64(rate) * d.Seconds())
	interval := time.Second / time.Duration(rate)
	var (
		mu  sync.Mutex
		res = result{codes: map[string]int{}}
		wg  sync.WaitGroup
	)
	url := s.Order.URL()
	b.ResetTimer()
	start := time.Now()
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait) // the schedule, not a wait for a result
		}
		wg.Go(func() {
			body := stack.OrderRequest{
				Items:         []stack.Item{{SKU: products[i%len(products)].SKU, Quantity: 1 + i%3}},
				PaymentMethod: "pm_card_ok",
			}
			t0 := time.Now()
			r, err := s.Call(http.MethodPost, url, "/v1/orders", tokens[i%len(tokens)], body, stack.Header{Key: "Idempotency-Key", Value: stack.NewUUID()})
			lat := time.Since(t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				res.errors++
				res.codes["transport"]++
			case r.Status != http.StatusCreated:
				res.errors++
				res.codes[strconv.Itoa(r.Status)]++
			default:
				res.latencies = append(res.latencies, lat)
			}
		})
	}
	res.sent = n
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(res.latencies)
	res.achieved = float64(len(res.latencies)) / elapsed.Seconds()

	// Let the saga finish before the next run, so that runs do not overlap,
	// and say how long that took.
	done := time.Now()
	after()
	poll.UntilNil(b, 10*time.Minute, "the saga to settle every order", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var open int
		if err := s.Order.DB.QueryRow(ctx, "SELECT count(*) FROM orders WHERE status IN ('pending', 'reserved')").Scan(&open); err != nil {
			return err
		}
		if open > 0 {
			return fmt.Errorf("%d orders still open", open)
		}
		return nil
	})
	res.settle = time.Since(done)
	return res
}

// loadEnv returns extra service settings from ORDERLY_LOAD_ENV
// (space-separated KEY=VALUE pairs, e.g. "CONSUMER_WORKERS=16"), for
// trying a setting's effect on the figures.
func loadEnv() []string { return strings.Fields(os.Getenv("ORDERLY_LOAD_ENV")) }
