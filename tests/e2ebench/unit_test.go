package e2ebench

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/tests/loadgen"
)

// The pure parts of the benchmark, tested without running it.

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A real line from a postgres backend, and one whose command name
	// holds spaces and parentheses.
	line := "2220 (postgres) S 2219 2220 2220 0 -1 4210752 1166 0 0 0 12 34 56 78 20 0 1 0 1234 225198080 2034 18446744073709551615 1 1 0 0 0 0 0 4194304 0 0 0 0 17 1 0 0 0 0 0"
	odd := "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 5 6 7 8 20 0 1 0 999 0 0"
	tests := []struct {
		name, line string
		want       stat
		wantErr    bool
	}{
		{"postgres backend", line, stat{utime: 12, stime: 34, cutime: 56, cstime: 78, start: 1234}, false},
		{"spaces and parentheses in the name", odd, stat{utime: 5, stime: 6, cutime: 7, cstime: 8, start: 999}, false},
		{"truncated", "1 (x) S 1 2 3", stat{}, true},
		{"no name", "garbage", stat{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseStat(tt.line)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseStat error = %v, want error %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseStat = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatOfThisProcess(t *testing.T) {
	t.Parallel()
	s := sampleCPU(t, map[int]string{}, map[string]bool{})
	found := false
	for k, g := range s.group {
		if g == groupGenerator {
			found = true
			if k.start == 0 {
				t.Errorf("this process's start time is 0")
			}
		}
	}
	if !found {
		t.Error("sampleCPU did not find this process")
	}
}

func TestDiffCPU(t *testing.T) {
	t.Parallel()
	old, same, fresh, gone := procKey{pid: 1, start: 10}, procKey{pid: 2, start: 20}, procKey{pid: 3, start: 30}, procKey{pid: 4, start: 40}
	recycled := procKey{pid: 1, start: 99} // pid 1 again, a new process
	reaped := procKey{pid: 3, start: 30, children: true}
	before := cpuSample{
		ticks:   map[procKey]uint64{old: 100, same: 50, gone: 500},
		group:   map[procKey]string{old: groupPostgres, same: "order", gone: groupPostgres},
		machine: 1000,
	}
	after := cpuSample{
		ticks:   map[procKey]uint64{same: 80, fresh: 7, recycled: 3, reaped: 2},
		group:   map[procKey]string{same: "order", fresh: groupPostgres, recycled: groupPostgres, reaped: groupPostgresOther},
		machine: 1100, // 100 ticks busy: 42 ours, 58 others'
	}
	d := diffCPU(before, after)
	want := cpuDelta{
		ms:        map[string]float64{"order": 300, groupPostgres: 100, groupPostgresOther: 20, groupTotal: 420, groupOther: 580},
		processes: map[string]int{"order": 1, groupPostgres: 2}, // children's time is no process
	}
	if diff := cmp.Diff(want, d, cmp.AllowUnexported(cpuDelta{})); diff != "" {
		t.Errorf("diffCPU mismatch (-want +got):\n%s", diff)
	}
}

func TestPGDatabase(t *testing.T) {
	t.Parallel()
	tests := []struct{ cmdline, want string }{
		{"postgres: 15/main: postgres orderly_test_ab 127.0.0.1(55262) idle\x00\x00\x00", "orderly_test_ab"},
		{"postgres: 15/main: postgres orderly_test_ab 127.0.0.1(55262) INSERT waiting", "orderly_test_ab"},
		{"postgres: app shop [local] SELECT", "shop"}, // no cluster_name
		{"postgres: 15/main: autovacuum worker orderly_x", "orderly_x"},
		{"postgres: 15/main: checkpointer ", ""},
		{"postgres: 15/main: logical replication launcher ", ""},
		{"postgres: 15/main: background writer", ""},
		{"/usr/lib/postgresql/15/bin/postgres\x00-D\x00/var/lib/postgresql/15/main\x00", ""},
	}
	for _, tt := range tests {
		if got := pgDatabase(tt.cmdline); got != tt.want {
			t.Errorf("pgDatabase(%q) = %q, want %q", tt.cmdline, got, tt.want)
		}
	}
}

func TestMachineBusy(t *testing.T) {
	t.Parallel()
	procStat := "cpu  100 2 30 5000 40 5 6 7 8 9\ncpu0 50 1 15 2500 20 2 3 3 4 4\nintr 1 2 3\n"
	got, err := machineBusy(procStat)
	if want := uint64(100 + 2 + 30 + 5 + 6 + 7); err != nil || got != want {
		t.Errorf("machineBusy = %d, %v; want %d (user nice system irq softirq steal)", got, err, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 x 3 4 5 6 7 8\n"} {
		if _, err := machineBusy(bad); err == nil {
			t.Errorf("machineBusy(%q): no error", bad)
		}
	}
}

func TestSumSeries(t *testing.T) {
	t.Parallel()
	text := `# HELP outbox_pending Events committed but not yet confirmed by the broker.
# TYPE outbox_pending gauge
outbox_pending{otel_scope_name="outbox"} 3
outbox_pending_age_seconds 99
outbox_published_total{otel_scope_name="outbox",otel_scope_version=""} 1200
messaging_client_consumed_messages_total{messaging_destination_name="inventory.orders",outcome="ack"} 10
messaging_client_consumed_messages_total{messaging_destination_name="a queue with } and \" in it",outcome="retry"} 2.5 1700000000000
messaging_client_consumed_messages_total 1e2
other_total 5
`
	got, err := sumSeries(strings.NewReader(text), metricPending, metricPublished, metricConsumed, "absent_total")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]series{
		metricPending:   {sum: 3, found: true},
		metricPublished: {sum: 1200, found: true},
		metricConsumed:  {sum: 112.5, found: true},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(series{})); diff != "" {
		t.Errorf("sumSeries mismatch (-want +got):\n%s", diff)
	}
	if _, err := sumSeries(strings.NewReader("outbox_pending{a=\"b\" 3\n"), metricPending); err == nil {
		t.Error("unterminated labels: no error")
	}
	if _, err := sumSeries(strings.NewReader("outbox_pending NaNa\n"), metricPending); err == nil {
		t.Error("bad value: no error")
	}
}

func TestRewriteSection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, doc, body, want string
		wantErr               bool
	}{
		{
			name: "no section yet: appended at the end",
			doc:  "# Benchmarks\n\ntext\n",
			body: "new\n",
			want: "# Benchmarks\n\ntext\n\n## End to end (issue 8)\n\n<!-- bench-e2e:begin -->\nnew\n<!-- bench-e2e:end -->\n",
		},
		{
			name: "no final newline",
			doc:  "text",
			body: "new",
			want: "text\n\n## End to end (issue 8)\n\n<!-- bench-e2e:begin -->\nnew\n<!-- bench-e2e:end -->\n",
		},
		{
			name: "existing section: only its inside changes",
			doc:  "a\n## End to end (issue 8)\n\nintro\n<!-- bench-e2e:begin -->\nold\nlines\n<!-- bench-e2e:end -->\n\n## Later\nz\n",
			body: "new\n",
			want: "a\n## End to end (issue 8)\n\nintro\n<!-- bench-e2e:begin -->\nnew\n<!-- bench-e2e:end -->\n\n## Later\nz\n",
		},
		{
			name: "another mode's section is left alone",
			doc:  "<!-- bench-soak:begin -->\nsoak\n<!-- bench-soak:end -->\n<!-- bench-e2e:begin -->\nold\n<!-- bench-e2e:end -->\n",
			body: "new\n",
			want: "<!-- bench-soak:begin -->\nsoak\n<!-- bench-soak:end -->\n<!-- bench-e2e:begin -->\nnew\n<!-- bench-e2e:end -->\n",
		},
		{name: "begin without end", doc: "<!-- bench-e2e:begin -->\nold\n", body: "x", wantErr: true},
		{name: "end before begin", doc: "<!-- bench-e2e:end -->\n<!-- bench-e2e:begin -->\n", body: "x", wantErr: true},
		{name: "two sections", doc: "<!-- bench-e2e:begin -->\n<!-- bench-e2e:end -->\n<!-- bench-e2e:begin -->\n<!-- bench-e2e:end -->\n", body: "x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rewriteSection(tt.doc, modeLadder, tt.body)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rewriteSection mismatch (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				// Rewriting the result again changes nothing but the body.
				again, err := rewriteSection(got, modeLadder, tt.body)
				if err != nil || again != got {
					t.Errorf("second rewrite = %q, %v; want it unchanged", again, err)
				}
			}
		})
	}
}

