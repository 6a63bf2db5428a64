package faults

import (
	"maps"
	"slices"
	"testing"

	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

const (
	consumedMetric = "messaging_client_consumed_messages_total"
	queueLabel     = "messaging_destination_name"
	// minShare is the least share of a queue's messages each of two
	// replicas must take: competing consumers split a queue roughly
	// evenly, and one replica left idle would take less than this.
	minShare = 0.15
	// busyQueue is how many messages a queue must have carried for its
	// split to mean something (the catalog's few updates do not).
	busyQueue = 100
)

// TestChaosScale runs the load on two replicas of every service and holds
// them to three promises of horizontal scaling: each replica takes a real
// share of every queue it consumes; SIGKILL of one replica of each service
// (not restarted) loses nothing; a third replica of each, started under
// load, takes work without a restart of the others.
func TestChaosScale(t *testing.T) {
	sc := newScenario(t, 800, 2000)
	var third []*stack.Service
	var survivors map[*stack.Service]int
	sc.fault = func(t *testing.T, f *faultRun) {
		f.at(0.35)
		checkShares(t, f.c)
		for _, name := range stack.Names() {
			svc := f.c.replica(name, 1)
			t.Logf("kill %s replica 2 at %s, for good", name, f.since())
			svc.Kill(t)
			f.c.setServing(svc, false)
		}
		survivors = map[*stack.Service]int{}
		for _, name := range stack.Names() {
			svc := f.c.replica(name, 0)
			survivors[svc] = svc.PID()
		}
		f.at(0.5)
		for _, name := range stack.Names() {
			third = append(third, f.c.add(t, name))
			t.Logf("%s replica 3 ready at %s", name, f.since())
		}
	}
	sc.after = func(t *testing.T, c *cluster, _ *loadgen.Result) {
		now := map[*stack.Service]int{}
		for svc := range survivors {
			now[svc] = svc.PID()
		}
		samePIDs(t, survivors, now)
		for _, svc := range third {
			got := svc.Metrics(t).By(consumedMetric, queueLabel, "outcome", "ack")
			busy := 0.0
			for _, q := range slices.Sorted(maps.Keys(got)) {
				busy += got[q]
			}
			t.Logf("%s replica 3 acked %v", svc.Name, got)
			if busy == 0 {
				t.Errorf("%s replica 3 took no message from its queues %v", svc.Name, slices.Sorted(maps.Keys(got)))
			}
		}
		order := c.replica("order", 2)
		if n := order.Metrics(t).Sum("http_server_request_duration_seconds", "http_request_method", "POST", "http_response_status_code", "201"); n == 0 {
			t.Error("order replica 3 served no POST")
		}
	}
	sc.run(t)
}

// checkShares scrapes both replicas of every service and fails t when one
// took less than minShare of a busy queue's messages.
func checkShares(t *testing.T, c *cluster) {
	t.Helper()
	for _, name := range stack.Names() {
		a := c.replica(name, 0).Metrics(t).By(consumedMetric, queueLabel)
		b := c.replica(name, 1).Metrics(t).By(consumedMetric, queueLabel)
		for _, q := range slices.Sorted(maps.Keys(a)) {
			total := a[q] + b[q]
			if total < busyQueue {
				continue
			}
			share := min(a[q], b[q]) / total
			t.Logf("%s %s: replica 1 took %.0f, replica 2 %.0f of %.0f messages", name, q, a[q], b[q], total)
			if share < minShare {
				t.Errorf("%s queue %s: a replica took %.0f%% of %.0f messages, want at least %.0f%% each", name, q, 100*share, total, 100*minShare)
			}
		}
	}
}
