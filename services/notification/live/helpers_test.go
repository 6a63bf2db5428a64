package live_test

import (
	"context"
	"slices"
	"sync"

	"github.com/orderly/orderly/services/notification/status"
)

// memStore is an in-memory live.Store for tests that are about the
// connections rather than the database.
type memStore struct {
	mu   sync.Mutex
	feed map[string][]status.Change
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
	f := s.feed[id]
	if len(f) == 0 {
		return status.Change{}, status.ErrUnknownOrder
	}
	return f[len(f)-1], nil
}

func (s *memStore) Since(_ context.Context, id string, since int64) ([]status.Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []status.Change
	for _, c := range s.feed[id] {
		if c.Seq > since {
			out = append(out, c)
		}
	}
	return out, nil
}
