package outbox

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
)

// maxInFlight bounds the batches sent but not yet settled; past it, sending
// waits for the oldest to be confirmed.
const maxInFlight = 4

// pipeline settles sent batches in order on its own goroutine: it waits for
// each batch's confirms and deletes the confirmed events.
type pipeline struct {
	r     *Relay
	queue chan *inflight
	done  chan struct{}

	mu      sync.Mutex
	settled *sync.Cond
	batches int
	err     error
}

func (r *Relay) startPipeline(ctx context.Context, conn *pgx.Conn) *pipeline {
	p := &pipeline{r: r, queue: make(chan *inflight, maxInFlight-1), done: make(chan struct{})}
	p.settled = sync.NewCond(&p.mu)
	go func() {
		defer close(p.done)
		for b := range p.queue {
			err := r.settle(ctx, conn, b)
			p.mu.Lock()
			p.batches--
			if err != nil && p.err == nil {
				p.err = err
			}
			p.settled.Broadcast()
			p.mu.Unlock()
		}
	}()
	return p
}

// push hands a sent batch to the settler, waiting while too many are in flight.
func (p *pipeline) push(b *inflight) {
	p.mu.Lock()
	p.batches++
	p.mu.Unlock()
	p.queue <- b
}

// failed reports whether a settled batch failed since the last flush.
func (p *pipeline) failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err != nil
}

// flush waits until every sent batch is settled and returns (and clears) the
// first failure among them.
func (p *pipeline) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.batches > 0 {
		p.settled.Wait()
	}
	err := p.err
	p.err = nil
	return err
}

// close settles what is in flight and stops the settler.
func (p *pipeline) close() {
	close(p.queue)
	<-p.done
}
