package e2ebench

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
)

// soakParams are the soak mode's settings, from the environment.
type soakParams struct {
	common
	rate             float64
	duration, sample time.Duration
}

func loadSoakParams(tb testing.TB) soakParams {
	tb.Helper()
	return soakParams{
		common:   loadCommon(tb),
		rate:     envFloat(tb, "ORDERLY_SOAK_RATE", 100),
		duration: envDuration(tb, "ORDERLY_SOAK_DURATION", 10*time.Minute),
		sample:   envDuration(tb, "ORDERLY_SOAK_SAMPLE", 30*time.Second),
	}
}

// soakDrainLimit bounds the soak's drain.
const soakDrainLimit = 10 * time.Minute

// soakTables are the tables whose growth the soak shows: those with churn
// or retention, and the orders.
var soakTables = []string{
	"order.outbox", "inventory.outbox", "payment.outbox",
	"order.inbox", "inventory.inbox", "payment.inbox",
	"order.idempotency_keys", "order.orders", "notification.order_status", "notification.status_feed",
}

func TestSoak(t *testing.T) {
	if os.Getenv(modeSoak.gate) != "1" {
		t.Skip("soak benchmark (ten minutes, the whole machine): run `make bench-soak`")
	}
	p := loadSoakParams(t)
	b := newBench(t, modeSoak, p.common, false)
	r := SoakReport{Run: b.run, Rate: p.rate, Duration: p.duration.Seconds(), Deadline: p.deadline.Seconds(), SampleS: p.sample.Seconds()}
	defer func() { finish(t, modeSoak, p.common, &r, r.Whole.Sent > 0, r.Tables, r.Section) }()

	probes := b.startProbes(p.sample, true, true)
	st, res, drainErr := b.measure(t, soakDrainLimit, func(ctx context.Context) (*loadgen.Result, error) {
		return b.gen.Run(ctx, p.rate, p.duration)
	})
	pr := probes.Stop()
	if e := probeErrors(pr); e != "" {
		t.Logf("some readings of the stack failed: %s", e)
	}
	r.fill(res, st, pr, p.sample)
	if drainErr != nil {
		t.Error(drainErr)
	}
	r.Unfinished = b.unfinished(t, res, finalStateLimit)
	if n := len(r.Unfinished); n > 0 {
		t.Errorf("%d orders created (201) did not end confirmed or cancelled with a reason: %s", n, strings.Join(r.Unfinished[:min(n, 20)], "; "))
	}
	t.Logf("%d sent, %d confirmed (%.1f %%), placed→confirmed p99 %s; %d windows", st.Sent, st.Confirmed, 100*st.ConfirmedShare, fmtMS(st.ToConfirmed.P99), len(r.Windows))
}

// SoakReport is a run of the soak mode.
type SoakReport struct {
	Run
	Rate     float64 `json:"offered_rate"`
	Duration float64 `json:"duration_s"`
	Deadline float64 `json:"order_deadline_s"`
	SampleS  float64 `json:"sample_s"`
	// Whole is the soak as one step.
	Whole Step `json:"whole"`
	// Windows are the soak window by window, until its last confirmation.
	Windows []SoakWindow `json:"windows"`
	// Trends compare the first and the last window wholly inside the
	// offered window, with the slope over all of those.
	Trends []Trend `json:"trends"`
	// Unfinished are the orders created that did not end; they fail the
	// run.
	Unfinished []string `json:"unfinished"`
}

// SoakWindow is one sample window: what happened in it (the orders sent in
// it, the confirmations read in it, the CPU spent in it) and the services'
// and tables' state at its end.
type SoakWindow struct {
	loadgen.Bucket
	// Steady says the window lies wholly inside the offered window.
	Steady bool `json:"steady"`
	// CPUPerOrder is the CPU of every process group together over the
	// window per confirmation read in it (ms; 0 when none, and for a
	// window that is not steady), CoresBusy the same CPU over the
	// window's length.
	CPUPerOrder float64 `json:"cpu_ms_per_confirmed_order"`
	CoresBusy   float64 `json:"cores_busy"`
	// RSS (bytes), Goroutines and Sizes (bytes) are read at the window's
	// end.
	RSS        map[string]int64   `json:"rss_bytes"`
	Goroutines map[string]float64 `json:"goroutines"`
	Sizes      map[string]int64   `json:"sizes_bytes"`
}

// Trend is one figure over the steady windows: its value in the first and
// the last, and its least-squares slope per minute.
type Trend struct {
	Name        string  `json:"name"`
	Unit        string  `json:"unit"`
	First       float64 `json:"first"`
	Last        float64 `json:"last"`
	SlopePerMin float64 `json:"slope_per_minute"`
}

