package loadgen

import (
	"net/http"
	"slices"
	"time"
)

// Bucket is one window of a run's timeline. Its counts and latencies are of
// the orders sent in the window, except Confirmed, which counts the
// confirmations read in it whenever their orders were sent: the two differ
// when the system lags.
type Bucket struct {
	// Start is the window's start from Result.Start, Width its length.
	Start time.Duration `json:"start_ns"`
	Width time.Duration `json:"width_ns"`
	// Sent is how many POSTs were sent in the window: Created of them were
	// answered 201, Refused 503, and Failed neither (another status, a
	// transport error, a POST timeout).
	Sent    int `json:"sent"`
	Created int `json:"created"`
	Refused int `json:"refused"`
	Failed  int `json:"failed"`
	// POST is the latency of the 201s among them.
	POST Latency `json:"post"`
	// Confirmed is how many confirmations were read in the window.
	Confirmed int `json:"confirmed"`
	// PlacedConfirmed is how many of the orders sent in the window were
	// confirmed, ToConfirmed their placed→confirmed latency, and
	// PlacedCancelled how many of them were cancelled.
	PlacedConfirmed int     `json:"placed_confirmed"`
	ToConfirmed     Latency `json:"to_confirmed"`
	PlacedCancelled int     `json:"placed_cancelled"`
}

// Timeline cuts the run into windows of width from Start, up to the window
// of its last POST or confirmation, whichever came later, and returns what
// happened in each. It returns nil for a width that is not positive or a
// run that sent nothing.
func (r *Result) Timeline(width time.Duration) []Bucket {
	if width <= 0 {
		return nil
	}
	index := func(at time.Time) int { return int(max(0, at.Sub(r.Start)) / width) }
	last := -1
	for i := range r.Orders {
		o := &r.Orders[i]
		if o.Sent.IsZero() {
			continue
		}
		last = max(last, index(o.Sent))
		if o.Outcome == Confirmed {
			last = max(last, index(o.Sent.Add(o.ToConfirmed)))
		}
	}
	if last < 0 {
		return nil
	}
	out := make([]Bucket, last+1)
	post := make([][]time.Duration, len(out))
	toConfirmed := make([][]time.Duration, len(out))
	for i := range out {
		out[i].Start, out[i].Width = time.Duration(i)*width, width
	}
	for i := range r.Orders {
		o := &r.Orders[i]
		if o.Sent.IsZero() {
			continue
		}
		k := index(o.Sent)
		b := &out[k]
		b.Sent++
		switch o.HTTPStatus {
		case http.StatusCreated:
			b.Created++
			post[k] = append(post[k], o.POST)
		case http.StatusServiceUnavailable:
			b.Refused++
		default:
			b.Failed++
		}
		switch o.Outcome {
		case Confirmed:
			b.PlacedConfirmed++
			toConfirmed[k] = append(toConfirmed[k], o.ToConfirmed)
			out[index(o.Sent.Add(o.ToConfirmed))].Confirmed++
		case Cancelled:
			b.PlacedCancelled++
		}
	}
	for i := range out {
		slices.Sort(post[i])
		slices.Sort(toConfirmed[i])
		out[i].POST = Summarize(post[i])
		out[i].ToConfirmed = Summarize(toConfirmed[i])
	}
	return out
}
