package faults

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// toxic is one network fault: toxiproxy toxics (JSON, as its API takes
// them) added to the PostgreSQL link, the AMQP link or both, for a while,
// then removed.
type toxic struct {
	name     string
	pg, amqp []string
}

// networkToxics are the faults of TestChaosNetwork, in the order they
// come. hold is how long each lasts.
func networkToxics(hold time.Duration) []toxic {
	latency := `{"name":"latency","type":"latency","stream":"downstream","attributes":{"latency":300}}`
	// 16 KB/s a connection: a relay's batch or a consumer's prefetch
	// takes seconds to get through.
	bandwidth := []string{
		`{"name":"bw_down","type":"bandwidth","stream":"downstream","attributes":{"rate":16}}`,
		`{"name":"bw_up","type":"bandwidth","stream":"upstream","attributes":{"rate":16}}`,
	}
	// Every connection that sends anything is reset at once: pools,
	// LISTEN sessions and the broker connection all break and redial
	// (and are reset again) until the toxic goes.
	reset := []string{`{"name":"reset","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`}
	// A black hole: nothing gets through either way and nothing is
	// closed. On the database link it is held for good (timeout 0) and
	// then lifted, so requests wait on statements the server never saw,
	// which its statement_timeout cannot end.
	//
	// On the broker link it ends with the connections closed (timeout =
	// hold): toxiproxy drops what it swallows, and a stream that resumes
	// after losing bytes is something no network does (TCP retransmits or
	// gives up). An AMQP connection that silently lost publishes or acks
	// would mistake the broker's confirms of later messages for theirs. On
	// a real network the heartbeats (5 s, three missed) or the broker's
	// own close the connection; the toxic does it sooner.
	holeDB := []string{
		`{"name":"hole_up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`,
		`{"name":"hole_down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`,
	}
	ms := strconv.FormatInt(hold.Milliseconds(), 10)
	holeMQ := []string{
		`{"name":"hole_up","type":"timeout","stream":"upstream","attributes":{"timeout":` + ms + `}}`,
		`{"name":"hole_down","type":"timeout","stream":"downstream","attributes":{"timeout":` + ms + `}}`,
	}
	// Data arrives in pieces of about 64 bytes, 0.2 ms apart: every
	// message is split across reads.
	slicer := []string{
		`{"name":"slicer_down","type":"slicer","stream":"downstream","attributes":{"average_size":64,"size_variation":32,"delay":200}}`,
		`{"name":"slicer_up","type":"slicer","stream":"upstream","attributes":{"average_size":64,"size_variation":32,"delay":200}}`,
	}
	return []toxic{
		{name: "latency 300ms on postgres", pg: []string{latency}},
		{name: "latency 300ms on amqp", amqp: []string{latency}},
		{name: "bandwidth 16 KB/s", pg: bandwidth, amqp: bandwidth},
		{name: "reset_peer", pg: reset, amqp: reset},
		{name: "timeout (black hole)", pg: holeDB, amqp: holeMQ},
		{name: "slicer", pg: slicer, amqp: slicer},
	}
}

// links is an in-process toxiproxy with one proxy to PostgreSQL and one
// to RabbitMQ, on random loopback ports.
type links struct {
	pg, amqp *toxiproxy.Proxy
}

func newLinks(t *testing.T) *links {
	t.Helper()
	// The toxics log every chunk they pass at trace level through
	// zerolog's global settings, which would bury the test's own lines.
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	start := func(name, upstream string) *toxiproxy.Proxy {
		p := toxiproxy.NewProxy(server, name, "127.0.0.1:0", upstream)
		if err := p.Start(); err != nil {
			t.Fatalf("toxiproxy %s: %v", name, err)
		}
		// Stopped after the stack (cleanups run last-in first-out), so
		// the services never lose their backends on the way out.
		t.Cleanup(p.Stop)
		return p
	}
	return &links{pg: start("postgres", "127.0.0.1:5432"), amqp: start("amqp", "127.0.0.1:5672")}
}

