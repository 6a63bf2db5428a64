// Command wsload is a load client for the notification service's live
// tracking WebSocket (GET /v1/orders/{id}/ws). It opens N connections, each
// to one order, at a bounded rate and from a set of source addresses, holds
// them idle, reads every message and records, for each status message, the
// time from the message's "at" (when the status changed) to its arrival. It
// stops by itself after -duration (or on SIGTERM/SIGINT), closes every
// connection with a normal close and prints its figures as JSON.
//
// Stdout carries one JSON object per line: {"type":"progress",…} every
// -report interval, then one {"type":"result",…}. Raw latency samples (one
// per line, in microseconds) go to -samples when given, so that a caller
// running several wsload processes can merge them into exact percentiles.
//
// Example (orders listed in targets.txt as "<order id> <tracking token>"):
//
//	wsload -url 'ws://127.0.0.1:8083/v1/orders/{id}/ws?token={token}' \
//	    -targets targets.txt -n 9000 -src 127.0.0.2 -rate 1000 -duration 5m
//
// One source address gives at most ~28,000 ephemeral ports toward one
// server port (net.ipv4.ip_local_port_range), and one process at most its
// open-file limit of sockets: spread larger loads over several processes
// and over addresses of 127.0.0.0/8 (every one of them is local on Linux).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	res, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "wsload:", err)
		os.Exit(1)
	}
	if res.OpenAtEnd < cfg.N && cfg.RequireAll {
		os.Exit(3)
	}
}

// config is what the flags say.
type config struct {
	URL        string // with {id} and {token}
	Targets    []target
	First, N   int
	Sources    []net.IP
	Rate       float64 // new connections per second
	Inflight   int     // handshakes in progress at most
	Retries    int     // extra attempts for a connection that fails to open
	Duration   time.Duration
	Report     time.Duration
	MinSeq     int64 // latency counts only status messages with seq ≥ MinSeq
	Origin     string
	Samples    string // file for raw latency samples (µs), "" for none
	BufSize    int
	Timeout    time.Duration // per handshake
	RequireAll bool
}

// target is one order and the credential to watch it.
type target struct{ ID, Token string }

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("wsload", flag.ContinueOnError)
	var c config
	var targets, sources string
	fs.StringVar(&c.URL, "url", "", "WebSocket URL pattern; {id} and {token} are replaced per connection (required)")
	fs.StringVar(&targets, "targets", "", "file of \"<order id> <token>\" lines (required)")
	fs.IntVar(&c.First, "first", 0, "first line of -targets to use")
	fs.IntVar(&c.N, "n", 1, "connections to open; connection i watches line first+i (wrapping around)")
	fs.StringVar(&sources, "src", "", "comma-separated local addresses to bind, used in turn (default: the kernel's choice)")
	fs.Float64Var(&c.Rate, "rate", 500, "new connections per second")
	fs.IntVar(&c.Inflight, "inflight", 64, "handshakes in progress at most")
	fs.IntVar(&c.Retries, "retries", 3, "extra attempts for a connection that fails to open (not for a refused handshake)")
	fs.DurationVar(&c.Duration, "duration", time.Minute, "stop after this long, in any case (at most 1h)")
	fs.DurationVar(&c.Report, "report", time.Second, "progress line interval")
	fs.Int64Var(&c.MinSeq, "min-seq", 0, "count latency only for status messages with seq ≥ this")
	fs.StringVar(&c.Origin, "origin", "", "Origin header (none by default, as a non-browser client)")
	fs.StringVar(&c.Samples, "samples", "", "write raw latency samples (µs, one per line) to this file at the end")
	fs.IntVar(&c.BufSize, "bufsize", 1024, "read buffer per connection, bytes")
	fs.DurationVar(&c.Timeout, "timeout", 15*time.Second, "handshake timeout")
	fs.BoolVar(&c.RequireAll, "require-all", false, "exit with status 3 unless all -n connections are still open at the end")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case c.URL == "":
		return c, errors.New("-url is required")
	case !strings.HasPrefix(c.URL, "ws://"):
		return c, errors.New("-url must start with ws://")
	case targets == "":
		return c, errors.New("-targets is required")
	case c.N < 1 || c.First < 0:
		return c, errors.New("-n must be ≥ 1 and -first ≥ 0")
	case c.Rate <= 0 || c.Inflight < 1 || c.Retries < 0 || c.BufSize < 64:
		return c, errors.New("-rate must be > 0, -inflight ≥ 1, -retries ≥ 0, -bufsize ≥ 64")
	case c.Duration <= 0 || c.Duration > time.Hour:
		return c, errors.New("-duration must be in (0, 1h]: the load must stop by itself")
	case c.Report <= 0:
		return c, errors.New("-report must be > 0")
	}
	for _, s := range strings.Split(sources, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			return c, fmt.Errorf("-src: %q is not an IP address", s)
		}
		c.Sources = append(c.Sources, ip)
	}
	var err error
	c.Targets, err = readTargets(targets)
	return c, err
}

