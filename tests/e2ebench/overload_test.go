package e2ebench

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
)

// overloadParams are the overload mode's settings, from the environment.
type overloadParams struct {
	common
	overload, recovery loadgen.Phase
	window             time.Duration
}

func loadOverloadParams(tb testing.TB) overloadParams {
	tb.Helper()
	return overloadParams{
		common: loadCommon(tb),
		overload: loadgen.Phase{
			Rate:     envFloat(tb, "ORDERLY_OVERLOAD_RATE", 400),
			Duration: envDuration(tb, "ORDERLY_OVERLOAD_DURATION", 60*time.Second),
		},
		recovery: loadgen.Phase{
			Rate:     envFloat(tb, "ORDERLY_RECOVERY_RATE", 60),
			Duration: envDuration(tb, "ORDERLY_RECOVERY_DURATION", 60*time.Second),
		},
		window: envDuration(tb, "ORDERLY_OVERLOAD_WINDOW", 5*time.Second),
	}
}

// Bounds of the overload mode's waits once the load has stopped: the
// drain, then the orders still open (the saga's deadlines, 30 s a step,
// end every order well within it).
const (
	overloadDrainLimit = 5 * time.Minute
	finalStateLimit    = 2 * time.Minute
)

// overloadedType ends the problem type of the order service's 503.
const overloadedType = "/overloaded"

func TestOverload(t *testing.T) {
	if os.Getenv(modeOverload.gate) != "1" {
		t.Skip("overload and recovery benchmark (minutes, the whole machine): run `make bench-overload`")
	}
	p := loadOverloadParams(t)
	b := newBench(t, modeOverload, p.common, false)
	r := OverloadReport{Run: b.run, Deadline: p.deadline.Seconds(), Phases: []loadgen.Phase{p.overload, p.recovery}, WindowS: p.window.Seconds()}
	defer func() { finish(t, modeOverload, p.common, &r, r.Whole.Sent > 0, r.Tables, r.Section) }()

	probes := b.startProbes(time.Second, false, false)
	st, res, drainErr := b.measure(t, overloadDrainLimit, func(ctx context.Context) (*loadgen.Result, error) {
		return b.gen.RunPhases(ctx, p.overload, p.recovery)
	})
	pr := probes.Stop()
	if e := probeErrors(pr); e != "" {
		t.Logf("some readings of the services failed: %s", e)
	}
	r.fill(res, st, pr, p.window)
	if drainErr != nil {
		t.Error(drainErr)
	}

	r.Unfinished = b.unfinished(t, res, finalStateLimit)
	if n := len(r.Unfinished); n > 0 {
		t.Errorf("%d orders created (201) did not end confirmed or cancelled with a reason: %s", n, strings.Join(r.Unfinished[:min(n, 20)], "; "))
	}
	for _, v := range r.Violations {
		t.Errorf("POST /v1/orders: %s", v)
	}
	t.Logf("%d sent, %d created, %d refused (503), %d confirmed; placed→confirmed p99 %s; refusals stopped %s",
		r.Whole.Sent, r.Whole.Created, r.Refused, r.Whole.Confirmed, r.recoveredText(), r.lastRefusalText())
}

// OverloadReport is a run of the overload mode.
type OverloadReport struct {
	Run
	Deadline float64         `json:"order_deadline_s"`
	Phases   []loadgen.Phase `json:"phases"`
	WindowS  float64         `json:"window_s"`
	// Timeline is the run window by window, from its first POST until its
	// last confirmation.
	Timeline []OverloadWindow `json:"timeline"`
	// PhaseTotals sums up the orders sent in each phase.
	PhaseTotals []PhaseTotals `json:"phase_totals"`
	// Whole is the run as one step: counts, latencies, CPU, transactions
	// and messages.
	Whole Step `json:"whole"`
	// Services are each service's RSS and goroutines over the run (sampled
	// every second, and once more after the drain).
	Services map[string]ServiceMemory `json:"services"`

	// Refused is how many POSTs were answered 503; RetryAfterMin/Max are
	// the smallest and largest Retry-After among them (whole seconds).
	Refused       int `json:"refused"`
	RetryAfterMin int `json:"retry_after_min_s"`
	RetryAfterMax int `json:"retry_after_max_s"`
	// LastRefusalS is when the last refused POST was sent, from the end of
	// the overload (negative: before it ended); 0 when Refused is 0.
	LastRefusalS float64 `json:"last_refusal_after_overload_s"`
	// Recovery is how the latency came back after the overload.
	Recovery Recovery `json:"recovery"`

	// Violations are the broken rules of POST /v1/orders' answers and
	// Unfinished the orders created that did not end; both fail the run.
	Violations []string `json:"violations"`
	Unfinished []string `json:"unfinished"`
}

