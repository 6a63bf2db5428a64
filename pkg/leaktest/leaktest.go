// Package leaktest fails a test binary that leaves goroutines running after
// its tests: a consumer, pool, server or timer that a test started and never
// stopped goes on in a real service too, so it is a bug either way.
//
// Every test package declares
//
//	func TestMain(m *testing.M) { leaktest.Main(m) }
//
// (tests/stack.Main calls it for the packages that run the binaries).
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Main runs the package's tests and then, when they passed, fails the binary
// if any goroutine is left. It does not return. No goroutine is ignored:
// none of the libraries the project uses (pgx, amqp091, OpenTelemetry with
// the exporters the tests configure) keeps a process-wide one, so anything
// found is a leak. Options such as goleak.Cleanup go to goleak as they are.
func Main(m *testing.M, opts ...goleak.Option) {
	goleak.VerifyTestMain(m, opts...)
}