func readTargets(path string) ([]target, error) {
	f, err := os.Open(path) //nolint:gosec // a path the operator chose
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []target
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != 2 {
			return nil, fmt.Errorf("%s:%d: want \"<order id> <token>\"", path, line)
		}
		out = append(out, target{fields[0], fields[1]})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no targets", path)
	}
	return out, nil
}

// Result is the final report (the "result" line).
type Result struct {
	Type            string         `json:"type"` // "result"
	ElapsedS        float64        `json:"elapsed_s"`
	Wanted          int            `json:"wanted"`
	Opened          int64          `json:"opened"`       // handshakes that succeeded
	OpenAtEnd       int            `json:"open_at_end"`  // still open when the run ended
	MaxOpen         int64          `json:"max_open"`     // most open at once
	Failed          int64          `json:"failed"`       // connections that never opened
	FailReasons     map[string]int `json:"fail_reasons"` // by cause, every attempt
	ClosedByServer  map[string]int `json:"closed_by_server"`
	Dropped         int64          `json:"dropped"` // lost without a close frame
	Pings           int64          `json:"pings"`   // heartbeats received (and answered)
	Messages        int64          `json:"messages"`
	StatusMessages  int64          `json:"status_messages"`
	OtherMessages   int64          `json:"other_messages"`
	BadMessages     int64          `json:"bad_messages"` // not JSON, or another order's
	Duplicates      int64          `json:"duplicates"`   // seq not above the last one seen
	Gaps            int64          `json:"gaps"`         // seq skipped one or more
	LatencyCount    int            `json:"latency_count"`
	Latency         Percentiles    `json:"latency_ms"`
	Connect         Percentiles    `json:"connect_ms"`
	ClientRSSKiB    int64          `json:"client_rss_kib"`
	SourcesUsed     []string       `json:"sources"`
	FirstOpenAfterS float64        `json:"first_open_after_s"`
	AllOpenAfterS   float64        `json:"all_open_after_s"` // 0 if never all open
}

// Progress is a "progress" line.
type Progress struct {
	Type           string  `json:"type"` // "progress"
	ElapsedS       float64 `json:"elapsed_s"`
	Open           int64   `json:"open"`
	Opened         int64   `json:"opened"`
	Failed         int64   `json:"failed"`
	Closed         int64   `json:"closed"` // by the server or dropped
	Pings          int64   `json:"pings"`
	Messages       int64   `json:"messages"`
	StatusMessages int64   `json:"status_messages"`
	LatencyCount   int64   `json:"latency_count"`
}

// Percentiles of a set of durations, in milliseconds.
type Percentiles struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// percentiles summarizes samples (in µs); it sorts them.
func percentiles(us []int64) Percentiles {
	if len(us) == 0 {
		return Percentiles{}
	}
	slices.Sort(us)
	at := func(q float64) float64 {
		i := int(q*float64(len(us))+0.5) - 1 // nearest rank
		i = max(0, min(i, len(us)-1))
		return float64(us[i]) / 1000
	}
	var sum int64
	for _, v := range us {
		sum += v
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), P999: at(0.999), Max: float64(us[len(us)-1]) / 1000,
		Mean: float64(sum) / float64(len(us)) / 1000}
}

// stats are shared by every connection of a run.
type stats struct {
	open, maxOpen, opened, failed, closed             atomic.Int64
	messages, status, other, bad, dups, gaps, latency atomic.Int64
	dropped, pings                                    atomic.Int64

	mu          sync.Mutex
	failReasons map[string]int
	closeCodes  map[string]int
	latencies   []int64 // µs
	connects    []int64 // µs
	firstOpen   time.Time
	allOpen     time.Time
}

func (s *stats) count(m map[string]int, key string) {
	s.mu.Lock()
	m[key]++
	s.mu.Unlock()
}