// OverloadWindow is one window of the timeline, with the services' largest
// RSS (bytes) and goroutine counts sampled in it.
type OverloadWindow struct {
	loadgen.Bucket
	Phase      string             `json:"phase"`
	RSS        map[string]int64   `json:"rss_bytes"`
	Goroutines map[string]float64 `json:"goroutines"`
}

// PhaseTotals are the counts of the orders sent in one phase.
type PhaseTotals struct {
	Phase     loadgen.Phase  `json:"phase"`
	Sent      int            `json:"sent"`
	Created   int            `json:"created"`
	Refused   int            `json:"refused"`
	Failed    int            `json:"failed"`
	Confirmed int            `json:"confirmed"`
	Cancelled map[string]int `json:"cancelled_by_reason"`
	// ToConfirmed is the placed→confirmed latency of its confirmed orders.
	ToConfirmed Millis `json:"placed_to_confirmed_ms"`
}

// ServiceMemory is one service's RSS (bytes) and goroutines: at the first
// probe, their largest, and at the last probe.
type ServiceMemory struct {
	RSSStart        int64   `json:"rss_start"`
	RSSMax          int64   `json:"rss_max"`
	RSSEnd          int64   `json:"rss_end"`
	GoroutinesStart float64 `json:"goroutines_start"`
	GoroutinesMax   float64 `json:"goroutines_max"`
	GoroutinesEnd   float64 `json:"goroutines_end"`
}

// Recovery says how the placed→confirmed latency came back once the
// overload ended.
type Recovery struct {
	// FinalP99Ms is the p99 of the last recovery window with confirmed
	// orders, the "normal" to come back to.
	FinalP99Ms float64 `json:"final_p99_ms"`
	// AfterS is the start of the first recovery window from which on
	// every window's p99 stayed under twice FinalP99Ms, from the end of
	// the overload. Recovered is false when no such window exists (a
	// window where every order was refused does not count as recovered).
	AfterS    float64 `json:"after_s"`
	Recovered bool    `json:"recovered"`
}

