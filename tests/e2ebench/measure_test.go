package e2ebench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/tests/stack"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/<pid>/stat:
// 100 on every Linux architecture the project runs on (sysconf(_SC_CLK_TCK)
// has no wrapper in golang.org/x/sys).
const clockTicks = 100

// CPU groups besides the services, which are grouped under their own names.
const (
	// groupPostgres is PostgreSQL's shared processes (postmaster,
	// checkpointer, writers) and the backends of the stack's databases;
	// groupPostgresOther the backends of other databases and what exited
	// backends left in the postmaster's children's time. The two together
	// are the machine's PostgreSQL.
	groupPostgres      = "postgres"
	groupPostgresOther = "postgres_other"
	groupRabbitMQ      = "rabbitmq"
	groupGenerator     = "generator"
	groupTotal         = "total"
	// groupOther is the rest of the machine's busy time: processes outside
	// the groups (other test suites, the kernel's own threads).
	groupOther = "other"
)

// isRabbitMQ says whether a process name (/proc/<pid>/comm) is one of a
// RabbitMQ node's: the Erlang VM and its helpers.
func isRabbitMQ(comm string) bool {
	switch comm {
	case "beam.smp", "erl_child_setup", "epmd", "inet_gethost":
		return true
	}
	return false
}

// procKey identifies a process across samples: a pid with its start time,
// so that a recycled pid is a new process. children marks the time the
// process's waited-for children left behind, counted apart from its own.
type procKey struct {
	pid      int
	start    uint64
	children bool
}

// cpuSample is the CPU time, in clock ticks, of every process of the
// groups at one moment, and the machine's busy time.
type cpuSample struct {
	at      time.Time
	ticks   map[procKey]uint64
	group   map[procKey]string
	machine uint64
}

