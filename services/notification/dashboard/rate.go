package dashboard

import (
	"sync"
	"time"
)

// rate counts the orders placed per step over a window, in a ring of
// step-long buckets aligned to the clock. The orders placed before start
// are added once from the database (addN with backfilled, by Run), those
// placed since as this replica hears of them (add), so that none is counted
// twice. A change that arrives after its bucket left the window, or that
// claims to be from the future, is not counted.
type rate struct {
	step  int64 // seconds
	start time.Time

	mu     sync.Mutex
	bucket []int64 // the bucket number (Unix second / step) each slot holds
	count  []int64
}

func newRate(window, step time.Duration, start time.Time) *rate {
	st := max(int64(step/time.Second), 1)
	n := max(int64(window/time.Second)/st, 1)
	return &rate{step: st, start: start, bucket: make([]int64, n), count: make([]int64, n)}
}

// span is what the database is asked for: the window before start.
func (r *rate) span() (from, to time.Time) {
	return r.start.Add(-time.Duration(int64(len(r.bucket))*r.step) * time.Second), r.start
}

// add counts one order placed at at, heard of at now; orders placed
// before start were read back from the database already.
func (r *rate) add(at, now time.Time) {
	if at.Before(r.start) {
		return
	}
	r.addN(at, 1, now)
}

func (r *rate) addN(at time.Time, n int64, now time.Time) {
	b, cur := at.Unix()/r.step, now.Unix()/r.step
	size := int64(len(r.bucket))
	if b <= cur-size || b > cur+1 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	i := b % size
	if r.bucket[i] != b {
		r.bucket[i], r.count[i] = b, 0
	}
	r.count[i] += n
}

// read returns the chart at now: one point per bucket of the window, the
// oldest first, each the mean per second over its step; the last, still
// filling, is the mean over its seconds so far.
func (r *rate) read(now time.Time) Rate {
	r.mu.Lock()
	defer r.mu.Unlock()
	size := int64(len(r.bucket))
	cur := now.Unix() / r.step
	out := Rate{Start: time.Unix((cur-size+1)*r.step, 0).UTC(), StepSeconds: int(r.step), Points: make([]float64, size)}
	for k := range size {
		b := cur - size + 1 + k
		i := b % size
		if r.bucket[i] != b {
			continue
		}
		secs := r.step
		if b == cur {
			secs = max(now.Unix()-b*r.step+1, 1)
		}
		out.Points[k] = float64(r.count[i]) / float64(secs)
	}
	return out
}