// statusMsg is the notification service's message.
type statusMsg struct {
	Type    string `json:"type"`
	OrderID string `json:"order_id"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Seq     int64  `json:"seq"`
	At      string `json:"at"`
}

// run opens cfg.N connections and holds them until ctx ends or
// cfg.Duration has passed, writing progress and the result to out.
func run(ctx context.Context, cfg config, out io.Writer) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	start := time.Now()
	st := &stats{failReasons: map[string]int{}, closeCodes: map[string]int{}}
	enc := json.NewEncoder(out)
	var encMu sync.Mutex
	emit := func(v any) {
		encMu.Lock()
		defer encMu.Unlock()
		_ = enc.Encode(v)
	}

	var (
		connsMu sync.Mutex
		conns   = map[*Conn]struct{}{}
		readers sync.WaitGroup
		dialers sync.WaitGroup
	)
	dialer := func(i int) *net.Dialer {
		d := &net.Dialer{Control: controlNoPort}
		if len(cfg.Sources) > 0 {
			d.LocalAddr = &net.TCPAddr{IP: cfg.Sources[i%len(cfg.Sources)]}
		}
		return d
	}

	// open dials connection i, retrying transient failures; it reports
	// whether the connection is open.
	open := func(i int) (*Conn, target, bool) {
		t := cfg.Targets[(cfg.First+i)%len(cfg.Targets)]
		u := strings.NewReplacer("{id}", url.PathEscape(t.ID), "{token}", url.QueryEscape(t.Token)).Replace(cfg.URL)
		for attempt := 0; ; attempt++ {
			hctx, hcancel := context.WithTimeout(ctx, cfg.Timeout)
			t0 := time.Now()
			c, err := Dial(hctx, dialer(i), u, cfg.Origin, cfg.BufSize)
			hcancel()
			if err == nil {
				c.OnPing = func() { st.pings.Add(1) }
				st.mu.Lock()
				st.connects = append(st.connects, time.Since(t0).Microseconds())
				st.mu.Unlock()
				return c, t, true
			}
			if ctx.Err() != nil {
				return nil, t, false
			}
			st.count(st.failReasons, failReason(err))
			var he *HandshakeError
			if (errors.As(err, &he) && he.Status != 429 && he.Status != 503) || attempt >= cfg.Retries {
				st.failed.Add(1)
				return nil, t, false
			}
			select {
			case <-ctx.Done():
				return nil, t, false
			case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
			}
		}
	}

	hold := func(c *Conn, t target) {
		defer readers.Done()
		defer func() {
			connsMu.Lock()
			delete(conns, c)
			connsMu.Unlock()
			st.open.Add(-1)
			_ = c.c.Close()
		}()
		last := int64(-1)
		for {
			op, data, err := c.Read()
			recv := time.Now()
			if err != nil {
				if ctx.Err() != nil {
					return // our own shutdown
				}
				st.closed.Add(1)
				var ce *CloseError
				if errors.As(err, &ce) {
					st.count(st.closeCodes, strconv.Itoa(ce.Code))
				} else {
					st.dropped.Add(1)
					st.count(st.closeCodes, "no_close_frame")
				}
				return
			}
			st.messages.Add(1)
			var m statusMsg
			if op != opText || json.Unmarshal(data, &m) != nil {
				st.bad.Add(1)
				continue
			}
			if m.Type != "status" {
				st.other.Add(1)
				continue
			}
			st.status.Add(1)
			if m.OrderID != t.ID {
				st.bad.Add(1)
				continue
			}
			switch {
			case last >= 0 && m.Seq <= last:
				st.dups.Add(1)
			case last >= 0 && m.Seq > last+1:
				st.gaps.Add(1)
			}
			last = max(last, m.Seq)
			if m.Seq < cfg.MinSeq {
				continue
			}
			at, err := time.Parse(time.RFC3339Nano, m.At)
			if err != nil {
				st.bad.Add(1)
				continue
			}
			st.latency.Add(1)
			st.mu.Lock()
			st.latencies = append(st.latencies, recv.Sub(at).Microseconds())
			st.mu.Unlock()
		}
	}

	// The opener paces new connections at cfg.Rate, with at most
	// cfg.Inflight handshakes at once.
	sem := make(chan struct{}, cfg.Inflight)
	openerDone := make(chan struct{})
	go func() {
		defer close(openerDone)
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		for i := range cfg.N {
			if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			select {
			case <-ctx.Done():
				return
			case sem <- struct{}{}:
			}
			dialers.Add(1)
			go func() {
				defer dialers.Done()
				c, t, ok := open(i)
				<-sem
				if !ok {
					return
				}
				connsMu.Lock()
				if ctx.Err() != nil {
					connsMu.Unlock()
					_ = c.c.Close()
					return
				}
				conns[c] = struct{}{}
				readers.Add(1)
				connsMu.Unlock()
				n := st.open.Add(1)
				opened := st.opened.Add(1)
				st.mu.Lock()
				if opened == 1 {
					st.firstOpen = time.Now()
				}
				if opened == int64(cfg.N) {
					st.allOpen = time.Now()
				}
				st.mu.Unlock()
				for {
					m := st.maxOpen.Load()
					if n <= m || st.maxOpen.CompareAndSwap(m, n) {
						break
					}
				}
				hold(c, t)
			}()
		}
	}()

	progress := func() Progress {
		return Progress{Type: "progress", ElapsedS: time.Since(start).Seconds(), Open: st.open.Load(), Opened: st.opened.Load(),
			Failed: st.failed.Load(), Closed: st.closed.Load(), Pings: st.pings.Load(), Messages: st.messages.Load(),
			StatusMessages: st.status.Load(), LatencyCount: st.latency.Load()}
	}
	tick := time.NewTicker(cfg.Report)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			emit(progress())
		}
	}
	<-openerDone

	// Shutting down: count what is still open, then close it all.
	connsMu.Lock()
	openAtEnd := len(conns)
	all := make([]*Conn, 0, len(conns))
	for c := range conns {
		all = append(all, c)
	}
	connsMu.Unlock()
	emit(progress())
	var closers sync.WaitGroup
	for chunk := range slices.Chunk(all, 256) {
		closers.Add(1)
		go func() {
			defer closers.Done()
			for _, c := range chunk {
				_ = c.Close(1000)
			}
		}()
	}
	closers.Wait()
	dialers.Wait()
	readers.Wait()

	st.mu.Lock()
	defer st.mu.Unlock()
	res := Result{
		Type: "result", ElapsedS: time.Since(start).Seconds(), Wanted: cfg.N,
		Opened: st.opened.Load(), OpenAtEnd: openAtEnd, MaxOpen: st.maxOpen.Load(), Failed: st.failed.Load(),
		FailReasons: st.failReasons, ClosedByServer: st.closeCodes, Dropped: st.dropped.Load(), Pings: st.pings.Load(),
		Messages: st.messages.Load(), StatusMessages: st.status.Load(), OtherMessages: st.other.Load(),
		BadMessages: st.bad.Load(), Duplicates: st.dups.Load(), Gaps: st.gaps.Load(),
		LatencyCount: len(st.latencies), ClientRSSKiB: selfRSSKiB(),
	}
	for _, ip := range cfg.Sources {
		res.SourcesUsed = append(res.SourcesUsed, ip.String())
	}
	if !st.firstOpen.IsZero() {
		res.FirstOpenAfterS = st.firstOpen.Sub(start).Seconds()
	}
	if !st.allOpen.IsZero() {
		res.AllOpenAfterS = st.allOpen.Sub(start).Seconds()
	}
	if cfg.Samples != "" {
		if err := writeSamples(cfg.Samples, st.latencies); err != nil {
			return res, err
		}
	}
	res.Latency = percentiles(st.latencies)
	res.Connect = percentiles(st.connects)
	emit(res)
	return res, nil
}

// failReason names an error for the fail_reasons tally.
func failReason(err error) string {
	var he *HandshakeError
	var ne net.Error
	switch {
	case errors.As(err, &he):
		return "http_" + strconv.Itoa(he.Status)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "no_local_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too_many_open_files"
	case errors.As(err, &ne) && ne.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof_during_handshake"
	}
	return "other"
}

func writeSamples(path string, us []int64) error {
	f, err := os.Create(path) //nolint:gosec // a path the operator chose
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, v := range us {
		_, _ = w.WriteString(strconv.FormatInt(v, 10)) // errors resurface in Flush
		_ = w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// selfRSSKiB returns this process's resident set (VmRSS), or -1.
func selfRSSKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	return vmRSSKiB(b)
}

// vmRSSKiB extracts VmRSS from the text of /proc/<pid>/status, or -1.
func vmRSSKiB(status []byte) int64 {
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return n
				}
			}
		}
	}
	return -1
}
