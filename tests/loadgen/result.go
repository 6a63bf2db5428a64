package loadgen

import (
	"math"
	"slices"
	"strconv"
	"time"
)

// Outcome is how one order ended, as the generator saw it.
type Outcome uint8

// Outcomes. Only Confirmed is a success; Cancelled is the saga's own
// verdict (its reason is in Order.Reason), the others are failures of the
// system or of the run.
const (
	// Aborted: the run's context ended before the order did.
	Aborted Outcome = iota
	// Confirmed: the WebSocket delivered status confirmed.
	Confirmed
	// Cancelled: the WebSocket delivered status cancelled.
	Cancelled
	// HTTPError: POST /v1/orders answered with a status other than 201.
	HTTPError
	// TransportError: POST /v1/orders failed without an answer.
	TransportError
	// WSRefused: the WebSocket handshake was answered with an HTTP status
	// other than 101.
	WSRefused
	// WSClosed: the WebSocket failed or was closed before a terminal status.
	WSClosed
	// TimedOut: the per-order deadline passed first.
	TimedOut
)

func (o Outcome) String() string {
	switch o {
	case Aborted:
		return "aborted"
	case Confirmed:
		return "confirmed"
	case Cancelled:
		return "cancelled"
	case HTTPError:
		return "http error"
	case TransportError:
		return "transport error"
	case WSRefused:
		return "ws refused"
	case WSClosed:
		return "ws closed"
	case TimedOut:
		return "timed out"
	}
	return "outcome " + strconv.Itoa(int(o))
}

// MarshalText makes an outcome read as its name in JSON reports.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// Order is what happened to one order of a run.
type Order struct {
	// Index is the order's number in its run; it was due at Result.Start
	// plus its slot's Due (see Schedule): At(Result.Start, Index,
	// Result.Rate) for a run of one phase.
	Index int `json:"index"`
	// Phase is the index of the order's phase in Result.Phases.
	Phase int `json:"phase,omitempty"`
	// ID is the order's id, once the order service returned one.
	ID string `json:"id,omitempty"`
	// Sent is when the POST was sent.
	Sent time.Time `json:"sent"`
	// HTTPStatus is the POST's status code, 0 when no answer came.
	HTTPStatus int `json:"http_status,omitempty"`
	// RetryAfter is the Retry-After header of an answer other than 201, as
	// sent ("" when there was none), and Problem the type of its
	// application/problem+json body ("" for another body).
	RetryAfter string `json:"retry_after,omitempty"`
	Problem    string `json:"problem,omitempty"`
	// POST is from sending the POST to having read its whole response.
	POST time.Duration `json:"post_ns,omitempty"`
	// ToConfirmed is from sending the POST to reading the confirmed
	// message from the WebSocket; 0 unless the outcome is Confirmed.
	ToConfirmed time.Duration `json:"to_confirmed_ns,omitempty"`
	// Outcome is how the order ended.
	Outcome Outcome `json:"outcome"`
	// Kind is the key of the order in Result.Errors: "" for a confirmed
	// order, else what went wrong (see Result.Errors).
	Kind string `json:"kind,omitempty"`
	// Reason is the cancellation reason of a cancelled order.
	Reason string `json:"reason,omitempty"`
	// Err is the error behind a transport, WebSocket or timeout failure.
	Err string `json:"err,omitempty"`
	// Messages is how many status messages the WebSocket delivered, and
	// SeqBreaks how many of them did not carry the previous one's seq + 1
	// (a missed or repeated status; the first message may carry any seq,
	// it is the current state).
	Messages  int `json:"messages,omitempty"`
	SeqBreaks int `json:"seq_breaks,omitempty"`
	// Seqs are the seqs of those messages, in the order they were read,
	// over every WebSocket of the watch.
	Seqs []int64 `json:"-"`
	// Connections is how many WebSockets the watch opened (or tried to):
	// more than one when it resumed after losing one (Config.Resume).
	Connections int `json:"connections,omitempty"`
	// Drops is how each WebSocket that was open ended before the order's
	// terminal status: "ws closed <code>" for a close frame from the
	// server, "ws failed" for a connection broken without one. A watcher
	// that resumed has one entry per replica it lost.
	Drops []string `json:"drops,omitempty"`
	// Key is the POST's Idempotency-Key, "" when it was never sent.
	Key string `json:"-"`

	pick Pick // what the order is made of, for Retry
}