// fill computes the report from the run's result, its step and the probes
// taken every window.
func (r *SoakReport) fill(res *loadgen.Result, st Step, probes []probe, window time.Duration) {
	r.Whole = st
	for _, bk := range res.Timeline(window) {
		from := res.Start.Add(bk.Start)
		to := from.Add(bk.Width)
		w := SoakWindow{Bucket: bk, Steady: bk.Start+bk.Width <= res.Window}
		// The prober reads every window from just before the first POST,
		// and once more when it stops: a probe within half a window of
		// a window's edge is that edge's.
		p0, p1 := nearest(probes, from, window/2), nearest(probes, to, window/2)
		if p1 != nil {
			w.RSS, w.Goroutines, w.Sizes = p1.RSS, p1.Goroutines, p1.Sizes
		}
		if p0 != nil && p1 != nil && p0 != p1 && p0.CPU.ticks != nil && p1.CPU.ticks != nil {
			total := diffCPU(p0.CPU, p1.CPU).ms[groupTotal]
			w.CoresBusy = total / 1000 / p1.At.Sub(p0.At).Seconds()
			if w.Steady {
				// A drain window's few confirmations would carry its
				// idle CPU.
				w.CPUPerOrder = perOrder(total, bk.Confirmed)
			}
		}
		r.Windows = append(r.Windows, w)
	}
	r.Trends = trends(r.Windows)
}

// trends returns the first, last and slope of the soak's figures over its
// steady windows, or nil when there are fewer than two.
func trends(windows []SoakWindow) []Trend {
	var steady []SoakWindow
	for _, w := range windows {
		if w.Steady {
			steady = append(steady, w)
		}
	}
	if len(steady) < 2 {
		return nil
	}
	type figure struct {
		name, unit string
		value      func(SoakWindow) (float64, bool)
	}
	figures := []figure{
		{"placed→confirmed p50", "ms", func(w SoakWindow) (float64, bool) { return ms(w.ToConfirmed.P50), w.PlacedConfirmed > 0 }},
		{"placed→confirmed p99", "ms", func(w SoakWindow) (float64, bool) { return ms(w.ToConfirmed.P99), w.PlacedConfirmed > 0 }},
		{"CPU per confirmed order", "ms", func(w SoakWindow) (float64, bool) { return w.CPUPerOrder, w.CPUPerOrder > 0 }},
	}
	for _, svc := range []string{"order", "inventory", "payment", "notification"} {
		figures = append(figures,
			figure{svc + " RSS", "MiB", func(w SoakWindow) (float64, bool) {
				v, ok := w.RSS[svc]
				return float64(v) / (1 << 20), ok
			}},
			figure{svc + " goroutines", "", func(w SoakWindow) (float64, bool) {
				v, ok := w.Goroutines[svc]
				return v, ok
			}})
	}
	for _, t := range soakTables {
		figures = append(figures, figure{t, "MiB", func(w SoakWindow) (float64, bool) {
			v, ok := w.Sizes[t]
			return float64(v) / (1 << 20), ok
		}})
	}
	var out []Trend
	for _, f := range figures {
		var xs, ys []float64
		for _, w := range steady {
			if v, ok := f.value(w); ok {
				xs, ys = append(xs, (w.Start+w.Width).Minutes()), append(ys, v)
			}
		}
		if len(ys) < 2 {
			continue
		}
		out = append(out, Trend{Name: f.name, Unit: f.unit, First: ys[0], Last: ys[len(ys)-1], SlopePerMin: slope(xs, ys)})
	}
	return out
}

