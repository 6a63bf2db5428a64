// Package poll waits, in tests, for something another goroutine, process
// or server brings about: a row written by a consumer, a service ready, a
// message dead-lettered. It is the one way the tests wait.
package poll

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// Interval is how often Until and UntilNil ask again.
const Interval = 20 * time.Millisecond

// Until calls cond every Interval until it reports true, and fails tb
// (naming what it waited for) if d passes first.
func Until(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	UntilNil(tb, d, what, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
}

var errNotYet = errors.New("not yet")

// UntilNil calls cond every Interval until it returns nil, and fails tb
// after d with what and cond's last error, which says why it is still
// waiting.
func UntilNil(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(Interval) // this is the poll
	}
}

// Ready waits up to d for the service at base ("http://host:port") to
// answer 200 on /readyz. alive, when not nil, is asked first on every try,
// so that a process that exited fails the wait at once, with its reason,
// instead of after d.
func Ready(tb testing.TB, d time.Duration, base string, alive func() error) {
	tb.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	UntilNil(tb, d, base+"/readyz to answer 200", func() error {
		if alive != nil {
			if err := alive(); err != nil {
				tb.Fatal(err)
			}
		}
		resp, err := c.Get(base + "/readyz") // bounded by the client's timeout
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}
