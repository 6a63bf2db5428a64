package e2ebench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
)

// historyParams are the history mode's settings, from the environment.
type historyParams struct {
	common
	rate     float64
	duration time.Duration
	scale    float64
}

func loadHistoryParams(tb testing.TB) historyParams {
	tb.Helper()
	return historyParams{
		common:   loadCommon(tb),
		rate:     envFloat(tb, "ORDERLY_HISTORY_RATE", 180),
		duration: envDuration(tb, "ORDERLY_E2E_DURATION", 30*time.Second),
		scale:    envFloat(tb, "ORDERLY_HISTORY_SCALE", 1),
	}
}

// Bounds of the history mode's waits.
const (
	historyDrainLimit = 10 * time.Minute
	// vacuumLimit bounds the wait for the services' own vacuum of the
	// preloaded outbox: their vacuumer looks every 10 s, and a vacuum of a
	// million dead rows takes seconds to a minute on the shared machine.
	vacuumLimit = 5 * time.Minute
)

func TestHistory(t *testing.T) {
	if os.Getenv(modeHistory.gate) != "1" {
		t.Skip("end-to-end benchmark with a preloaded history (minutes, the whole machine): run `make bench-history`")
	}
	p := loadHistoryParams(t)
	b := newBench(t, modeHistory, p.common, false)
	r := HistoryReport{Run: b.run, Rate: p.rate, Duration: p.duration.Seconds(), Deadline: p.deadline.Seconds(),
		Scale: p.scale, Preloaded: countsAt(p.scale)}
	defer func() { finish(t, modeHistory, p.common, &r, len(r.Steps) > 0, r.Tables, r.Section) }()

	sizes := func(when string) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := tableSizes(ctx, b.svcs)
		if err != nil {
			t.Fatal(err)
		}
		r.Sizes = append(r.Sizes, SizeSnapshot{When: when, Bytes: s})
	}
	step := func(label string) {
		st, _, err := b.measure(t, historyDrainLimit, func(ctx context.Context) (*loadgen.Result, error) {
			return b.gen.Run(ctx, p.rate, p.duration)
		})
		if err != nil {
			t.Fatal(err)
		}
		r.Steps = append(r.Steps, st)
		r.Labels = append(r.Labels, label)
		t.Logf("%s, %g/s: %d sent, %d confirmed (%.1f %%), achieved %.1f/s, placed→confirmed p50 %s p99 %s, CPU %.1f ms and %.1f transactions per order",
			label, p.rate, st.Sent, st.Confirmed, 100*st.ConfirmedShare, st.Achieved, fmtMS(st.ToConfirmed.P50), fmtMS(st.ToConfirmed.P99),
			st.CPUPerOrder[groupTotal], st.TxPerOrder)
	}

	sizes("fresh")
	step("fresh")
	sizes("after the fresh step")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	before, err := b.outboxStats(ctx)
	cancel()
	if err != nil {
		t.Fatalf("outbox statistics: %v", err)
	}
	start := time.Now()
	b.preload(t, r.Preloaded, b.gen.CustomerIDs(), b.skus)
	r.PreloadS = time.Since(start).Seconds()
	ctx, cancel = context.WithTimeout(context.Background(), time.Minute)
	after, err := b.outboxStats(ctx)
	cancel()
	if err != nil {
		t.Fatalf("outbox statistics: %v", err)
	}
	r.OutboxDeadAfterPreload = after.dead
	sizes("preloaded")
	start = time.Now()
	b.analyze(t)
	r.AnalyzeS = time.Since(start).Seconds()
	waited, err := b.waitOutboxVacuumed(before, after, r.Preloaded.Outbox, vacuumLimit)
	if err != nil {
		t.Fatal(err)
	}
	r.VacuumWaitS = waited.Seconds()
	t.Logf("the preload left %d dead rows in the outbox; the order service vacuumed them %.1f s after the ANALYZE", after.dead, r.VacuumWaitS)
	sizes("vacuumed")

	step("with history")
	sizes("after the step with history")
	t.Logf("with history / fresh: achieved %s, placed→confirmed p99 %s, CPU per order %s, transactions per order %s",
		fmtRatio(r.ratio(func(s Step) float64 { return s.Achieved })), fmtRatio(r.ratio(func(s Step) float64 { return s.ToConfirmed.P99 })),
		fmtRatio(r.ratio(func(s Step) float64 { return s.CPUPerOrder[groupTotal] })), fmtRatio(r.ratio(func(s Step) float64 { return s.TxPerOrder })))
}

// HistoryReport is a run of the history mode: one rate on the fresh stack,
// then again with the history preloaded.
type HistoryReport struct {
	Run
	Rate      float64       `json:"offered_rate"`
	Duration  float64       `json:"duration_per_step_s"`
	Deadline  float64       `json:"order_deadline_s"`
	Scale     float64       `json:"scale"`
	Preloaded preloadCounts `json:"preloaded"`
	// PreloadS, AnalyzeS and VacuumWaitS are how long the preload, the
	// ANALYZE and the wait for the services' vacuum of the outbox took.
	PreloadS    float64 `json:"preload_s"`
	AnalyzeS    float64 `json:"analyze_s"`
	VacuumWaitS float64 `json:"vacuum_wait_s"`
	// OutboxDeadAfterPreload is the outbox's n_dead_tup right after the
	// preload.
	OutboxDeadAfterPreload int64 `json:"outbox_dead_after_preload"`
	// Steps are the fresh step and the step with history, Labels their
	// names.
	Steps  []Step   `json:"steps"`
	Labels []string `json:"labels"`
	// Sizes are the tracked tables' sizes at each stage.
	Sizes []SizeSnapshot `json:"sizes"`
}