func TestCommand(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mode    mode
		environ []string
		want    string
	}{
		{
			name:    "through make",
			mode:    modeLadder,
			environ: []string{"HOME=/root", "MAKELEVEL=1", "ORDERLY_E2E_WRITE_DOCS=1", "ORDERLY_E2E_RATES=25,50,100", "ORDERLY_E2E_DURATION=20s"},
			want:    "ORDERLY_E2E_DURATION=20s ORDERLY_E2E_RATES=25,50,100 make bench-e2e",
		},
		{
			name:    "settings with spaces are quoted",
			mode:    modeLadder,
			environ: []string{"MAKELEVEL=1", "ORDERLY_E2E_ENV=CONSUMER_WORKERS=8 LOG_LEVEL=info"},
			want:    "ORDERLY_E2E_ENV='CONSUMER_WORKERS=8 LOG_LEVEL=info' make bench-e2e",
		},
		{
			name:    "go test directly",
			mode:    modeLadder,
			environ: []string{"ORDERLY_E2E_RATES=10"},
			want:    "cd tests && ORDERLY_E2E_RATES=10 ORDERLY_BENCH_E2E=1 go test -v -count=1 -timeout 90m -run '^TestEndToEnd$' ./e2ebench/",
		},
		{
			name:    "overload: its own settings and the shared ones, not the other modes'",
			mode:    modeOverload,
			environ: []string{"MAKELEVEL=1", "ORDERLY_OVERLOAD_RATE=200", "ORDERLY_RECOVERY_DURATION=20s", "ORDERLY_SOAK_RATE=5", "ORDERLY_E2E_DEADLINE=30s", "ORDERLY_BENCH_OVERLOAD=1"},
			want:    "ORDERLY_E2E_DEADLINE=30s ORDERLY_OVERLOAD_RATE=200 ORDERLY_RECOVERY_DURATION=20s make bench-overload",
		},
		{
			name:    "history directly",
			mode:    modeHistory,
			environ: []string{"ORDERLY_HISTORY_SCALE=0.05", "ORDERLY_OVERLOAD_RATE=200"},
			want:    "cd tests && ORDERLY_HISTORY_SCALE=0.05 ORDERLY_BENCH_HISTORY=1 go test -v -count=1 -timeout 60m -run '^TestHistory$' ./e2ebench/",
		},
		{
			name:    "soak through make",
			mode:    modeSoak,
			environ: []string{"MAKELEVEL=2", "ORDERLY_SOAK_DURATION=90s", "ORDERLY_HISTORY_RATE=1"},
			want:    "ORDERLY_SOAK_DURATION=90s make bench-soak",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := command(tt.environ, tt.mode); got != tt.want {
				t.Errorf("command = %q\nwant      %q", got, tt.want)
			}
		})
	}
}

