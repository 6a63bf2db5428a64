package loadgen

import (
	"math"
	"time"
)

// At returns when order i of a run that starts at start and offers rate
// orders per second is due: start + i/rate. The schedule never depends on
// how earlier orders fared; that is what makes the generator open-loop.
func At(start time.Time, i int, rate float64) time.Time {
	return start.Add(time.Duration(float64(i) * float64(time.Second) / rate))
}

// Count returns how many orders a run offering rate orders per second for
// d sends: rate × d, rounded to the nearest order.
func Count(rate float64, d time.Duration) int {
	return int(math.Round(rate * d.Seconds()))
}

// Phase is one stretch of a run: Rate orders per second offered for
// Duration.
type Phase struct {
	Rate     float64       `json:"rate"`
	Duration time.Duration `json:"duration_ns"`
}

// Slot is when one order of a run is due, from the run's start, and which
// phase it belongs to.
type Slot struct {
	Due   time.Duration
	Phase int
}

// Schedule returns the slots of a run made of phases, and the run's whole
// window. Phase p sends Count(rate, duration) orders, its order j due
// j/rate after the phase's start (as At schedules them); its window is
// that count over its rate, and the next phase starts when it ends. The
// schedule never depends on how earlier orders fared.
func Schedule(phases ...Phase) ([]Slot, time.Duration) {
	total := 0
	for _, p := range phases {
		total += Count(p.Rate, p.Duration)
	}
	slots := make([]Slot, 0, total)
	var start time.Duration
	for i, p := range phases {
		n := Count(p.Rate, p.Duration)
		for j := range n {
			slots = append(slots, Slot{Due: start + time.Duration(float64(j)*float64(time.Second)/p.Rate), Phase: i})
		}
		start += time.Duration(float64(n) / p.Rate * float64(time.Second))
	}
	return slots, start
}

// MaxLines is the most lines an order has.
const MaxLines = 3

// Line is one line of a composed order: an index into the generator's SKUs
// and a quantity.
type Line struct {
	SKU      int
	Quantity int
}

// Pick is what one order is made of: whose it is (an index into the
// generator's customers) and its lines.
type Pick struct {
	Customer int
	Lines    []Line
	// Declined pays with a card the gateway declines (Config.DeclineEvery).
	Declined bool
}

// Compose returns order i's composition, a pure function of seed and i:
// one of customers customers, 1–3 distinct SKUs out of skus (fewer when
// there are fewer SKUs), 1–3 units each. customers and skus must be
// positive.
func Compose(seed uint64, i, customers, skus int) Pick {
	r := splitmix(seed ^ mix64(uint64(i)+1)) //nolint:gosec // i is a non-negative order number
	p := Pick{Customer: r.intn(customers)}
	n := 1 + r.intn(min(MaxLines, skus))
	p.Lines = make([]Line, 0, n)
	for len(p.Lines) < n {
		sku := r.intn(skus)
		if hasSKU(p.Lines, sku) {
			continue // at most 3 draws among ≥ 3 SKUs: this ends quickly
		}
		p.Lines = append(p.Lines, Line{SKU: sku, Quantity: 1 + r.intn(3)})
	}
	return p
}

func hasSKU(lines []Line, sku int) bool {
	for _, l := range lines {
		if l.SKU == sku {
			return true
		}
	}
	return false
}

// splitmix is SplitMix64: a tiny, allocation-free pseudo-random sequence,
// enough to vary orders reproducibly (math/rand/v2 would allocate a source
// per order).
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	return mix64(uint64(*s))
}

// intn returns a number in [0, n); n must be positive. The modulo bias is
// irrelevant for n this small.
func (s *splitmix) intn(n int) int {
	return int(s.next() % uint64(n)) //nolint:gosec // n is positive, the result below it
}

// mix64 is SplitMix64's finalizer, a bijective scramble of x.
func mix64(x uint64) uint64 {
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
