// Package poll waits, in tests, for something another goroutine, process
// or server brings about: a row written by a consumer, a service ready, a
// message dead-lettered.
package poll

import (
	"testing"
	"time"
)

// Interval is how often Until asks again.
const Interval = 20 * time.Millisecond

// Until calls cond every Interval until it reports true, and fails tb
// (naming what it waited for) if d passes first.
func Until(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(Interval) //nolint:forbidigo // this is the poll
	}
}