func TestSaturated(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                     string
		share, achieved, offered float64
		want                     bool
	}{
		{"everything confirmed at the rate", 1, 100, 100, false},
		{"99 % confirmed, 95 % of the rate: just not", 0.99, 95, 100, false},
		{"98.9 % confirmed", 0.989, 100, 100, true},
		{"achieved under 95 %", 1, 94.9, 100, true},
		{"nothing confirmed", 0, 0, 25, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := saturated(tt.share, tt.achieved, tt.offered); got != tt.want {
				t.Errorf("saturated(%v, %v, %v) = %v, want %v", tt.share, tt.achieved, tt.offered, got, tt.want)
			}
		})
	}
}

func TestParseRates(t *testing.T) {
	t.Parallel()
	got, err := parseRates("25, 50,12.5")
	if err != nil || !cmp.Equal(got, []float64{25, 50, 12.5}) {
		t.Errorf("parseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"", "25,,50", "0", "-3", "fast"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q): no error", bad)
		}
	}
}

func TestTablesWithoutConfirmations(t *testing.T) {
	t.Parallel()
	r := Report{Steps: []Step{{Rate: 25, Sent: 10, Saturated: true, Delivered: -1, Errors: map[string]int{"http 503 (Retry-After)": 10}, IntervalS: time.Second.Seconds()}}}
	out := r.Tables()
	for _, want := range []string{"| 25/s | 10 | 0 (0.0 %) | 0.0/s | n/a |", "| n/a | n/a | n/a | **yes** | http 503 (Retry-After): 10 |"} {
		if !strings.Contains(out, want) {
			t.Errorf("tables lack %q:\n%s", want, out)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	t.Parallel()
	status := "Name:\torder\nVmPeak:\t  900000 kB\nVmRSS:\t   51234 kB\nRssAnon:\t   40000 kB\n"
	if got, err := parseVMRSS(status); err != nil || got != 51234*1024 {
		t.Errorf("parseVMRSS = %d, %v; want %d", got, err, 51234*1024)
	}
	for _, bad := range []string{"Name:\tx\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseVMRSS(bad); err == nil {
			t.Errorf("parseVMRSS(%q): no error", bad)
		}
	}
	if rss, err := readRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("readRSS(this process) = %d, %v", rss, err)
	}
}