// dial is stack.Options.Dial: every service reaches its backends through
// the proxies.
func (l *links) dial(kind, hostport string) string {
	switch kind {
	case "postgres":
		return l.pg.Listen
	case "amqp":
		return l.amqp.Listen
	}
	return hostport
}

// add puts the toxics on p; remove takes them off.
func add(t *testing.T, p *toxiproxy.Proxy, toxics []string) {
	t.Helper()
	for _, js := range toxics {
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("toxiproxy %s: add %s: %v", p.Name, js, err)
		}
	}
}

func remove(p *toxiproxy.Proxy) { p.Toxics.ResetToxics(context.Background()) }

// conns counts the established TCP connections to the proxy's listening
// port: one per service connection through the link.
func conns(t *testing.T, p *toxiproxy.Proxy) int {
	t.Helper()
	_, portStr, err := net.SplitHostPort(p.Listen)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	want := fmt.Sprintf(":%04X", port)
	n := 0
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(file)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// local_address is fields[1]; st 01 is ESTABLISHED.
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "01" {
				n++
			}
		}
		_ = f.Close()
	}
	return n
}

// peaks samples the links' connection counts until stop is called.
type peaks struct {
	mu       sync.Mutex
	pg, amqp int
}

func (l *links) sample(t *testing.T) (*peaks, func()) {
	t.Helper()
	pk := &peaks{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			pg, mq := conns(t, l.pg), conns(t, l.amqp)
			pk.mu.Lock()
			pk.pg, pk.amqp = max(pk.pg, pg), max(pk.amqp, mq)
			pk.mu.Unlock()
		}
	})
	return pk, func() { close(done); wg.Wait() }
}

// TestChaosNetwork puts toxiproxy between every service and its
// PostgreSQL and RabbitMQ, and during the load degrades both links in
// turn, each for an eighth of the load's window (2.5 s in the small run),
// then lifts it: 300 ms latency (on the database link, then the broker's),
// a 16 KB/s bandwidth cap, reset_peer, a black hole (timeout) and slicer.
// Beyond the invariants, it holds the services to three promises: every
// POST was answered within the request bound (REQUEST_TIMEOUT) and a
// margin; once the links are clean, no connection is left over, on the
// database or through the proxies; and an order placed after the last
// toxic is confirmed.
func TestChaosNetwork(t *testing.T) {
	sc := newScenario(t, 1000, 2500)
	l := newLinks(t)
	sc.opts.Dial = l.dial
	pk, stopSampling := l.sample(t)

	var lifted time.Time // when the last toxic was removed
	sc.fault = func(t *testing.T, f *faultRun) {
		hold := f.window / 8
		for i, tx := range networkToxics(hold) {
			f.at(0.05 + 0.15*float64(i))
			t.Logf("toxic %d at %s: %s for %v", i+1, f.since(), tx.name, hold)
			add(t, l.pg, tx.pg)
			add(t, l.amqp, tx.amqp)
			time.Sleep(hold) // the fault itself
			remove(l.pg)
			remove(l.amqp)
		}
		lifted = time.Now()
		id, took := probeAfterFaults(t, f, time.Minute)
		t.Logf("probe order %s placed after the last toxic was lifted, confirmed %.1fs later", id, took.Seconds())
	}
	sc.after = func(t *testing.T, c *cluster, res *loadgen.Result) {
		stopSampling()
		checkAnsweredInTime(t, res, httpx.DefaultRequestTimeout)
		checkNoLeftovers(t, c, l, pk)
		t.Logf("recovered: the probe was confirmed; %.1fs from the last toxic to the end of the checks", time.Since(lifted).Seconds())
	}
	sc.run(t)
}