// sampleCPU is readCPU that fails tb on an error.
func sampleCPU(tb testing.TB, services map[int]string, dbs map[string]bool) cpuSample {
	tb.Helper()
	s, err := readCPU(services, dbs)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// readCPU reads /proc for the stack's service processes (services maps
// pid → name), this process (the generator), PostgreSQL (its backends
// split by whether they serve one of dbs) and RabbitMQ. A process that
// vanishes while it is read is left out. It returns an error when /proc
// cannot be listed or a stat line cannot be parsed.
func readCPU(services map[int]string, dbs map[string]bool) (cpuSample, error) {
	s := cpuSample{at: time.Now(), ticks: map[procKey]uint64{}, group: map[procKey]string{}}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}, fmt.Errorf("read /proc/stat: %w", err)
	}
	if s.machine, err = machineBusy(string(b)); err != nil {
		return cpuSample{}, fmt.Errorf("/proc/stat: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return cpuSample{}, fmt.Errorf("list /proc: %w", err)
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var group string
		switch {
		case services[pid] != "":
			group = services[pid]
		case pid == self:
			group = groupGenerator
		default:
			comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
			if err != nil {
				continue
			}
			switch c := strings.TrimSpace(string(comm)); {
			case c == "postgres":
				group = groupPostgres
			case isRabbitMQ(c):
				group = groupRabbitMQ
			default:
				continue
			}
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseStat(string(stat))
		if err != nil {
			return cpuSample{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		k := procKey{pid: pid, start: st.start}
		children := group
		switch group {
		case groupPostgres:
			cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if db := pgDatabase(string(cmdline)); db != "" && !dbs[db] {
				group = groupPostgresOther
			}
			// A backend that exits takes its CPU time into its parent's
			// (the postmaster's) children's time. Whose backend it was is
			// lost then: the stack's backends live as long as their pools,
			// the short-lived ones are mostly other clients'.
			children = groupPostgresOther
		case groupRabbitMQ:
		default:
			children = "" // a service's or the generator's children are not theirs
		}
		s.ticks[k], s.group[k] = st.utime+st.stime, group
		if children != "" {
			ck := procKey{pid: pid, start: st.start, children: true}
			s.ticks[ck], s.group[ck] = st.cutime+st.cstime, children
		}
	}
	return s, nil
}

// pgDatabase returns the database a PostgreSQL process serves, from its
// command line as the server sets it ("postgres: 15/main: user db
// 127.0.0.1(5432) idle", "postgres: 15/main: autovacuum worker db"), or
// "" for a process that serves none (the postmaster, checkpointer,
// writers, launchers).
func pgDatabase(cmdline string) string {
	cmdline = strings.TrimRight(strings.ReplaceAll(cmdline, "\x00", " "), " ")
	rest, ok := strings.CutPrefix(cmdline, "postgres: ")
	if !ok {
		return "" // the postmaster keeps its real command line
	}
	if _, after, ok := strings.Cut(rest, ": "); ok {
		rest = after // past the cluster name
	}
	f := strings.Fields(rest)
	switch {
	case len(f) == 3 && f[0] == "autovacuum" && f[1] == "worker":
		return f[2]
	case len(f) >= 3 && (strings.HasSuffix(f[2], ")") || f[2] == "[local]"):
		return f[1]
	}
	return ""
}

// stat is what the benchmark needs from /proc/<pid>/stat.
type stat struct {
	utime, stime, cutime, cstime, start uint64
}

// parseStat parses /proc/<pid>/stat: fields 14–17 (utime, stime, cutime,
// cstime) and 22 (starttime). The command name, field 2, is in parentheses
// and may contain spaces and parentheses itself, so fields are counted
// after its last ')'. It returns an error for a line too short.
func parseStat(line string) (stat, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return stat{}, errors.New("no command name")
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3 (state)
	if len(f) < 20 {
		return stat{}, fmt.Errorf("%d fields after the command name, want at least 20", len(f))
	}
	field := func(n int) (uint64, error) { return strconv.ParseUint(f[n-3], 10, 64) }
	var s stat
	var err error
	for _, p := range []struct {
		n   int
		dst *uint64
	}{{14, &s.utime}, {15, &s.stime}, {16, &s.cutime}, {17, &s.cstime}, {22, &s.start}} {
		if *p.dst, err = field(p.n); err != nil {
			return stat{}, fmt.Errorf("field %d: %w", p.n, err)
		}
	}
	return s, nil
}

// machineBusy returns the busy time of all CPUs together from /proc/stat's
// "cpu" line: user, nice, system, irq, softirq and steal (guest time is
// part of user already), in clock ticks. It returns an error when the line
// is missing or short.
func machineBusy(procStat string) (uint64, error) {
	for line := range strings.Lines(procStat) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 9 {
			return 0, fmt.Errorf("cpu line has %d fields, want at least 9", len(f))
		}
		var busy uint64
		for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
			v, err := strconv.ParseUint(f[i], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cpu field %d: %w", i, err)
			}
			busy += v
		}
		return busy, nil
	}
	return 0, errors.New("no cpu line")
}

// cpuDelta is the CPU spent by each group between two samples, in
// milliseconds, and how many processes each group had at the end.
type cpuDelta struct {
	ms        map[string]float64
	processes map[string]int
}

// diffCPU returns after − before per group, plus groupTotal (the groups
// together) and groupOther (the machine's busy time beyond them). A process absent from before
// started during the interval and counts from zero; one absent from after
// ended, and its time is lost (except PostgreSQL's and RabbitMQ's, whose
// parents inherit it).
func diffCPU(before, after cpuSample) cpuDelta {
	d := cpuDelta{ms: map[string]float64{}, processes: map[string]int{}}
	for k, t := range after.ticks {
		g := after.group[k]
		if !k.children {
			d.processes[g]++
		}
		if t0, ok := before.ticks[k]; ok && t0 <= t {
			t -= t0
		}
		ms := float64(t) * 1000 / clockTicks
		d.ms[g] += ms
		d.ms[groupTotal] += ms
	}
	// Both samples are not taken at the same instant: a small negative
	// remainder is sampling noise.
	machine := float64(after.machine-before.machine) * 1000 / clockTicks
	d.ms[groupOther] = max(0, machine-d.ms[groupTotal])
	return d
}

// metrics are the sums, over the stack's services, of the Prometheus
// series the benchmark follows.
type metrics struct {
	pending   float64 // outbox_pending
	published float64 // outbox_published_total
	consumed  float64 // messaging_client_consumed_messages_total, all labels
	// hasConsumed says whether any service exposes the consumed counter
	// (it is recent; an older build has none).
	hasConsumed bool
}

// Metric names as the services' Prometheus exporter spells them.
const (
	metricPending   = "outbox_pending"
	metricPublished = "outbox_published_total"
	metricConsumed  = "messaging_client_consumed_messages_total"
)

// scrape fetches every service's /metrics and sums the series. It returns
// an error when a service does not answer 200.
func scrape(ctx context.Context, client *http.Client, bases []string) (metrics, error) {
	var m metrics
	for _, base := range bases {
		sums, err := scrapeService(ctx, client, base, metricPending, metricPublished, metricConsumed)
		if err != nil {
			return metrics{}, err
		}
		m.pending += sums[metricPending].sum
		m.published += sums[metricPublished].sum
		m.consumed += sums[metricConsumed].sum
		m.hasConsumed = m.hasConsumed || sums[metricConsumed].found
	}
	return m, nil
}

// scrapeService fetches one service's /metrics and sums the series names
// (see sumSeries). It returns an error when the service does not answer
// 200.
func scrapeService(ctx context.Context, client *http.Client, base string, names ...string) (map[string]series, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var sums map[string]series
	if resp.StatusCode == http.StatusOK {
		sums, err = sumSeries(resp.Body, names...)
	} else {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s/metrics: %w", base, err)
	}
	return sums, nil
}

// series is the sum of every sample of one metric name.
type series struct {
	sum   float64
	found bool
}

// sumSeries reads the Prometheus text format from r and sums, per name
// asked for, the values of every sample with exactly that name (all label
// sets). Only what this needs is parsed: comments are skipped, a label set
// is skipped with its quoted values (which may hold spaces or braces), and
// the value is the next field. It returns an error for a value that is not
// a number or a read error.
func sumSeries(r io.Reader, names ...string) (map[string]series, error) {
	out := make(map[string]series, len(names))
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ \t")
		if end < 0 || !want[line[:end]] {
			continue
		}
		name, rest := line[:end], line[end:]
		if rest[0] == '{' {
			j := labelsEnd(rest)
			if j < 0 {
				return nil, fmt.Errorf("unterminated labels in %q", line)
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("value of %q: %w", line, err)
		}
		s := out[name]
		s.sum += v
		s.found = true
		out[name] = s
	}
	return out, sc.Err()
}

// labelsEnd returns the index of the '}' closing the label set that s
// starts with, skipping quoted values and their escapes, or -1.
func labelsEnd(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			return i
		}
	}
	return -1
}

