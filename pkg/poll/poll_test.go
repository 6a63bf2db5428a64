package poll_test

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/poll"
)

func TestUntilReturnsOnceCondHolds(t *testing.T) {
	var calls atomic.Int32
	poll.Until(t, 5*time.Second, "the third call", func() bool { return calls.Add(1) == 3 })
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

func TestUntilFailsAfterTheDeadline(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		poll.Until(ft, 50*time.Millisecond, "never", func() bool { return false })
	}()
	<-done
	if ft.msg == "" {
		t.Fatal("Until returned without failing")
	}
	t.Log(ft.msg)
}

// fatalRecorder records Fatalf and ends the goroutine, as testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}