// SizeSnapshot is every tracked table's size (bytes, with indexes and
// TOAST) at one stage of a run.
type SizeSnapshot struct {
	When  string           `json:"when"`
	Bytes map[string]int64 `json:"bytes"`
}

// ratio returns f(with history) / f(fresh), or 0 when either is missing or
// the fresh value is 0.
func (r *HistoryReport) ratio(f func(Step) float64) float64 {
	if len(r.Steps) < 2 || f(r.Steps[0]) == 0 {
		return 0
	}
	return f(r.Steps[1]) / f(r.Steps[0])
}

// fmtRatio formats a ratio as "0.97 (−3 %)", or "n/a" for 0.
func fmtRatio(x float64) string {
	if x == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f (%+.0f %%)", x, 100*(x-1))
}

// Tables returns the run's tables with the notes that explain them.
func (r *HistoryReport) Tables() string {
	var b strings.Builder
	b.WriteString(stepTables(r.Steps, "run", func(i int, _ Step) string {
		label := fmt.Sprintf("step %d", i+1)
		if i < len(r.Labels) {
			label = r.Labels[i]
		}
		return fmt.Sprintf("%s, %g/s", label, r.Rate)
	}))
	if len(r.Steps) == 2 {
		achieved := r.ratio(func(s Step) float64 { return s.Achieved })
		verdict := "within"
		if achieved < 0.9 {
			verdict = "**not** within"
		}
		b.WriteString("\nWith history against fresh (ratio, change):\n\n")
		b.WriteString("| achieved | placed→confirmed p50 | p99 | POST p99 | CPU per order (total) | transactions per order |\n")
		b.WriteString("|---|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n",
			fmtRatio(achieved), fmtRatio(r.ratio(func(s Step) float64 { return s.ToConfirmed.P50 })),
			fmtRatio(r.ratio(func(s Step) float64 { return s.ToConfirmed.P99 })), fmtRatio(r.ratio(func(s Step) float64 { return s.POST.P99 })),
			fmtRatio(r.ratio(func(s Step) float64 { return s.CPUPerOrder[groupTotal] })), fmtRatio(r.ratio(func(s Step) float64 { return s.TxPerOrder })))
		fmt.Fprintf(&b, "\nThe achieved rate with history is %s 10 %% of the fresh one (the target).\n", verdict)
	}
	if len(r.Sizes) > 0 {
		b.WriteString("\nTable sizes (with indexes and TOAST):\n\n| table |")
		for _, s := range r.Sizes {
			b.WriteString(" " + s.When + " |")
		}
		b.WriteString("\n|---|" + strings.Repeat("---|", len(r.Sizes)) + "\n")
		for _, t := range tracked {
			key := t.service + "." + t.table
			fmt.Fprintf(&b, "| %s |", key)
			for _, s := range r.Sizes {
				fmt.Fprintf(&b, " %s |", sizesOf(s.Bytes, key))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// Section returns the generated body of the history docs section.
func (r *HistoryReport) Section() string {
	var b strings.Builder
	b.WriteString(r.header(modeHistory))
	fmt.Fprintf(&b, `The four service binaries run on fresh databases and a fresh vhost, with
20 products in stock. The open-loop generator of `+"`tests/loadgen`"+` offers
%g orders/s for %g s (`+orderText+`, deadline %g s), once on the fresh
databases and once more after a preload (scale %g) that writes, with
set-based SQL straight into the services' databases, what months of
traffic leave behind: %d outbox events in the order database that were
sent (inserted and deleted, as the relay deletes a confirmed event: dead
rows until vacuum), %d inbox records over the last 6 days (order.saga,
inventory.orders and payment.requests, 2:2:1), and %d finished orders (80 %%
confirmed, 20 %% cancelled: out of stock, payment declined, or by the
customer after payment and refunded) with their items, status history,
idempotency keys for the last day's, reservations and their lines,
payments, refunds, statuses and feed, half of them the benchmark's own
customers'. Then ANALYZE on the preloaded tables, as an operator restoring
a database would, and a wait for the services' own vacuum (the server runs
without autovacuum; the services vacuum tables past its thresholds every
10 s): preload %.0f s (the outbox last, leaving %d dead rows), ANALYZE
%.0f s, the outbox vacuumed %.0f s after it.

`, r.Rate, r.Duration, r.Deadline, r.Scale, r.Preloaded.Outbox, r.Preloaded.Inbox, r.Preloaded.Orders, r.PreloadS, r.OutboxDeadAfterPreload, r.AnalyzeS, r.VacuumWaitS)
	b.WriteString(r.Tables())
	return b.String()
}