// slope returns the least-squares slope of ys over xs, or 0 when the xs
// do not vary.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// fmtSize formats bytes as kB under a MiB, else as MiB.
func fmtSize(b int64) string {
	if b < 1<<20 {
		return fmt.Sprintf("%.0f kB", float64(b)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// sizesOf formats the sizes of tables, "a / b / c", "?" for one not read.
func sizesOf(sizes map[string]int64, tables ...string) string {
	var parts []string
	for _, t := range tables {
		v, ok := sizes[t]
		if !ok {
			parts = append(parts, "?")
			continue
		}
		parts = append(parts, fmtSize(v))
	}
	return strings.Join(parts, " / ")
}

// fmtFigure formats a trend's value with its unit.
func fmtFigure(v float64, unit string) string {
	switch {
	case unit == "ms":
		return fmtMS(v)
	case unit == "":
		return count(v)
	case math.Abs(v) < 10:
		return fmt.Sprintf("%.2f %s", v, unit)
	default:
		return fmt.Sprintf("%.1f %s", v, unit)
	}
}

// fmtSlope formats a slope per minute with its unit, and what it makes in
// an hour.
func fmtSlope(v float64, unit string) string {
	u := unit
	if u != "" {
		u = " " + u
	}
	return fmt.Sprintf("%s%s/min (%s%s/h)", fmtSigned(v), u, fmtSigned(60*v), u)
}

// fmtSigned formats v with a sign and a precision that suits its size.
func fmtSigned(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%+.0f", v)
	case a >= 10:
		return fmt.Sprintf("%+.1f", v)
	default:
		return fmt.Sprintf("%+.2f", v)
	}
}

// Tables returns the run's tables with the notes that explain them.
func (r *SoakReport) Tables() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Windows of %g s (counts and latencies of the orders sent in the window, except confirmed: the confirmations read in it; CPU: every process group's over the window per confirmation read in it; RSS and goroutines at the window's end, order / inventory / payment / notification):\n\n", r.SampleS)
	b.WriteString("| window | offered | confirmed | cancelled | placed→confirmed p50 | p99 | CPU/order | cores busy | RSS MiB | goroutines |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, w := range r.Windows {
		lat := func(d time.Duration) string {
			if w.PlacedConfirmed == 0 {
				return "–"
			}
			return fmtMS(ms(d))
		}
		cpu := "–"
		if w.CPUPerOrder > 0 {
			cpu = fmt.Sprintf("%.1f ms", w.CPUPerOrder)
		}
		name := fmt.Sprintf("%s–%s", fmtClock(w.Start), fmtClock(w.Start+w.Width))
		if !w.Steady {
			name += " (drain)"
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s | %s | %s | %.2f | %s | %s |\n", name, w.Sent, w.Confirmed, w.PlacedCancelled,
			lat(w.ToConfirmed.P50), lat(w.ToConfirmed.P99), cpu, w.CoresBusy, perService(w.RSS, mib), perService(w.Goroutines, count))
	}

	b.WriteString("\nTable sizes at each window's end (with indexes and TOAST):\n\n")
	b.WriteString("| at | outbox (order / inventory / payment) | inbox (order / inventory / payment) | idempotency_keys | orders | order_status | status_feed |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, w := range r.Windows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", fmtClock(w.Start+w.Width),
			sizesOf(w.Sizes, "order.outbox", "inventory.outbox", "payment.outbox"),
			sizesOf(w.Sizes, "order.inbox", "inventory.inbox", "payment.inbox"),
			sizesOf(w.Sizes, "order.idempotency_keys"), sizesOf(w.Sizes, "order.orders"),
			sizesOf(w.Sizes, "notification.order_status"), sizesOf(w.Sizes, "notification.status_feed"))
	}

	if len(r.Trends) > 0 {
		b.WriteString("\nFirst against last steady window, and the least-squares slope over every steady window:\n\n")
		b.WriteString("| figure | first | last | change | slope |\n")
		b.WriteString("|---|---|---|---|---|\n")
		for _, t := range r.Trends {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", t.Name, fmtFigure(t.First, t.Unit), fmtFigure(t.Last, t.Unit),
				fmtChange(t.First, t.Last), fmtSlope(t.SlopePerMin, t.Unit))
		}
	}

	b.WriteString("\n")
	fmt.Fprintf(&b, "- Invariant: %s.\n", invariantText(len(r.Unfinished), "every order created (201) ended confirmed or cancelled with a reason", "orders created did not end"))
	fmt.Fprintf(&b, "- Whole soak (%.1f s with the drain): %d sent, %d confirmed (%.1f %%), achieved %.1f/s, placed→confirmed p50 %s p99 %s; %s transactions and %s messages published per confirmed order; errors: %s.\n",
		r.Whole.IntervalS, r.Whole.Sent, r.Whole.Confirmed, 100*r.Whole.ConfirmedShare, r.Whole.Achieved, fmtMS(r.Whole.ToConfirmed.P50), fmtMS(r.Whole.ToConfirmed.P99),
		fmtPerOrder(r.Whole.TxPerOrder, r.Whole.Confirmed, 1), fmtPerOrder(r.Whole.PublishedPerOrder, r.Whole.Confirmed, 2), fmtErrors(r.Whole.Errors, r.Whole.SeqBreaks))
	b.WriteString("\nCPU per confirmed order (ms), whole soak:\n\n")
	b.WriteString(cpuTable([]Step{r.Whole}, "run", func(int, Step) string { return fmt.Sprintf("%g/s for %g s", r.Rate, r.Duration) }))
	b.WriteString(cpuNotes)
	return b.String()
}

// fmtClock formats an offset into the run as m:ss.
func fmtClock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// fmtChange formats last against first as a relative change, or "–".
func fmtChange(first, last float64) string {
	if first == 0 {
		return "–"
	}
	c := 100 * (last - first) / first
	if math.Abs(c) < 0.5 {
		return "0 %"
	}
	return fmt.Sprintf("%+.0f %%", c)
}

// Section returns the generated body of the soak docs section.
func (r *SoakReport) Section() string {
	var b strings.Builder
	b.WriteString(r.header(modeSoak))
	fmt.Fprintf(&b, `The four service binaries run on fresh databases and a fresh vhost, with
20 products in stock, their own maintenance running (vacuum every 10 s
while the server's autovacuum is off; hourly purges, but of inbox records
older than 7 days and idempotency keys older than 24 hours, so within a
soak those tables only grow). The open-loop generator of `+"`tests/loadgen`"+` offers %g orders/s for
%g s: `+orderText+` (deadline %g s). Every %g s the test reads each service's
RSS (/proc/<pid>/status) and goroutines (go_goroutines), every process
group's CPU, and the tables' sizes (pg_total_relation_size). Afterwards
every order that got a 201 is read back from the order database.

`, r.Rate, r.Duration, r.Deadline, r.SampleS)
	b.WriteString(r.Tables())
	return b.String()
}