// pgStats reads pg_stat_database on its own connection to the cluster's
// maintenance database, so that reading adds no transaction to the
// databases it reads about.
type pgStats struct {
	conn *pgx.Conn
	dbs  []string
}

// newPGStats connects to the postgres database of the server that holds
// the stack's databases; the connection closes when tb ends.
func newPGStats(tb testing.TB, s *stack.Stack) *pgStats {
	tb.Helper()
	var dbs []string
	var maint *url.URL
	for _, svc := range []*stack.Service{s.Order, s.Inventory, s.Payment, s.Notification} {
		u, err := url.Parse(svc.DBURL)
		if err != nil {
			tb.Fatalf("parse %s's database URL: %v", svc.Name, err)
		}
		dbs = append(dbs, strings.TrimPrefix(u.Path, "/"))
		maint = u
	}
	maint.Path = "/postgres"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, maint.String())
	if err != nil {
		tb.Fatalf("connect to the postgres database: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return &pgStats{conn: conn, dbs: dbs}
}

// databases returns the stack's database names as a set.
func (p *pgStats) databases() map[string]bool {
	m := make(map[string]bool, len(p.dbs))
	for _, db := range p.dbs {
		m[db] = true
	}
	return m
}

// commits returns xact_commit summed over the stack's databases.
func (p *pgStats) commits(tb testing.TB) int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	if err := p.conn.QueryRow(ctx, "SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database WHERE datname = ANY($1)", p.dbs).Scan(&n); err != nil {
		tb.Fatalf("read pg_stat_database: %v", err)
	}
	return n
}

// version returns the server's version line, up to " on <platform>".
func (p *pgStats) version(tb testing.TB) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v string
	if err := p.conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		tb.Fatalf("SELECT version(): %v", err)
	}
	v, _, _ = strings.Cut(v, " on ")
	return v
}

// readRSS returns a process's resident set size in bytes, from
// /proc/<pid>/status. It returns an error when the process is gone.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	return parseVMRSS(string(b))
}

// parseVMRSS returns the VmRSS line of a /proc/<pid>/status in bytes. It
// returns an error when the line is missing or not in kB.
func parseVMRSS(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS line %q: %w", strings.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmRSS line")
}

// tracked are the tables whose size the benchmarks follow, by service:
// the ones with churn (outbox, inbox), retention (idempotency keys, the
// notification service's status and feed) or that grow with every order.
// The notification service has no outbox or inbox (its status updates are
// idempotent by seq).
var tracked = []struct{ service, table string }{
	{"order", "outbox"}, {"order", "inbox"}, {"order", "orders"}, {"order", "order_items"},
	{"order", "order_history"}, {"order", "idempotency_keys"},
	{"inventory", "outbox"}, {"inventory", "inbox"}, {"inventory", "reservations"}, {"inventory", "reservation_lines"},
	{"payment", "outbox"}, {"payment", "inbox"}, {"payment", "payments"}, {"payment", "refunds"},
	{"notification", "order_status"}, {"notification", "status_feed"},
}

// tableSizes returns pg_total_relation_size (table, indexes and TOAST) of
// every tracked table, keyed "service.table". It returns the first error.
func tableSizes(ctx context.Context, svcs []*stack.Service) (map[string]int64, error) {
	out := map[string]int64{}
	for _, svc := range svcs {
		var names []string
		for _, t := range tracked {
			if t.service == svc.Name {
				names = append(names, t.table)
			}
		}
		const q = `
SELECT c.relname, pg_total_relation_size(c.oid)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND c.relname = ANY($1)`
		rows, err := svc.DB.Query(ctx, q, names)
		if err != nil {
			return nil, fmt.Errorf("sizes of %s's tables: %w", svc.Name, err)
		}
		for rows.Next() {
			var name string
			var size int64
			if err := rows.Scan(&name, &size); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sizes of %s's tables: %w", svc.Name, err)
			}
			out[svc.Name+"."+name] = size
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("sizes of %s's tables: %w", svc.Name, err)
		}
	}
	return out, nil
}