func TestCheckRefusals(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const overloaded = "https://orderly.example/problems/overloaded"
	orders := []loadgen.Order{
		{HTTPStatus: 201},
		{HTTPStatus: 503, RetryAfter: "3", Problem: overloaded, Sent: t0},
		{HTTPStatus: 503, RetryAfter: "12", Problem: overloaded, Sent: t0.Add(time.Second)},
		{HTTPStatus: 503, RetryAfter: "", Problem: overloaded, Sent: t0.Add(2 * time.Second)},
		{HTTPStatus: 503, RetryAfter: "0", Problem: overloaded},
		{HTTPStatus: 503, RetryAfter: "1.5", Problem: overloaded},
		{HTTPStatus: 503, RetryAfter: "2", Problem: "https://orderly.example/problems/internal"},
		{HTTPStatus: 500, Problem: "https://orderly.example/problems/internal"},
		{HTTPStatus: 500, Problem: "https://orderly.example/problems/internal"},
		{HTTPStatus: 422, Problem: "https://orderly.example/problems/invalid-body"}, // not a 5xx: reported elsewhere
		{HTTPStatus: 0, Outcome: loadgen.TransportError},
	}
	got := checkRefusals(orders)
	if got.refused != 6 || got.retryMin != 2 || got.retryMax != 12 || !got.lastSent.Equal(t0.Add(2*time.Second)) {
		t.Errorf("refused %d, Retry-After %d–%d, last %v; want 6, 2–12, t0+2s", got.refused, got.retryMin, got.retryMax, got.lastSent)
	}
	want := []string{
		`2× 500 (problem type "https://orderly.example/problems/internal")`,
		`1× 503 of problem type "https://orderly.example/problems/internal", not …/overloaded`,
		`1× 503 without a positive integer Retry-After ("")`,
		`1× 503 without a positive integer Retry-After ("0")`,
		`1× 503 without a positive integer Retry-After ("1.5")`,
	}
	if diff := cmp.Diff(want, got.violations); diff != "" {
		t.Errorf("violations (-want +got):\n%s", diff)
	}
	if v := checkRefusals(orders[:3]).violations; len(v) != 0 {
		t.Errorf("well-formed refusals: violations %v", v)
	}
}

