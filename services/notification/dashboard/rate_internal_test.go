package dashboard

import (
	"slices"
	"testing"
	"time"
)

func TestRate(t *testing.T) {
	t.Parallel()
	// A board started at 12:00:35 with a one-minute window in 10 s steps.
	start := time.Date(2026, 3, 1, 12, 0, 35, 0, time.UTC)
	at := func(sec int) time.Time { return start.Add(time.Duration(sec) * time.Second) }
	tests := []struct {
		name string
		run  func(r *rate)
		now  time.Time
		want []float64
	}{
		{name: "nothing", run: func(*rate) {}, now: at(0), want: []float64{0, 0, 0, 0, 0, 0}},
		{
			name: "read back from before the start, and heard since",
			run: func(r *rate) {
				r.addN(at(-20), 10, at(0)) // 12:00:15: bucket 12:00:10
				r.add(at(1), at(1))        // 12:00:36: bucket 12:00:30
				r.add(at(2), at(2))
			},
			now:  at(4), // 12:00:39: the last bucket is 10 s in
			want: []float64{0, 0, 0, 1, 0, 0.2},
		},
		{
			name: "the last bucket is the mean over its seconds so far",
			run:  func(r *rate) { r.add(at(6), at(6)); r.add(at(6), at(6)) }, // 12:00:41
			now:  at(6),                                                      // 2 s into the bucket
			want: []float64{0, 0, 0, 0, 0, 1},
		},
		{
			name: "heard of after the start but placed before it: read back already",
			run:  func(r *rate) { r.add(at(-1), at(1)) },
			now:  at(1),
			want: []float64{0, 0, 0, 0, 0, 0},
		},
		{
			name: "from the future, or already out of the window",
			run:  func(r *rate) { r.add(at(60), at(1)); r.addN(at(-120), 5, at(1)) },
			now:  at(1),
			want: []float64{0, 0, 0, 0, 0, 0},
		},
		{
			name: "a bucket that left the window is reused",
			run:  func(r *rate) { r.add(at(1), at(1)); r.add(at(61), at(61)) }, // 12:00:36, 12:01:36: one slot
			now:  at(61),                                                       // 7 s into the bucket
			want: []float64{0, 0, 0, 0, 0, 1.0 / 7},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRate(time.Minute, 10*time.Second, start)
			tc.run(r)
			got := r.read(tc.now)
			if !slices.Equal(got.Points, tc.want) {
				t.Errorf("points %v, want %v", got.Points, tc.want)
			}
			if got.StepSeconds != 10 || got.Start.Unix()%10 != 0 || !got.Start.Before(tc.now) {
				t.Errorf("chart starts %s in steps of %d", got.Start, got.StepSeconds)
			}
		})
	}
	from, to := newRate(time.Minute, 10*time.Second, start).span()
	if !from.Equal(start.Add(-time.Minute)) || !to.Equal(start) {
		t.Errorf("span %s–%s, want the minute before the start", from, to)
	}
}
