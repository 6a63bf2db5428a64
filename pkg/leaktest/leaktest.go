// Package leaktest fails a test binary that leaves goroutines running after
// its tests: a consumer, pool, server or timer that a test started and never
// stopped goes on in a real service too, so it is a bug either way.
//
// A test package declares
//
//	func TestMain(m *testing.M) { leaktest.Main(m) }
//
// or, when its TestMain does more, passes Options to goleak itself.
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Main runs the package's tests and then, when they passed, fails the binary
// if any goroutine other than the process-wide ones in Options is left. It
// does not return.
func Main(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, append(Options(), opts...)...)
}

// Options are the goroutines that belong to the process rather than to any
// test, so a test cannot stop them and their being there is not a leak.
func Options() []goleak.Option {
	return nil
}