// Result is one run of the generator.
type Result struct {
	// Rate is the offered rate (orders per second; over several phases,
	// their average), Start when order 0 was due, and Window the offered
	// window (Sent / Rate).
	Rate   float64       `json:"rate"`
	Start  time.Time     `json:"start"`
	Window time.Duration `json:"window_ns"`
	// Phases are the run's phases, one for Run.
	Phases []Phase `json:"phases"`
	// Orders has every order of the run, by Index.
	Orders []Order `json:"-"`

	Sent      int `json:"sent"`
	Created   int `json:"created"` // POSTs answered 201
	Confirmed int `json:"confirmed"`
	Cancelled int `json:"cancelled"`
	// Errors counts the orders that were not confirmed, by kind:
	// "http <status>" (for 429 and 503 with " (Retry-After)" or " (no
	// Retry-After)" appended), "transport", "ws refused <status>", "ws
	// closed <code>", "ws failed", "timed out (POST)", "timed out
	// (WebSocket)", "cancelled: <reason>", "aborted".
	Errors map[string]int `json:"errors"`

	// POST are the POST latencies of the 201s and ToConfirmed the
	// placed→confirmed latencies of the confirmed orders, both sorted.
	POST        []time.Duration `json:"-"`
	ToConfirmed []time.Duration `json:"-"`

	// FirstSent is when the first POST was sent, LastConfirmed when the
	// last confirmation was read, Finished when the last order ended.
	FirstSent     time.Time `json:"first_sent"`
	LastConfirmed time.Time `json:"last_confirmed"`
	Finished      time.Time `json:"finished"`
}

// summarize fills the counts, latencies and times from Orders.
func (r *Result) summarize() {
	r.Sent = len(r.Orders)
	r.Errors = map[string]int{}
	r.POST = make([]time.Duration, 0, len(r.Orders))
	r.ToConfirmed = make([]time.Duration, 0, len(r.Orders))
	for i := range r.Orders {
		o := &r.Orders[i]
		if o.HTTPStatus == 201 {
			r.Created++
			r.POST = append(r.POST, o.POST)
		}
		if !o.Sent.IsZero() && (r.FirstSent.IsZero() || o.Sent.Before(r.FirstSent)) {
			r.FirstSent = o.Sent
		}
		switch o.Outcome {
		case Confirmed:
			r.Confirmed++
			r.ToConfirmed = append(r.ToConfirmed, o.ToConfirmed)
			if at := o.Sent.Add(o.ToConfirmed); at.After(r.LastConfirmed) {
				r.LastConfirmed = at
			}
		case Cancelled:
			r.Cancelled++
		}
		if o.Kind != "" {
			r.Errors[o.Kind]++
		}
	}
	slices.Sort(r.POST)
	slices.Sort(r.ToConfirmed)
}

// Achieved returns the confirmed orders per second, counted from the first
// POST to the last confirmation but over no less than the offered window
// (so a short run that confirms everything at once is not credited with
// more than it was offered). It returns 0 when nothing was confirmed.
func (r *Result) Achieved() float64 {
	if r.Confirmed == 0 {
		return 0
	}
	span := max(r.LastConfirmed.Sub(r.FirstSent), r.Window)
	if span <= 0 {
		return 0
	}
	return float64(r.Confirmed) / span.Seconds()
}

// ConfirmedShare returns the share of the orders sent that were confirmed
// within their deadline (0 when none were sent).
func (r *Result) ConfirmedShare() float64 {
	if r.Sent == 0 {
		return 0
	}
	return float64(r.Confirmed) / float64(r.Sent)
}

// Latency is a latency distribution's usual figures.
type Latency struct {
	P50 time.Duration `json:"p50_ns"`
	P90 time.Duration `json:"p90_ns"`
	P99 time.Duration `json:"p99_ns"`
	Max time.Duration `json:"max_ns"`
}

// Summarize returns the percentiles of sorted (ascending); zero for none.
func Summarize(sorted []time.Duration) Latency {
	return Latency{
		P50: Percentile(sorted, 0.50),
		P90: Percentile(sorted, 0.90),
		P99: Percentile(sorted, 0.99),
		Max: Percentile(sorted, 1),
	}
}

// Percentile returns the q-quantile (0 < q ≤ 1) of sorted (ascending) by
// the nearest-rank method: the smallest value with at least a share q of
// the values at or below it, so q = 1 is the maximum. It returns 0 for no
// values.
func Percentile(sorted []time.Duration, q float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The small epsilon keeps 0.99 × 100 from rounding up to rank 100.
	i := int(math.Ceil(q*float64(n)-1e-9)) - 1
	return sorted[max(0, min(i, n-1))]
}
