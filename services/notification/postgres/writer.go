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

// MaxBatch bounds the changes a Writer commits in one transaction.
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
// 1,000 changes/s from two queues on two cores (docs/benchmarks.md).
//
// There is no goroutine of its own: the first caller to find no batch in
// progress writes one, and hands the turn to a waiting caller when it is
// done, so a Writer needs no start or stop.
type Writer struct {
	pool *pgxpool.Pool

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
	change status.Change
	done   chan error // buffered: the writer never waits for the caller
}

// errYourTurn tells a waiting caller that it writes the next batch.
var errYourTurn = errors.New("postgres: write the next batch")

// NewWriter returns a Writer on pool.
func NewWriter(pool *pgxpool.Pool) *Writer { return &Writer{pool: pool} }

// Apply records c (see the package's Apply) and returns once it is
// committed, with c alone or with other callers' changes.
func (w *Writer) Apply(ctx context.Context, c status.Change) error {
	r := &request{change: c, done: make(chan error, 1)}
	w.mu.Lock()
	w.queue = append(w.queue, r)
	lead := !w.writing
	w.writing = true
	w.mu.Unlock()
	if !lead {
		// Waiting is not cut short by ctx: a caller given the turn must
		// take it, and the write has its own timeout.
		if err := <-r.done; !errors.Is(err, errYourTurn) {
			return err
		}
	}
	return w.writeBatch(ctx, r)
}

// errWriterPanicked is what the callers of a batch get when writing it
// panicked (the panic itself goes on in the caller that wrote it).
var errWriterPanicked = errors.New("postgres: writing the batch panicked")

// writeBatch writes what is queued (r among it), tells each caller how its
// change fared, and passes the turn on — even if writing panics, or every
// later caller would wait for a turn that never comes.
func (w *Writer) writeBatch(ctx context.Context, r *request) (err error) {
	w.mu.Lock()
	// r is at the head of the queue: the queue is empty when a caller
	// leads, and the turn goes to the head.
	n := min(len(w.queue), MaxBatch)
	batch := w.queue[:n:n]
	w.queue = w.queue[n:]
	w.mu.Unlock()

	var errs []error
	defer func() {
		for i, b := range batch {
			e := errWriterPanicked
			if errs != nil {
				e = errs[i]
			}
			if b == r {
				err = e
				continue
			}
			b.done <- e
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			w.queue[0].done <- errYourTurn
		} else {
			w.writing = false
			w.queue = nil // let the backing array go
		}
		w.mu.Unlock()
	}()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	errs = w.write(wctx, batch)
	return nil // set by the deferred function
}

// write commits batch in one transaction and returns each change's error.
// When the shared transaction fails for a reason other than the database
// being unreachable, each change is tried alone, so that one change the
// database refuses does not fail the others.
func (w *Writer) write(ctx context.Context, batch []*request) []error {
	errs := make([]error, len(batch))
	cs := make([]status.Change, len(batch))
	for i, b := range batch {
		cs[i] = b.change
	}
	err := w.apply(ctx, cs...)
	if err == nil || len(batch) == 1 || ctx.Err() != nil || w.pool.Ping(ctx) != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	for i := range batch {
		errs[i] = w.apply(ctx, cs[i])
	}
	return errs
}

func (w *Writer) apply(ctx context.Context, cs ...status.Change) error {
	err := pg.Transact(ctx, w.pool, func(tx pgx.Tx) error {
		_, err := Apply(ctx, tx, cs...)
		return err
	})
	if err == nil {
		w.commits.Add(1)
		w.changes.Add(int64(len(cs)))
	}
	return err
}
