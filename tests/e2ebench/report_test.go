package e2ebench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// Report is a whole run: where and how it ran, and every step measured.
type Report struct {
	Date     time.Time `json:"date"`
	Command  string    `json:"command"`
	Duration float64   `json:"duration_per_step_s"`
	Deadline float64   `json:"order_deadline_s"`
	Machine  Machine   `json:"machine"`
	Steps    []Step    `json:"steps"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs        int     `json:"cpus"`
	CPUModel    string  `json:"cpu_model"`
	MemoryGiB   float64 `json:"memory_gib"`
	Go          string  `json:"go"`
	PostgreSQL  string  `json:"postgresql"`
	RabbitMQ    string  `json:"rabbitmq"`
	LoadAverage string  `json:"load_average_before"`
}

// fill reads the machine's figures and the servers' versions. It runs
// before the first step: rabbitmqctl starts a beam.smp of its own, which
// would count as RabbitMQ's CPU during a step.
func (m *Machine) fill(tb testing.TB, pg *pgStats) {
	tb.Helper()
	m.CPUs = runtime.NumCPU()
	m.Go = runtime.Version()
	m.PostgreSQL = pg.version(tb)
	m.RabbitMQ = strings.TrimSpace(rabbittest.Ctl(tb, "version"))
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kib, _ := strconv.ParseFloat(f[1], 64)
				m.MemoryGiB = kib / (1 << 20)
			}
		}
	}
}

// loadAverage returns /proc/loadavg's 1, 5 and 15 minute figures, or "".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Step is one offered rate of the ladder.
type Step struct {
	Rate           float64 `json:"offered_rate"`
	Sent           int     `json:"sent"`
	Created        int     `json:"created"`
	Confirmed      int     `json:"confirmed"`
	Cancelled      int     `json:"cancelled"`
	ConfirmedShare float64 `json:"confirmed_share"`
	// Achieved is confirmed orders per second from the first POST to the
	// last confirmation (over at least the offered window).
	Achieved  float64 `json:"achieved_rate"`
	Saturated bool    `json:"saturated"`
	// ToConfirmed is placed→confirmed, POST the POST's latency (201s).
	ToConfirmed Millis         `json:"placed_to_confirmed_ms"`
	POST        Millis         `json:"post_ms"`
	Errors      map[string]int `json:"errors"`
	// SeqBreaks counts status messages that did not follow the previous
	// one's seq (a missed or repeated status on a WebSocket).
	SeqBreaks int `json:"seq_breaks"`

	// IntervalS is the measured interval (first POST → drained) and
	// DrainS its part after the last order ended.
	IntervalS float64 `json:"interval_s"`
	DrainS    float64 `json:"drain_s"`
	// CPUms is each process group's CPU over the interval (with "total"
	// for the groups together and "other" for the rest of the machine),
	// CPUPerOrder the same per confirmed order, CoresBusy the total over
	// the interval's length and MachineBusy the whole machine's.
	CPUms       map[string]float64 `json:"cpu_ms"`
	CPUPerOrder map[string]float64 `json:"cpu_ms_per_confirmed_order"`
	CoresBusy   float64            `json:"cores_busy"`
	MachineBusy float64            `json:"machine_cores_busy"`
	Processes   map[string]int     `json:"processes"`

	Transactions      int64   `json:"transactions"`
	TxPerOrder        float64 `json:"transactions_per_confirmed_order"`
	Published         int64   `json:"published"`
	PublishedPerOrder float64 `json:"published_per_confirmed_order"`
	// Delivered is -1 when the services expose no consumed counter.
	Delivered         int64   `json:"delivered"`
	DeliveredPerOrder float64 `json:"delivered_per_confirmed_order"`
}

// Millis is a latency distribution in milliseconds.
type Millis struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func millis(l loadgen.Latency) Millis {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	return Millis{P50: ms(l.P50), P90: ms(l.P90), P99: ms(l.P99), Max: ms(l.Max)}
}

// newStep computes a step's figures from the generator's result and the
// samples taken before its first POST and once it had drained.
func newStep(res *loadgen.Result, c0, c1 cpuSample, m0, m1 metrics, transactions int64) Step {
	st := Step{
		Rate:           res.Rate,
		Sent:           res.Sent,
		Created:        res.Created,
		Confirmed:      res.Confirmed,
		Cancelled:      res.Cancelled,
		ConfirmedShare: res.ConfirmedShare(),
		Achieved:       res.Achieved(),
		ToConfirmed:    millis(loadgen.Summarize(res.ToConfirmed)),
		POST:           millis(loadgen.Summarize(res.POST)),
		Errors:         res.Errors,
		IntervalS:      c1.at.Sub(c0.at).Seconds(),
		DrainS:         c1.at.Sub(res.Finished).Seconds(),
		Transactions:   transactions,
		Published:      int64(m1.published - m0.published),
		Delivered:      -1,
	}
	st.Saturated = saturated(st.ConfirmedShare, st.Achieved, st.Rate)
	for _, o := range res.Orders {
		st.SeqBreaks += o.SeqBreaks
	}
	if m1.hasConsumed {
		st.Delivered = int64(m1.consumed - m0.consumed)
	}
	d := diffCPU(c0, c1)
	st.CPUms, st.Processes = d.ms, d.processes
	st.CPUPerOrder = map[string]float64{}
	for g, ms := range d.ms {
		st.CPUPerOrder[g] = perOrder(ms, st.Confirmed)
	}
	if st.IntervalS > 0 {
		st.CoresBusy = d.ms[groupTotal] / 1000 / st.IntervalS
		st.MachineBusy = (d.ms[groupTotal] + d.ms[groupOther]) / 1000 / st.IntervalS
	}
	st.TxPerOrder = perOrder(float64(st.Transactions), st.Confirmed)
	st.PublishedPerOrder = perOrder(float64(st.Published), st.Confirmed)
	if st.Delivered >= 0 {
		st.DeliveredPerOrder = perOrder(float64(st.Delivered), st.Confirmed)
	}
	return st
}

// saturated says whether a step missed its rate: fewer than 99 % of the
// orders confirmed within their deadline, or an achieved rate under 95 %
// of the offered one.
func saturated(confirmedShare, achieved, offered float64) bool {
	return confirmedShare < 0.99 || achieved < 0.95*offered
}

// perOrder returns x / confirmed, or 0 when nothing was confirmed (JSON
// has no NaN; the tables print n/a then).
func perOrder(x float64, confirmed int) float64 {
	if confirmed == 0 {
		return 0
	}
	return x / float64(confirmed)
}

// Tables returns the run's two markdown tables, one row per step, with
// the notes that explain them.
func (r *Report) Tables() string {
	var b strings.Builder
	b.WriteString("| offered | sent | confirmed | achieved | placed→confirmed p50 | p90 | p99 | max | POST p50 | POST p99 | tx/order | published/order | delivered/order | saturated | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Steps {
		lat := func(ms float64, n int) string {
			if n == 0 {
				return "n/a"
			}
			return fmtMS(ms)
		}
		delivered := "n/a"
		if s.Delivered >= 0 {
			delivered = fmtPerOrder(s.DeliveredPerOrder, s.Confirmed, 2)
		}
		sat := "no"
		if s.Saturated {
			sat = "**yes**"
		}
		fmt.Fprintf(&b, "| %g/s | %d | %d (%.1f %%) | %.1f/s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			s.Rate, s.Sent, s.Confirmed, 100*s.ConfirmedShare, s.Achieved,
			lat(s.ToConfirmed.P50, s.Confirmed), lat(s.ToConfirmed.P90, s.Confirmed), lat(s.ToConfirmed.P99, s.Confirmed), lat(s.ToConfirmed.Max, s.Confirmed),
			lat(s.POST.P50, s.Created), lat(s.POST.P99, s.Created),
			fmtPerOrder(s.TxPerOrder, s.Confirmed, 1), fmtPerOrder(s.PublishedPerOrder, s.Confirmed, 2), delivered,
			sat, fmtErrors(s.Errors, s.SeqBreaks))
	}
	b.WriteString("\nCPU per confirmed order (ms), whole step including its drain:\n\n")
	b.WriteString("| offered | order | inventory | payment | notification | PostgreSQL¹ | (this stack's⁴) | RabbitMQ¹ | generator² | **total** | other³ | cores busy (total / machine) | step |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, s := range r.Steps {
		cell := func(ms float64) string { return fmtPerOrder(ms, s.Confirmed, 2) }
		c := s.CPUPerOrder
		fmt.Fprintf(&b, "| %g/s | %s | %s | %s | %s | %s | (%s) | %s | %s | **%s** | %s | %.2f / %.2f | %.1f s |\n", s.Rate,
			cell(c["order"]), cell(c["inventory"]), cell(c["payment"]), cell(c["notification"]),
			cell(c[groupPostgres]+c[groupPostgresOther]), cell(c[groupPostgres]), cell(c[groupRabbitMQ]), cell(c[groupGenerator]),
			cell(c[groupTotal]), cell(c[groupOther]), s.CoresBusy, s.MachineBusy, s.IntervalS)
	}
	b.WriteString(`
- ¹ Machine-wide: every postgres process, and every beam.smp,
  erl_child_setup, epmd and inet_gethost process (RabbitMQ) on the machine,
  whoever uses them: nothing else should run during a benchmark. Backends
  that exit count through the postmaster's children's time.
- ² This test process: the load generator, which also copies the services'
  logs from their pipes.
- ³ The rest of the machine's busy time (/proc/stat): other processes and
  the kernel's own threads. Much more than a few ms per order means
  something else ran meanwhile, and the figures are not to be trusted.
- ⁴ PostgreSQL's shared processes and the backends of the stack's four
  databases, without other databases' backends and exited backends.

CPU from /proc/<pid>/stat (utime + stime, 100 ticks/s); tx/order is
pg_stat_database.xact_commit summed over the stack's four databases (read
11 s after the drain: PostgreSQL reports an idle backend's counts late);
published/order is outbox_published_total and delivered/order
messaging_client_consumed_messages_total (every outcome), summed over the
four services' /metrics; all per confirmed order. A step lasts from its
first POST until every order ended, every outbox is empty and no consumer
counter moved for two polls 250 ms apart.
`)
	return b.String()
}

// fmtMS formats milliseconds with a precision that suits their size.
func fmtMS(ms float64) string {
	switch {
	case ms < 10:
		return fmt.Sprintf("%.1f ms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.0f ms", ms)
	default:
		return fmt.Sprintf("%.2f s", ms/1000)
	}
}

func fmtPerOrder(x float64, confirmed, prec int) string {
	if confirmed == 0 {
		return "n/a"
	}
	return strconv.FormatFloat(x, 'f', prec, 64)
}

// fmtErrors lists the error kinds, most frequent first, or "none".
func fmtErrors(errs map[string]int, seqBreaks int) string {
	kinds := slices.Collect(maps.Keys(errs))
	slices.SortFunc(kinds, func(a, b string) int {
		if errs[a] != errs[b] {
			return errs[b] - errs[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s: %d", k, errs[k]))
	}
	if seqBreaks > 0 {
		parts = append(parts, fmt.Sprintf("seq breaks: %d", seqBreaks))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// WriteJSON writes the report to path, indented; it returns the write's
// error.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// The section of docs/benchmarks.md that the benchmark owns.
const (
	beginMarker = "<!-- bench-e2e:begin -->"
	endMarker   = "<!-- bench-e2e:end -->"
	sectionHead = "## End to end (issue 8)"
)

// WriteDocs rewrites the benchmark's section of docs/benchmarks.md with
// this run, leaving the rest of the file as it is. It returns an error
// when the file cannot be read or written or its markers are broken.
func (r *Report) WriteDocs() error {
	root, err := stack.RepoRoot()
	if err != nil {
		return err
	}
	path := filepath.Join(root, "docs", "benchmarks.md")
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	out, err := rewriteSection(string(doc), r.Section())
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(out), 0o644) //nolint:gosec // a document in the repository, world-readable like the rest
}

// rewriteSection returns doc with the text between the markers replaced
// by body, or, when doc has no markers, with a new section holding them
// appended. It returns an error when only one marker is present, or they
// are out of order, rather than guess.
func rewriteSection(doc, body string) (string, error) {
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	i, j := strings.Index(doc, beginMarker), strings.Index(doc, endMarker)
	switch {
	case i < 0 && j < 0:
		if doc != "" && !strings.HasSuffix(doc, "\n") {
			doc += "\n"
		}
		return doc + "\n" + sectionHead + "\n\n" + beginMarker + "\n" + body + endMarker + "\n", nil
	case i < 0 || j < 0 || j < i:
		return "", errors.New("docs/benchmarks.md: the bench-e2e markers are incomplete or out of order")
	case strings.Count(doc, beginMarker) > 1 || strings.Count(doc, endMarker) > 1:
		return "", errors.New("docs/benchmarks.md: the bench-e2e markers appear more than once")
	}
	return doc[:i+len(beginMarker)] + "\n" + body + doc[j:], nil
}

// Section returns the generated body of the docs section.
func (r *Report) Section() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Generated by `TestEndToEnd` (`tests/e2ebench`) on %s. Command:\n\n", r.Date.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "```sh\n%s\n```\n\n", r.Command)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %.1f GiB; %s, %s, RabbitMQ %s; load average before the run %s.\n\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Go, m.PostgreSQL, m.RabbitMQ, m.LoadAverage)
	fmt.Fprintf(&b, `The four service binaries run on fresh databases and a fresh vhost, with
20 products in stock. Each rate is offered for %g s by the open-loop
generator of `+"`tests/loadgen`"+`: order *i* is sent at *i*/rate whatever
happened to earlier ones; it is a `+"`POST /v1/orders`"+` by one of 500
customers (1–3 distinct SKUs, 1–3 units each, `+"`pm_card_ok`"+`, a fresh
`+"`Idempotency-Key`"+`), then one WebSocket on the notification service, read
until the order is confirmed or cancelled (deadline %g s). Placed→confirmed
runs from sending the POST to reading `+"`confirmed`"+`; achieved is confirmed
orders per second from the first POST to the last confirmation (over at
least the offered window). A step is saturated when fewer than 99 %% of its
orders were confirmed within the deadline or it achieved under 95 %% of the
offered rate; the ladder stops after two saturated steps in a row.

`, r.Duration, r.Deadline)
	b.WriteString(r.Tables())
	return b.String()
}

// command returns the command line that reproduces the run: the
// benchmark's settings from environ, then `make bench-e2e` when make ran
// it (make sets MAKELEVEL for its recipes), else the go test command.
func command(environ []string) string {
	var vars []string
	viaMake := false
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "MAKELEVEL":
			viaMake = true
		case strings.HasPrefix(k, "ORDERLY_E2E_") && k != "ORDERLY_E2E_WRITE_DOCS":
			vars = append(vars, k+"="+shellQuote(v))
		}
	}
	slices.Sort(vars)
	if viaMake {
		return strings.Join(append(vars, "make bench-e2e"), " ")
	}
	return "cd tests && " + strings.Join(append(vars, "ORDERLY_BENCH_E2E=1 go test -v -count=1 -timeout 90m -run '^TestEndToEnd$' ./e2ebench/"), " ")
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_,./:=@%+-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
