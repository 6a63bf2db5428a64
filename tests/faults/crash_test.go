package faults

import (
	"slices"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/stack"
)

// TestChaosNoFaults is the baseline: the same load and checks as the
// other scenarios without a fault, so that a violation there is the
// faults' doing, and the checker is known to pass on a healthy system.
func TestChaosNoFaults(t *testing.T) {
	newScenario(t, 200, 1000).run(t)
}

// TestChaosCrash kills a random replica of a random service with SIGKILL
// at random moments of the load, and starts it again 1–3 s later: 4 kills
// in the small run, 10 in the full one (ORDERLY_CHAOS_KILLS overrides).
func TestChaosCrash(t *testing.T) {
	sc := newScenario(t, 800, 2000)
	kills := 4
	if sc.full {
		kills = 10
	}
	kills = envInt(t, "ORDERLY_CHAOS_KILLS", kills)
	sc.fault = func(t *testing.T, f *faultRun) {
		// Kill moments, spread over the load's window; a kill whose moment
		// comes while the previous victim is still down waits for it, so
		// the other replica of a service is always up.
		var moments []float64
		for range kills {
			moments = append(moments, 0.05+0.8*f.rng.Float64())
		}
		slices.Sort(moments)
		// Victims come in shuffled rounds of every service, so that each
		// is killed once before any is killed twice: a run of four kills
		// or more crashes every service, order included (whose crash is
		// what makes POSTs fail and be retried).
		var victims []string
		for len(victims) < len(moments) {
			round := slices.Clone(stack.Names())
			f.rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
			victims = append(victims, round...)
		}
		for i, at := range moments {
			f.at(at)
			name, k := victims[i], f.rng.IntN(2)
			down := time.Second + time.Duration(f.rng.Int64N(int64(2*time.Second)))
			t.Logf("kill %d at %s: %s replica %d, down %v", i+1, f.since(), name, k+1, down.Round(time.Millisecond))
			f.c.kill(t, name, k, down)
		}
	}
	sc.run(t)
}