func TestRecovery(t *testing.T) {
	t.Parallel()
	s := time.Second
	win := func(start int, placed int, p99 time.Duration) loadgen.Bucket {
		return loadgen.Bucket{Start: time.Duration(start) * s, Width: 5 * s, PlacedConfirmed: placed, ToConfirmed: loadgen.Latency{P99: p99}}
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name    string
		buckets []loadgen.Bucket
		want    recovered
	}{
		{
			name: "back to normal 10 s after the overload",
			buckets: []loadgen.Bucket{
				win(0, 100, 4*s), win(5, 100, 5*s), // overload
				win(10, 0, 0), win(15, 20, 3*s), win(20, 50, ms(150)), win(25, 50, ms(90)), win(30, 50, ms(100)), // recovery
				win(35, 0, 0), // drain
			},
			want: recovered{finalP99: ms(100), after: 10 * s, ok: true},
		},
		{
			name: "a late spike restarts the count",
			buckets: []loadgen.Bucket{
				win(0, 100, 4*s), win(5, 100, 5*s),
				win(10, 50, ms(100)), win(15, 50, ms(900)), win(20, 50, ms(100)), win(25, 50, ms(120)), win(30, 50, ms(100)),
			},
			want: recovered{finalP99: ms(100), after: 10 * s, ok: true},
		},
		{
			name: "everything refused at the end: not recovered",
			buckets: []loadgen.Bucket{
				win(0, 100, 4*s), win(5, 100, 5*s),
				win(10, 50, ms(100)), win(15, 50, ms(100)), win(20, 50, ms(100)), win(25, 50, ms(100)), win(30, 0, 0),
			},
			want: recovered{finalP99: ms(100)},
		},
		{
			name:    "no confirmed order in the recovery",
			buckets: []loadgen.Bucket{win(0, 100, 4*s), win(5, 100, 5*s), win(10, 0, 0)},
			want:    recovered{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := recovery(tt.buckets, 10*s, 35*s)
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(recovered{})); diff != "" {
				t.Errorf("recovery (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSlope(t *testing.T) {
	t.Parallel()
	if got := slope([]float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}); got != 2 {
		t.Errorf("slope of a line of slope 2 = %v", got)
	}
	if got := slope([]float64{1, 2, 3}, []float64{5, 5, 5}); got != 0 {
		t.Errorf("slope of a flat line = %v", got)
	}
	if got := slope([]float64{1, 1}, []float64{2, 9}); got != 0 {
		t.Errorf("slope over a single x = %v, want 0", got)
	}
}

func TestTrends(t *testing.T) {
	t.Parallel()
	w := func(i int, rss int64, steady bool) SoakWindow {
		return SoakWindow{
			Bucket: loadgen.Bucket{Start: time.Duration(i) * 30 * time.Second, Width: 30 * time.Second, PlacedConfirmed: 10,
				ToConfirmed: loadgen.Latency{P50: 40 * time.Millisecond, P99: 100 * time.Millisecond}},
			Steady:      steady,
			CPUPerOrder: 50,
			RSS:         map[string]int64{"order": rss},
			Sizes:       map[string]int64{"order.outbox": 1 << 20},
		}
	}
	// RSS grows 1 MiB a window (2 MiB a minute); the drain window is left out.
	got := trends([]SoakWindow{w(0, 10<<20, true), w(1, 11<<20, true), w(2, 12<<20, true), w(3, 99<<20, false)})
	byName := map[string]Trend{}
	for _, tr := range got {
		byName[tr.Name] = tr
	}
	if tr := byName["order RSS"]; tr.First != 10 || tr.Last != 12 || math.Abs(tr.SlopePerMin-2) > 1e-9 {
		t.Errorf("order RSS trend = %+v, want 10 → 12 MiB at 2 MiB/min", tr)
	}
	if tr := byName["order.outbox"]; tr.First != 1 || tr.Last != 1 || tr.SlopePerMin != 0 {
		t.Errorf("outbox trend = %+v, want flat at 1 MiB", tr)
	}
	if _, ok := byName["inventory RSS"]; ok {
		t.Error("a trend for a service never read")
	}
	if got := trends([]SoakWindow{w(0, 1, true), w(1, 1, false)}); got != nil {
		t.Errorf("trends of one steady window = %+v, want nil", got)
	}
}

func TestProbesNearestAndPeak(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	probes := []probe{
		{At: t0, RSS: map[string]int64{"order": 10}, Goroutines: map[string]float64{"order": 30}},
		{At: t0.Add(time.Second), RSS: map[string]int64{"order": 50}, Goroutines: map[string]float64{"order": 20}},
		{At: t0.Add(2 * time.Second), RSS: map[string]int64{"order": 20}, Goroutines: map[string]float64{"order": 90}},
	}
	if p := nearest(probes, t0.Add(1400*time.Millisecond), time.Second); p != &probes[1] {
		t.Errorf("nearest to t0+1.4s = %v, want the probe at t0+1s", p)
	}
	if p := nearest(probes, t0.Add(5*time.Second), time.Second); p != nil {
		t.Errorf("nearest to t0+5s within 1 s = %v, want none", p.At)
	}
	if p := nearest(nil, t0, time.Hour); p != nil {
		t.Errorf("nearest of no probes = %v", p)
	}
	rss, g := peak(probes, t0, t0.Add(2*time.Second)) // the last probe is outside
	if rss["order"] != 50 || g["order"] != 30 {
		t.Errorf("peak = %v, %v; want RSS 50, goroutines 30", rss, g)
	}
	mem := serviceMemory(probes)["order"]
	if want := (ServiceMemory{RSSStart: 10, RSSMax: 50, RSSEnd: 20, GoroutinesStart: 30, GoroutinesMax: 90, GoroutinesEnd: 90}); mem != want {
		t.Errorf("serviceMemory = %+v, want %+v", mem, want)
	}
}

func TestPhaseTotals(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	res := &loadgen.Result{Phases: []loadgen.Phase{{Rate: 2, Duration: time.Second}, {Rate: 1, Duration: time.Second}}, Orders: []loadgen.Order{
		{Sent: t0, HTTPStatus: 201, Outcome: loadgen.Confirmed, ToConfirmed: 100 * time.Millisecond},
		{Sent: t0, HTTPStatus: 503, Outcome: loadgen.HTTPError},
		{Sent: t0, HTTPStatus: 201, Outcome: loadgen.Cancelled, Reason: "timeout", Phase: 1},
		{Phase: 1, Outcome: loadgen.Aborted}, // never sent
	}}
	got := phaseTotals(res)
	want := []PhaseTotals{
		{Phase: res.Phases[0], Sent: 2, Created: 1, Refused: 1, Confirmed: 1, Cancelled: map[string]int{}, ToConfirmed: Millis{P50: 100, P90: 100, P99: 100, Max: 100}},
		{Phase: res.Phases[1], Sent: 1, Created: 1, Cancelled: map[string]int{"timeout": 1}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("phaseTotals (-want +got):\n%s", diff)
	}
}

// TestReportsRender renders every mode's tables and docs section from
// small made-up runs: every figure has a place, and nothing panics on
// missing data.
func TestReportsRender(t *testing.T) {
	t.Parallel()
	run := Run{Date: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Command: "make bench-x"}
	step := Step{Rate: 10, Sent: 100, Created: 100, Confirmed: 99, Cancelled: 1, ConfirmedShare: 0.99, Achieved: 9.9,
		ToConfirmed: Millis{P50: 40, P99: 120}, Delivered: -1, Errors: map[string]int{}, CPUPerOrder: map[string]float64{groupTotal: 50}, TxPerOrder: 30}
	bucket := loadgen.Bucket{Width: 5 * time.Second, Sent: 10, Created: 8, Refused: 2, Confirmed: 8, PlacedConfirmed: 8,
		ToConfirmed: loadgen.Latency{P50: 40 * time.Millisecond, P99: 90 * time.Millisecond}}
	over := OverloadReport{Run: run, Phases: []loadgen.Phase{{Rate: 20, Duration: 5 * time.Second}, {Rate: 5, Duration: 5 * time.Second}}, WindowS: 5,
		Timeline:    []OverloadWindow{{Bucket: bucket, Phase: "overload", RSS: map[string]int64{"order": 30 << 20}}},
		PhaseTotals: []PhaseTotals{{Phase: loadgen.Phase{Rate: 20, Duration: 5 * time.Second}, Sent: 100, Refused: 20, Cancelled: map[string]int{"timeout": 2}}},
		Whole:       step, Refused: 20, RetryAfterMin: 1, RetryAfterMax: 6, Unfinished: []string{"x: pending"}}
	hist := HistoryReport{Run: run, Rate: 10, Steps: []Step{step, step}, Labels: []string{"fresh", "with history"},
		Sizes: []SizeSnapshot{{When: "fresh", Bytes: map[string]int64{"order.outbox": 8192}}}}
	soak := SoakReport{Run: run, Rate: 10, Duration: 60, SampleS: 30, Whole: step,
		Windows: []SoakWindow{{Bucket: bucket, Steady: true, Sizes: map[string]int64{"order.outbox": 8192}}, {Bucket: bucket}},
		Trends:  []Trend{{Name: "order RSS", Unit: "MiB", First: 30, Last: 31, SlopePerMin: 0.5}}}
	tests := []struct {
		name    string
		section string
		want    []string
	}{
		{"overload", over.Section(), []string{"Generated by `TestOverload`", "| overload | 20/s for 5 s | 100 | 0 | 20 |", "| 0–5 s | overload | 10 | 8 | 2 | 0 |",
			"30 / ? / ? / ?", "Retry-After 1–6 s", "**1 orders created did not end**", "| overload + recovery |"}},
		{"history", hist.Section(), []string{"Generated by `TestHistory`", "| fresh, 10/s | 100 |", "| with history, 10/s |", "1.00 (+0 %)",
			"is within 10 %", "| order.outbox | 8 kB |"}},
		{"soak", soak.Section(), []string{"Generated by `TestSoak`", "| 0:00–0:05 | 10 | 8 |", "(drain)", "| 0:05 | 8 kB / ? / ? |",
			"| order RSS | 30.0 MiB | 31.0 MiB | +3 % | +0.50 MiB/min (+30.0 MiB/h) |", "| 10/s for 60 s |"}},
	}
	for _, tt := range tests {
		for _, w := range tt.want {
			if !strings.Contains(tt.section, w) {
				t.Errorf("%s section lacks %q:\n%s", tt.name, w, tt.section)
			}
		}
	}
}
