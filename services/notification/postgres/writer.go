package postgres

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/notification/status"
)

// MaxBatch bounds the changes a Writer commits in one transaction. A
// caller's changes are never split, so one caller with more goes alone.
const MaxBatch = 500

// writeTimeout bounds one batch's transaction. A batch carries the changes
// of many callers, so it does not end with any one caller's context.
const writeTimeout = 10 * time.Second

// Writer commits changes for many concurrent callers in shared
// transactions (group commit): while one batch is being written, the
// changes that arrive wait, and the next transaction takes them all. At low
// load a change is written at once, alone; under load a transaction carries
// tens of changes, and a replica spends one commit (and one WAL flush) on
// them instead of one each — which is what let one replica keep up with
// 1,000 changes/s on two cores (docs/benchmarks.md).
//
// There is no goroutine of its own: the first caller to find no batch in
// progress writes one, and hands the turn to a waiting caller when it is
// done, so a Writer needs no start or stop.
type Writer struct {
	store *Store
	pool  *pgxpool.Pool

	mu      sync.Mutex
	queue   []*request
	writing bool

	commits, changes atomic.Int64
}

// Stats counts the transactions a Writer committed and the changes they
// carried; changes / commits is the mean batch.
type Stats struct{ Commits, Changes int64 }

// Stats returns the counts so far.
func (w *Writer) Stats() Stats { return Stats{Commits: w.commits.Load(), Changes: w.changes.Load()} }

type request struct {
	changes []status.Change
	errs    []error   // one per change, set before done is sent false
	done    chan bool // buffered: true hands the caller the turn, false says errs is set
}

// NewWriter returns a Writer saving through store.
func NewWriter(store *Store) *Writer { return &Writer{store: store, pool: store.pool} }

// Save records cs (see Store.Save) and returns once they are
// committed, alone or with other callers' changes. It returns one error
// per change of cs, nil for each change committed: when the database
// refuses the shared transaction while it is reachable, each change is
// tried alone, so one change it refuses fails only itself.
func (w *Writer) Save(ctx context.Context, cs ...status.Change) []error {
	if len(cs) == 0 {
		return nil
	}
	r := &request{changes: cs, done: make(chan bool, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, r)
	lead := !w.writing
	w.writing = true
	w.mu.Unlock()
	// Waiting is not cut short by ctx: a caller given the turn must take
	// it, and the write has its own timeout.
	if !lead && !<-r.done {
		return r.errs
	}
	w.writeBatch(ctx, r)
	return r.errs
}

// errWriterPanicked is what the callers of a batch get when writing it
// panicked (the panic itself goes on in the caller that wrote it).
var errWriterPanicked = errors.New("postgres: writing the batch panicked")

// writeBatch writes what is queued (r among it), tells each caller how its
// changes fared, and passes the turn on — even if writing panics, or every
// later caller would wait for a turn that never comes.
func (w *Writer) writeBatch(ctx context.Context, r *request) {
	w.mu.Lock()
	// r is at the head of the queue: the queue is empty when a caller
	// leads, and the turn goes to the head.
	n, size := 0, 0
	for n < len(w.queue) && (n == 0 || size+len(w.queue[n].changes) <= MaxBatch) {
		size += len(w.queue[n].changes)
		n++
	}
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	w.mu.Unlock()

	var errs [][]error
	defer func() {
		for i, b := range batch {
			if errs != nil {
				b.errs = errs[i]
			} else {
				b.errs = make([]error, len(b.changes))
				for k := range b.errs {
					b.errs[k] = errWriterPanicked
				}
			}
			if b != r {
				b.done <- false
			}
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			w.queue[0].done <- true
		} else {
			w.writing = false
			w.queue = nil // let the backing array go
		}
		w.mu.Unlock()
	}()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	errs = w.write(wctx, batch)
}

// write commits batch in one transaction and returns each change's error,
// by request. When the shared transaction fails for a reason other than
// the database being unreachable, each change is tried alone, so that one
// change the database refuses does not fail the others.
func (w *Writer) write(ctx context.Context, batch []*request) [][]error {
	var cs []status.Change
	for _, b := range batch {
		cs = append(cs, b.changes...)
	}
	errs := make([]error, len(cs))
	err := w.apply(ctx, cs...)
	if err == nil || len(cs) == 1 || ctx.Err() != nil || w.pool.Ping(ctx) != nil {
		for i := range errs {
			errs[i] = err
		}
	} else {
		for i := range cs {
			errs[i] = w.apply(ctx, cs[i])
		}
	}
	out := make([][]error, len(batch))
	for i, b := range batch {
		out[i], errs = errs[:len(b.changes):len(b.changes)], errs[len(b.changes):]
	}
	return out
}

func (w *Writer) apply(ctx context.Context, cs ...status.Change) error {
	err := pg.Transact(ctx, w.pool, func(tx pgx.Tx) error {
		_, err := w.store.Save(ctx, tx, cs...)
		return err
	})
	if err == nil {
		w.commits.Add(1)
		w.changes.Add(int64(len(cs)))
	}
	return err
}
