package e2ebench

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
		{name: "begin without end", doc: "<!-- bench-e2e:begin -->\nold\n", body: "x", wantErr: true},
		{name: "end before begin", doc: "<!-- bench-e2e:end -->\n<!-- bench-e2e:begin -->\n", body: "x", wantErr: true},
		{name: "two sections", doc: "<!-- bench-e2e:begin -->\n<!-- bench-e2e:end -->\n<!-- bench-e2e:begin -->\n<!-- bench-e2e:end -->\n", body: "x", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rewriteSection(tt.doc, tt.body)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error = %v, want error %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rewriteSection mismatch (-want +got):\n%s", diff)
			}
			if !tt.wantErr {
				// Rewriting the result again changes nothing but the body.
				again, err := rewriteSection(got, tt.body)
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
		environ []string
		want    string
	}{
		{
			name:    "through make",
			environ: []string{"HOME=/root", "MAKELEVEL=1", "ORDERLY_E2E_WRITE_DOCS=1", "ORDERLY_E2E_RATES=25,50,100", "ORDERLY_E2E_DURATION=20s"},
			want:    "ORDERLY_E2E_DURATION=20s ORDERLY_E2E_RATES=25,50,100 make bench-e2e",
		},
		{
			name:    "settings with spaces are quoted",
			environ: []string{"MAKELEVEL=1", "ORDERLY_E2E_ENV=CONSUMER_WORKERS=8 LOG_LEVEL=info"},
			want:    "ORDERLY_E2E_ENV='CONSUMER_WORKERS=8 LOG_LEVEL=info' make bench-e2e",
		},
		{
			name:    "go test directly",
			environ: []string{"ORDERLY_E2E_RATES=10"},
			want:    "cd tests && ORDERLY_E2E_RATES=10 ORDERLY_BENCH_E2E=1 go test -v -count=1 -timeout 90m -run '^TestEndToEnd$' ./e2ebench/",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := command(tt.environ); got != tt.want {
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
