package faults

import (
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// TestChaosRollingRestart restarts every replica of every service, one at
// a time, as an orchestrator rolls out a release: out of the balancer's
// rotation, SIGTERM, a clean exit, a start, back in rotation. Clients see
// no error that a retry could not fix (the checker), and a shopper's
// WebSocket ends only with a 1012 close, after which the watcher resumes
// on the other replica and still reads every status once (the checker, with
// Drops).
func TestChaosRollingRestart(t *testing.T) {
	sc := newScenario(t, 1200, 3000)
	sc.drops = []string{"ws closed 1012"}
	var restarts int
	sc.fault = func(t *testing.T, f *faultRun) {
		f.at(0.1)
		for _, name := range stack.Names() {
			for k := range 2 {
				begin := time.Now()
				f.c.restart(t, name, k)
				restarts++
				t.Logf("%s replica %d restarted at %s in %v", name, k+1, f.since(), time.Since(begin).Round(time.Millisecond))
				time.Sleep(500 * time.Millisecond) // the orchestrator lets the new pod settle
			}
		}
	}
	sc.after = func(t *testing.T, _ *cluster, res *loadgen.Result) {
		if want := 2 * len(stack.Names()); restarts != want {
			t.Errorf("%d replicas restarted, want %d", restarts, want)
		}
		var dropped, failed int
		for _, o := range res.Orders {
			dropped += len(o.Drops)
			if o.HTTPStatus != 201 && o.Key != "" {
				failed++
			}
		}
		t.Logf("rolling restart: %d WebSockets closed with 1012 and resumed, %d POSTs to retry", dropped, failed)
	}
	sc.run(t)
}
