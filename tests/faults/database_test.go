package faults

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/loadgen"
)

// postBound is the longest a POST may take while the database restarts:
// a request meets the outage, fails and is answered, it does not wait for
// the database to come back (which takes seconds after an immediate
// shutdown, crash recovery included).
const postBound = 10 * time.Second

// TestChaosDatabase restarts PostgreSQL in immediate mode (every backend
// killed, crash recovery at start) while the load runs. A POST in flight
// gets a problem+json 503 with Retry-After, not a hang; nothing a client
// was given is lost (the checker); every replica is ready and a fresh
// order confirmed within 30 s, without a process restart.
func TestChaosDatabase(t *testing.T) {
	sc := newScenario(t, 800, 2000)
	sc.fault = func(t *testing.T, f *faultRun) {
		before := f.c.pids()
		f.at(0.3)
		t.Logf("restart -m immediate at %s", f.since())
		restartPostgres(t, "immediate")
		t.Logf("PostgreSQL back at %s", f.since())
		f.recovered(t, time.Now(), 30*time.Second)
		samePIDs(t, before, f.c.pids())
	}
	sc.after = func(t *testing.T, _ *cluster, res *loadgen.Result) {
		var unavailable, slowest time.Duration
		byType := map[string]int{}
		for _, o := range res.Orders {
			slowest = max(slowest, o.POST)
			if o.POST > postBound {
				t.Errorf("order %d: POST took %v (answered %d), more than %v", o.Index, o.POST, o.HTTPStatus, postBound)
			}
			if o.HTTPStatus == 0 || o.HTTPStatus == 201 {
				continue
			}
			if o.HTTPStatus != 503 || o.Problem == "" || o.RetryAfter == "" {
				t.Errorf("order %d: POST answered %d (problem %q, Retry-After %q), want a problem+json 503 with Retry-After", o.Index, o.HTTPStatus, o.Problem, o.RetryAfter)
				continue
			}
			byType[o.Problem]++
			unavailable = max(unavailable, o.POST)
		}
		t.Logf("during the restart: POSTs answered 503 with Retry-After, by problem type: %v (slowest %v); slowest POST of the run %v", byType, unavailable, slowest)
	}
	sc.run(t)
}

// restartPostgres restarts the machine's PostgreSQL cluster with the given
// shutdown mode and returns once it accepts connections again.
func restartPostgres(t *testing.T, mode string) {
	t.Helper()
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil || len(versions) != 1 {
		t.Fatalf("cannot find the PostgreSQL cluster: %v", err)
	}
	out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", "-m", mode, versions[0].Name(), "main", "restart").CombinedOutput()
	if err != nil {
		t.Fatalf("restart PostgreSQL: %v\n%s", err, out)
	}
}