// probeAfterFaults places an order (retrying its POST with the same key
// while the answer is a 503) and waits until it is confirmed, within
// bound. It returns the order's id and how long from the first POST to its
// confirmation, and adds the order to the run's placed orders.
func probeAfterFaults(t *testing.T, f *faultRun, bound time.Duration) (string, time.Duration) {
	t.Helper()
	s := f.c.s
	_, token := s.NewCustomer(t)
	key := stack.NewUUID()
	req := stack.OrderRequest{Items: []stack.Item{{SKU: "CHAOS-05", Quantity: 1}}, PaymentMethod: "pm_card_ok"}
	start := time.Now()
	var o stack.Order
	poll.UntilNil(t, bound, "the probe order to be taken", func() error {
		r := s.PostOrder(t, token, key, req)
		if r.Status != http.StatusCreated {
			return fmt.Errorf("POST /v1/orders = %s", r)
		}
		r.Decode(t, &o)
		return nil
	})
	f.mu.Lock()
	f.placed = append(f.placed, o.ID)
	f.mu.Unlock()
	s.WaitStatus(t, token, o.ID, "confirmed", "", bound)
	return o.ID, time.Since(start)
}

// checkAnsweredInTime fails t when a POST got no answer, or took longer
// than the services' request bound and a margin (the generator's own
// queueing, a busy machine); it logs the slowest.
func checkAnsweredInTime(t *testing.T, res *loadgen.Result, bound time.Duration) {
	t.Helper()
	const margin = 5 * time.Second
	var slowest time.Duration
	byStatus := map[int]int{}
	for _, o := range res.Orders {
		if o.Sent.IsZero() {
			continue
		}
		byStatus[o.HTTPStatus]++
		if o.HTTPStatus == 0 {
			t.Errorf("POST of order %d got no answer (%s: %s)", o.Index, o.Kind, o.Err)
			continue
		}
		slowest = max(slowest, o.POST)
		if o.POST > bound+margin {
			t.Errorf("POST of order %d answered %d after %v, beyond the request bound %v and %v", o.Index, o.HTTPStatus, o.POST.Round(time.Millisecond), bound, margin)
		}
	}
	t.Logf("posts: answers by status %v; slowest %v (request bound %v)", byStatus, slowest.Round(time.Millisecond), bound)
}

// checkNoLeftovers waits until, with the links clean, each service
// database has no more server connections than its replicas' pools and
// sessions may hold, none of them idle in a transaction, and the proxies
// carry exactly those connections: one broker connection per process, and
// as many database connections as the services hold.
func checkNoLeftovers(t *testing.T, c *cluster, l *links, pk *peaks) {
	t.Helper()
	// A process holds its pool, the relay's two sessions (LISTEN and
	// settling) and, in notification, the status listener.
	const perProcess = poolMax + 3
	processes := 0
	for _, name := range stack.Names() {
		processes += len(c.replicas[name])
	}
	var lines []string
	poll.UntilNil(t, time.Minute, "the links' connections to drop back", func() error {
		lines = lines[:0]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		total := 0
		for _, name := range stack.Names() {
			svc := c.s.Service(name)
			var n, stuck int
			const q = `SELECT count(*), count(*) FILTER (WHERE state = 'idle in transaction' AND state_change < now() - interval '10 seconds')
				FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'`
			if err := svc.DB.QueryRow(ctx, q).Scan(&n, &stuck); err != nil {
				return err
			}
			// The test's own pool (svc.DB) is on the same database.
			n -= int(svc.DB.Stat().TotalConns())
			limit := len(c.replicas[name]) * perProcess
			lines = append(lines, fmt.Sprintf("%s %d (limit %d)", name, n, limit))
			if n > limit {
				return fmt.Errorf("%s: %d server connections, more than %d replicas × %d", name, n, len(c.replicas[name]), perProcess)
			}
			if stuck > 0 {
				return fmt.Errorf("%s: %d connections idle in a transaction for over 10s", name, stuck)
			}
			total += n
		}
		if got := conns(t, l.amqp); got != processes {
			return fmt.Errorf("%d connections through the amqp link, want %d (one per process)", got, processes)
		}
		if got := conns(t, l.pg); got != total {
			return fmt.Errorf("%d connections through the postgres link, the services hold %d", got, total)
		}
		return nil
	})
	pk.mu.Lock()
	defer pk.mu.Unlock()
	t.Logf("connections after recovery: postgres %s; through the links: postgres %d (peak %d), amqp %d (peak %d)",
		strings.Join(lines, ", "), conns(t, l.pg), pk.pg, conns(t, l.amqp), pk.amqp)
}
