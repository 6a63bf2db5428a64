package invariants

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Sample is the lowest stock levels a Sampler saw over every SKU.
type Sample struct {
	Samples                             int
	MinStock, MinReserved, MinAvailable int64 // available = stock − reserved
	// Failed counts the reads that returned an error (the database was
	// down or out of reach: a scenario may do that on purpose), and Err
	// is the first of them; reads go on after it.
	Failed int
	Err    error
}

// Sampler reads the inventory's products every interval while a run goes
// on, so that a level that dips below zero and recovers is seen: the end
// state alone would hide it.
type Sampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	s      Sample
}

// StartSampler starts sampling db's products every interval until Stop.
func StartSampler(db *pgxpool.Pool, interval time.Duration) *Sampler {
	ctx, cancel := context.WithCancel(context.Background())
	sm := &Sampler{cancel: cancel, done: make(chan struct{})}
	sm.s.MinStock, sm.s.MinReserved, sm.s.MinAvailable = 1<<62, 1<<62, 1<<62
	go func() {
		defer close(sm.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			sm.sample(ctx, db)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return sm
}

func (sm *Sampler) sample(ctx context.Context, db *pgxpool.Pool) {
	var st, res, avail int64
	err := db.QueryRow(ctx, `SELECT coalesce(min(stock), 0), coalesce(min(reserved), 0), coalesce(min(stock - reserved), 0) FROM products`).Scan(&st, &res, &avail)
	sm.mu.Lock()
	defer sm.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			sm.s.Failed++
			if sm.s.Err == nil {
				sm.s.Err = err
			}
		}
		return
	}
	sm.s.Samples++
	sm.s.MinStock, sm.s.MinReserved, sm.s.MinAvailable = min(sm.s.MinStock, st), min(sm.s.MinReserved, res), min(sm.s.MinAvailable, avail)
}

// Stop ends the sampling and returns what it saw. It may be called more
// than once.
func (sm *Sampler) Stop() Sample {
	sm.cancel()
	<-sm.done
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.s
}
