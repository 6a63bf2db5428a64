package e2ebench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

// probe is one reading of the running stack, taken by a prober.
type probe struct {
	At time.Time
	// RSS is each service's resident set size in bytes (VmRSS), and
	// Goroutines its go_goroutines; a service that could not be read is
	// missing.
	RSS        map[string]int64
	Goroutines map[string]float64
	// CPU is every process group's CPU time (probes with CPU only).
	CPU cpuSample
	// Sizes are the tracked tables' sizes in bytes (probes with sizes
	// only).
	Sizes map[string]int64
	// Errs are what could not be read.
	Errs []string
}

// prober reads the stack every interval in its own goroutine until
// stopped. It never fails the test: what it cannot read is left out of
// its probe and said in Errs.
type prober struct {
	b          *bench
	cpu, sizes bool
	stop       chan struct{}
	done       chan struct{}
	mu         sync.Mutex
	probes     []probe
}

// startProbes reads the stack at once and then every interval: each
// service's RSS and goroutines, plus the CPU of every process group (cpu)
// and the tracked tables' sizes (sizes). Scraping /metrics costs each
// service a little CPU, and a size query is a transaction on each
// database: keep the interval in seconds.
func (b *bench) startProbes(interval time.Duration, cpu, sizes bool) *prober {
	p := &prober{b: b, cpu: cpu, sizes: sizes, stop: make(chan struct{}), done: make(chan struct{})}
	pids, dbs := b.pids(), b.pg.databases()
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			pr := p.read(pids, dbs)
			p.mu.Lock()
			p.probes = append(p.probes, pr)
			p.mu.Unlock()
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

// Stop stops the prober, waits for a reading in progress, takes a last
// one (the state the run left), and returns every probe taken, oldest
// first.
func (p *prober) Stop() []probe {
	close(p.stop)
	<-p.done
	last := p.read(p.b.pids(), p.b.pg.databases())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.probes = append(p.probes, last)
	return p.probes
}

// read takes one probe. pids maps the services' process ids to their
// names; dbs are the stack's databases.
func (p *prober) read(pids map[int]string, dbs map[string]bool) probe {
	pr := probe{At: time.Now(), RSS: map[string]int64{}, Goroutines: map[string]float64{}}
	if p.cpu {
		c, err := readCPU(pids, dbs)
		if err != nil {
			pr.Errs = append(pr.Errs, err.Error())
		}
		pr.CPU = c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, svc := range p.b.svcs {
		if rss, err := readRSS(svc.PID()); err != nil {
			pr.Errs = append(pr.Errs, fmt.Sprintf("RSS of %s: %v", svc.Name, err))
		} else {
			pr.RSS[svc.Name] = rss
		}
		if m, err := scrapeService(ctx, p.b.client, svc.URL(), metricGoroutines); err != nil {
			pr.Errs = append(pr.Errs, fmt.Sprintf("goroutines of %s: %v", svc.Name, err))
		} else if s, ok := m[metricGoroutines]; ok {
			pr.Goroutines[svc.Name] = s.sum
		}
	}
	if p.sizes {
		sizes, err := tableSizes(ctx, p.b.svcs)
		if err != nil {
			pr.Errs = append(pr.Errs, err.Error())
		}
		pr.Sizes = sizes
	}
	return pr
}

// metricGoroutines is the Go collector's count of goroutines.
const metricGoroutines = "go_goroutines"

// probeErrors sums up the probes' errors, at most a few of them, or "".
func probeErrors(probes []probe) string {
	var errs []string
	n := 0
	for _, p := range probes {
		n += len(p.Errs)
		if len(errs) < 5 {
			errs = append(errs, p.Errs...)
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d probe errors, e.g. %s", n, strings.Join(errs[:min(5, len(errs))], "; "))
}

// nearest returns the probe taken closest to at, if it was taken within
// tolerance of it, or nil.
func nearest(probes []probe, at time.Time, tolerance time.Duration) *probe {
	var best *probe
	var dist time.Duration
	for i := range probes {
		d := probes[i].At.Sub(at)
		if d < 0 {
			d = -d
		}
		if d <= tolerance && (best == nil || d < dist) {
			best, dist = &probes[i], d
		}
	}
	return best
}

// peak returns, per service, the largest RSS and goroutine count of the
// probes taken in [from, to).
func peak(probes []probe, from, to time.Time) (rss map[string]int64, goroutines map[string]float64) {
	rss, goroutines = map[string]int64{}, map[string]float64{}
	for _, p := range probes {
		if p.At.Before(from) || !p.At.Before(to) {
			continue
		}
		for k, v := range p.RSS {
			rss[k] = max(rss[k], v)
		}
		for k, v := range p.Goroutines {
			goroutines[k] = max(goroutines[k], v)
		}
	}
	return rss, goroutines
}
