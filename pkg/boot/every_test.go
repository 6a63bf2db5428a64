package boot

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncBuffer is a log sink the worker goroutine and the test share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Every runs at once, again after a failure, logs the failure and what a
// run did, and returns nil when the service drains.
func TestEveryRunsAtStartRetriesAndStops(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	s := &Service{Log: slog.New(slog.NewTextHandler(&logs, nil))}
	var runs atomic.Int64
	s.Every("test sweep", 10*time.Millisecond, func(context.Context) (int64, error) {
		switch runs.Add(1) {
		case 1:
			return 0, errors.New("database down")
		case 2:
			return 7, nil
		}
		return 0, nil
	})
	if len(s.workers) != 1 || s.workers[0].name != "test sweep" {
		t.Fatalf("workers = %+v, want one named test sweep", s.workers)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.workers[0].run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for runs.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run = %v, want nil after the service drained", err)
	}
	if runs.Load() < 3 {
		t.Fatalf("ran %d times in 10 s at a 10 ms interval", runs.Load())
	}
	out := logs.String()
	for _, want := range []string{"test sweep failed", "database down", "test sweep done", "count=7"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// A run of Every's is bounded: one that waits on a database that stopped
// answering ends, and the next tick runs afresh.
func TestEveryBoundsEachRun(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		interval, want time.Duration
	}{
		{10 * time.Millisecond, everyRunTimeout},
		{time.Hour, time.Hour},
	} {
		s := &Service{Log: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))}
		left := make(chan time.Duration, 1)
		s.Every("test sweep", tt.interval, func(ctx context.Context) (int64, error) {
			d, ok := ctx.Deadline()
			if !ok {
				d = time.Now().Add(-time.Hour)
			}
			select {
			case left <- time.Until(d):
			default:
			}
			return 0, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.workers[0].run(ctx) }()
		got := <-left
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run = %v after the service drained", err)
		}
		if got > tt.want || got < tt.want-5*time.Second {
			t.Errorf("interval %v: a run's deadline was %v away, want %v", tt.interval, got, tt.want)
		}
	}
}