// fill computes the report from the run's result, its step and the
// probes taken during it.
func (r *OverloadReport) fill(res *loadgen.Result, st Step, probes []probe, window time.Duration) {
	r.Whole = st
	_, overloadWindow := loadgen.Schedule(r.Phases[0])
	runEnd := res.Window
	for _, bk := range res.Timeline(window) {
		from := res.Start.Add(bk.Start)
		rss, g := peak(probes, from, from.Add(bk.Width))
		ph := "drain"
		switch {
		case bk.Start < overloadWindow:
			ph = "overload"
		case bk.Start < runEnd:
			ph = "recovery"
		}
		r.Timeline = append(r.Timeline, OverloadWindow{Bucket: bk, Phase: ph, RSS: rss, Goroutines: g})
	}
	buckets := make([]loadgen.Bucket, len(r.Timeline))
	for i, w := range r.Timeline {
		buckets[i] = w.Bucket
	}
	rec := recovery(buckets, overloadWindow, runEnd)
	r.Recovery = Recovery{FinalP99Ms: ms(rec.finalP99), AfterS: rec.after.Seconds(), Recovered: rec.ok}

	r.PhaseTotals = phaseTotals(res)
	r.Services = serviceMemory(probes)
	sum := checkRefusals(res.Orders)
	r.Violations = sum.violations
	r.Refused, r.RetryAfterMin, r.RetryAfterMax = sum.refused, sum.retryMin, sum.retryMax
	if sum.refused > 0 {
		r.LastRefusalS = sum.lastSent.Sub(res.Start.Add(overloadWindow)).Seconds()
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// phaseTotals sums up the orders of each phase of res.
func phaseTotals(res *loadgen.Result) []PhaseTotals {
	out := make([]PhaseTotals, len(res.Phases))
	lat := make([][]time.Duration, len(res.Phases))
	for i, ph := range res.Phases {
		out[i] = PhaseTotals{Phase: ph, Cancelled: map[string]int{}}
	}
	for _, o := range res.Orders {
		if o.Sent.IsZero() || o.Phase >= len(out) {
			continue
		}
		t := &out[o.Phase]
		t.Sent++
		switch o.HTTPStatus {
		case http.StatusCreated:
			t.Created++
		case http.StatusServiceUnavailable:
			t.Refused++
		default:
			t.Failed++
		}
		switch o.Outcome {
		case loadgen.Confirmed:
			t.Confirmed++
			lat[o.Phase] = append(lat[o.Phase], o.ToConfirmed)
		case loadgen.Cancelled:
			t.Cancelled[o.Reason]++
		}
	}
	for i := range out {
		slices.Sort(lat[i])
		out[i].ToConfirmed = millis(loadgen.Summarize(lat[i]))
	}
	return out
}

// serviceMemory returns each service's first, largest and last RSS and
// goroutines among the probes.
func serviceMemory(probes []probe) map[string]ServiceMemory {
	out := map[string]ServiceMemory{}
	for i, p := range probes {
		for name, rss := range p.RSS {
			m := out[name]
			if i == 0 {
				m.RSSStart = rss
			}
			m.RSSMax, m.RSSEnd = max(m.RSSMax, rss), rss
			out[name] = m
		}
		for name, g := range p.Goroutines {
			m := out[name]
			if i == 0 {
				m.GoroutinesStart = g
			}
			m.GoroutinesMax, m.GoroutinesEnd = max(m.GoroutinesMax, g), g
			out[name] = m
		}
	}
	return out
}

// refusals sums up the POSTs answered 5xx.
type refusals struct {
	refused            int // 503s
	retryMin, retryMax int
	lastSent           time.Time
	// violations: 503s without a positive integer Retry-After or not of
	// the overloaded type, and every other 5xx, counted by kind.
	violations []string
}

// checkRefusals checks every POST answered 5xx: a 503 must be the order
// service's refusal under overload (problem type …/overloaded) with a
// Retry-After of a positive whole number of seconds, and no other 5xx may
// happen at all.
func checkRefusals(orders []loadgen.Order) refusals {
	var r refusals
	bad := map[string]int{}
	for _, o := range orders {
		if o.HTTPStatus < 500 {
			continue
		}
		if o.HTTPStatus != http.StatusServiceUnavailable {
			bad[fmt.Sprintf("%d (problem type %q)", o.HTTPStatus, o.Problem)]++
			continue
		}
		r.refused++
		if o.Sent.After(r.lastSent) {
			r.lastSent = o.Sent
		}
		if !strings.HasSuffix(o.Problem, overloadedType) {
			bad[fmt.Sprintf("503 of problem type %q, not …%s", o.Problem, overloadedType)]++
		}
		s, err := strconv.Atoi(o.RetryAfter)
		if err != nil || s <= 0 {
			bad[fmt.Sprintf("503 without a positive integer Retry-After (%q)", o.RetryAfter)]++
			continue
		}
		if r.retryMin == 0 || s < r.retryMin {
			r.retryMin = s
		}
		r.retryMax = max(r.retryMax, s)
	}
	for _, k := range slices.Sorted(maps.Keys(bad)) {
		r.violations = append(r.violations, fmt.Sprintf("%d× %s", bad[k], k))
	}
	return r
}

// recovered is recovery's answer.
type recovered struct {
	finalP99, after time.Duration
	ok              bool
}

// recovery finds how long after the overload (which ended at overloadEnd,
// from the run's start) the placed→confirmed p99 was back to normal:
// "normal" is the p99 of the last window of the recovery phase (windows
// wholly in [overloadEnd, runEnd)) with confirmed orders, and the answer
// is the start of the first recovery window from which on every window had
// confirmed orders with a p99 under twice that.
func recovery(buckets []loadgen.Bucket, overloadEnd, runEnd time.Duration) recovered {
	var rec []loadgen.Bucket
	for _, b := range buckets {
		if b.Start >= overloadEnd && b.Start+b.Width <= runEnd {
			rec = append(rec, b)
		}
	}
	var r recovered
	final := -1
	for i := len(rec) - 1; i >= 0; i-- {
		if rec[i].PlacedConfirmed > 0 {
			final = i
			break
		}
	}
	if final < 0 {
		return r
	}
	r.finalP99 = rec[final].ToConfirmed.P99
	first := -1
	for i := len(rec) - 1; i >= 0; i-- {
		if rec[i].PlacedConfirmed == 0 || rec[i].ToConfirmed.P99 > 2*r.finalP99 {
			break
		}
		first = i
	}
	if first < 0 {
		return r
	}
	r.after, r.ok = rec[first].Start-overloadEnd, true
	return r
}

// recoveredText says when the latency was back to normal.
func (r *OverloadReport) recoveredText() string {
	if !r.Recovery.Recovered {
		return "was not back under twice the recovery phase's final p99 by its end"
	}
	return fmt.Sprintf("was back under twice the recovery phase's final p99 (%s) %.0f s after the overload ended", fmtMS(r.Recovery.FinalP99Ms), r.Recovery.AfterS)
}

func (r *OverloadReport) lastRefusalText() string {
	if r.Refused == 0 {
		return "never started (no 503)"
	}
	if r.LastRefusalS < 0 {
		return fmt.Sprintf("%.1f s before the overload ended", -r.LastRefusalS)
	}
	return fmt.Sprintf("%.1f s after the overload ended", r.LastRefusalS)
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.0f", float64(b)/(1<<20)) }

// perService formats one figure of each service as "order/inventory/
// payment/notification", "?" for one not read.
func perService[V int64 | float64](m map[string]V, format func(V) string) string {
	var parts []string
	for _, name := range []string{"order", "inventory", "payment", "notification"} {
		v, ok := m[name]
		if !ok {
			parts = append(parts, "?")
			continue
		}
		parts = append(parts, format(v))
	}
	return strings.Join(parts, " / ")
}

func count(g float64) string { return strconv.FormatFloat(g, 'f', 0, 64) }

// Tables returns the run's tables with the notes that explain them.
func (r *OverloadReport) Tables() string {
	var b strings.Builder
	b.WriteString("| phase | offered | sent | 201 | 503 | other | confirmed | cancelled | placed→confirmed p50 | p99 | max |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	names := []string{"overload", "recovery"}
	for i, t := range r.PhaseTotals {
		name := fmt.Sprintf("phase %d", i)
		if i < len(names) {
			name = names[i]
		}
		lat := func(v float64) string {
			if t.Confirmed == 0 {
				return "n/a"
			}
			return fmtMS(v)
		}
		fmt.Fprintf(&b, "| %s | %g/s for %g s | %d | %d | %d | %d | %d | %s | %s | %s | %s |\n",
			name, t.Phase.Rate, t.Phase.Duration.Seconds(), t.Sent, t.Created, t.Refused, t.Failed, t.Confirmed,
			fmtCounts(t.Cancelled), lat(t.ToConfirmed.P50), lat(t.ToConfirmed.P99), lat(t.ToConfirmed.Max))
	}

	fmt.Fprintf(&b, "\nTimeline, %g s windows (counts and latencies of the orders sent in the window, except confirmed: the confirmations read in it; RSS and goroutines: the largest of the samples taken every second in it, order / inventory / payment / notification):\n\n", r.WindowS)
	b.WriteString("| window | phase | offered | 201 | 503 | other | POST p50 | POST p99 | confirmed | placed→confirmed p50 | p99 | RSS MiB | goroutines |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range r.Timeline {
		post := func(d time.Duration) string {
			if w.Created == 0 {
				return "–"
			}
			return fmtMS(ms(d))
		}
		conf := func(d time.Duration) string {
			if w.PlacedConfirmed == 0 {
				return "–"
			}
			return fmtMS(ms(d))
		}
		fmt.Fprintf(&b, "| %g–%g s | %s | %d | %d | %d | %d | %s | %s | %d | %s | %s | %s | %s |\n",
			w.Start.Seconds(), (w.Start + w.Width).Seconds(), w.Phase, w.Sent, w.Created, w.Refused, w.Failed,
			post(w.POST.P50), post(w.POST.P99), w.Confirmed, conf(w.ToConfirmed.P50), conf(w.ToConfirmed.P99),
			perService(w.RSS, mib), perService(w.Goroutines, count))
	}

	b.WriteString("\nMemory and goroutines over the run (first sample, largest, last sample after the drain):\n\n")
	b.WriteString("| service | RSS MiB first | max | last | goroutines first | max | last |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, name := range []string{"order", "inventory", "payment", "notification"} {
		m := r.Services[name]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", name, mib(m.RSSStart), mib(m.RSSMax), mib(m.RSSEnd),
			count(m.GoroutinesStart), count(m.GoroutinesMax), count(m.GoroutinesEnd))
	}

	b.WriteString("\n")
	retry := "none"
	switch {
	case r.Refused > 0 && r.RetryAfterMin == r.RetryAfterMax:
		retry = fmt.Sprintf("%d s", r.RetryAfterMin)
	case r.Refused > 0:
		retry = fmt.Sprintf("%d–%d s", r.RetryAfterMin, r.RetryAfterMax)
	}
	fmt.Fprintf(&b, "- Refused: %d POSTs answered 503 (Retry-After %s); refusals stopped %s.\n", r.Refused, retry, r.lastRefusalText())
	fmt.Fprintf(&b, "- Recovery: placed→confirmed p99 (of the orders placed in a window) %s.\n", r.recoveredText())
	fmt.Fprintf(&b, "- Invariants: %s; %s.\n", invariantText(len(r.Unfinished), "every order created (201) ended confirmed or cancelled with a reason", "orders created did not end"),
		invariantText(len(r.Violations), "every 503 was the overloaded problem with a positive integer Retry-After, and no other 5xx", "violations of the refusal rules"))
	fmt.Fprintf(&b, "- Whole run (both phases and the drain, %.1f s): %s transactions and %s messages published per confirmed order; errors: %s.\n",
		r.Whole.IntervalS, fmtPerOrder(r.Whole.TxPerOrder, r.Whole.Confirmed, 1), fmtPerOrder(r.Whole.PublishedPerOrder, r.Whole.Confirmed, 2), fmtErrors(r.Whole.Errors, r.Whole.SeqBreaks))
	b.WriteString("\nCPU per confirmed order (ms), whole run:\n\n")
	b.WriteString(cpuTable([]Step{r.Whole}, "run", func(int, Step) string { return "overload + recovery" }))
	b.WriteString(cpuNotes)
	return b.String()
}

// invariantText says an invariant held, or how many broke it.
func invariantText(broken int, held, brokeWhat string) string {
	if broken == 0 {
		return held
	}
	return fmt.Sprintf("**%d %s**", broken, brokeWhat)
}

// fmtCounts formats counts by key, most frequent first, or "0".
func fmtCounts(m map[string]int) string {
	if len(m) == 0 {
		return "0"
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// Section returns the generated body of the overload docs section.
func (r *OverloadReport) Section() string {
	var b strings.Builder
	b.WriteString(r.header(modeOverload))
	fmt.Fprintf(&b, `The four service binaries run on fresh databases and a fresh vhost, with
20 products in stock; the order service refuses new orders while its saga
lags more than `+"`ORDER_ADMISSION_MAX_LAG`"+` (5 s unless the command sets it
through `+"`ORDERLY_E2E_ENV`"+`). The open-loop generator of `+"`tests/loadgen`"+`
offers %g orders/s for %g s, then %g orders/s for %g s on one schedule: `+orderText+` (deadline %g s).
A refused POST (503) is not retried: each one is an order the service
turned away. Afterwards every order that got a 201 is read back from the
order database.

`, r.Phases[0].Rate, r.Phases[0].Duration.Seconds(), r.Phases[1].Rate, r.Phases[1].Duration.Seconds(), r.Deadline)
	b.WriteString(r.Tables())
	return b.String()
}
