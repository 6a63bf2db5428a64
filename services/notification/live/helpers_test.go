package live_test

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/orderly/orderly/services/notification/status"
)

// memStore is an in-memory live.Store for tests that are about the
// connections rather than the database.
type memStore struct {
	mu   sync.Mutex
	feed map[string][]status.Change
	down bool // every read fails, as while the database restarts
}

var errDown = errors.New("the database system is starting up")

func (s *memStore) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func newMemStore() *memStore { return &memStore{feed: map[string][]status.Change{}} }

func (s *memStore) add(c status.Change) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.feed[c.OrderID] = append(s.feed[c.OrderID], c)
	slices.SortFunc(s.feed[c.OrderID], func(a, b status.Change) int { return int(a.Seq - b.Seq) })
}

func (s *memStore) Current(_ context.Context, id string) (status.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return status.Change{}, errDown
	}
	f := s.feed[id]
	if len(f) == 0 {
		return status.Change{}, status.ErrUnknownOrder
	}
	return f[len(f)-1], nil
}

func (s *memStore) Since(_ context.Context, id string, since int64) ([]status.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return nil, errDown
	}
	var out []status.Change
	for _, c := range s.feed[id] {
		if c.Seq > since {
			out = append(out, c)
		}
	}
	return out, nil
}
