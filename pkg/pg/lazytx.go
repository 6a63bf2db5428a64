package pg

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// lazyTx is the transaction Transact hands its closure. It sends BEGIN
// with the closure's first statement (pgx.Batch.BeginTx), not in a round
// trip of its own: every transaction of the services then costs one round
// trip to the database less, which on a busy machine is a good share of
// what a message or a request costs. Until its first statement it holds no
// connection; a closure that runs none commits nothing.
type lazyTx struct {
	db   TxBeginner
	opts pgx.TxOptions
	tx   pgx.Tx // the real transaction, once begun
	// committed run once the transaction committed (AfterCommit).
	committed []func()
}

// errBeginFailed stands for a begin that failed without an error of its
// own to report.
var errBeginFailed = errors.New("pg: begin failed")

// begin sends b, which must start with the queued BEGIN, and takes the
// transaction it began. It returns the batch's results positioned after
// the BEGIN's, or the error of the BEGIN.
func (t *lazyTx) begin(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	br := t.db.SendBatch(ctx, b)
	tx := br.Tx()
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		if tx != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
		return nil, err
	}
	if tx == nil {
		_ = br.Close()
		return nil, errBeginFailed
	}
	t.tx = tx
	return br, nil
}

// batchWithBegin returns a batch that begins the transaction and then runs
// b's queries, callbacks included.
func (t *lazyTx) batchWithBegin(b *pgx.Batch) *pgx.Batch {
	nb := &pgx.Batch{}
	nb.BeginTx(t.opts)
	if b != nil {
		nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	}
	return nb
}

func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.tx != nil {
		return t.tx.Exec(ctx, sql, args...)
	}
	b := t.batchWithBegin(nil)
	b.Queue(sql, args...)
	br, err := t.begin(ctx, b)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.tx != nil {
		return t.tx.Query(ctx, sql, args...)
	}
	b := t.batchWithBegin(nil)
	b.Queue(sql, args...)
	br, err := t.begin(ctx, b)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if t.tx != nil {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &lazyRow{rows: rows, err: err}
}

func (t *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.tx != nil {
		return t.tx.SendBatch(ctx, b)
	}
	br, err := t.begin(ctx, t.batchWithBegin(b))
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return br
}

// ensure begins the transaction on its own, for the methods that cannot
// carry the BEGIN along.
func (t *lazyTx) ensure(ctx context.Context) error {
	if t.tx != nil {
		return nil
	}
	br, err := t.begin(ctx, t.batchWithBegin(nil))
	if err != nil {
		return err
	}
	return br.Close()
}

func (t *lazyTx) Begin(ctx context.Context) (pgx.Tx, error) {
	if err := t.ensure(ctx); err != nil {
		return nil, err
	}
	return t.tx.Begin(ctx)
}

func (t *lazyTx) Commit(ctx context.Context) error {
	if t.tx != nil {
		if err := t.tx.Commit(ctx); err != nil {
			return err
		}
	}
	for _, f := range t.committed {
		f()
	}
	return nil
}

// AfterCommit has fn run once tx, a transaction Transact handed its
// closure, has committed, and never when it rolls back or its closure is
// run again: for effects outside the database that must happen once per
// change that took effect, such as counting it in a metric. On any other
// transaction (a savepoint's, one not begun by Transact) fn runs at once.
func AfterCommit(tx pgx.Tx, fn func()) {
	if t, ok := tx.(*lazyTx); ok {
		t.committed = append(t.committed, fn)
		return
	}
	fn()
}

func (t *lazyTx) Rollback(ctx context.Context) error {
	if t.tx == nil {
		return nil
	}
	return t.tx.Rollback(ctx)
}

func (t *lazyTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := t.ensure(ctx); err != nil {
		return 0, err
	}
	return t.tx.CopyFrom(ctx, table, columns, src)
}

func (t *lazyTx) LargeObjects() pgx.LargeObjects {
	if err := t.ensure(context.Background()); err != nil {
		return pgx.LargeObjects{}
	}
	return t.tx.LargeObjects()
}

func (t *lazyTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	if err := t.ensure(ctx); err != nil {
		return nil, err
	}
	return t.tx.Prepare(ctx, name, sql)
}

func (t *lazyTx) Conn() *pgx.Conn {
	if err := t.ensure(context.Background()); err != nil {
		return nil
	}
	return t.tx.Conn()
}

// batchRows are the rows of the first query of a transaction; closing them
// closes the batch that carried its BEGIN, which frees the connection for
// the next statement.
type batchRows struct {
	pgx.Rows
	br pgx.BatchResults
}

func (r *batchRows) Close() {
	r.Rows.Close()
	_ = r.br.Close()
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

// lazyRow is QueryRow's result on rows of the first query.
type lazyRow struct {
	rows pgx.Rows
	err  error
}

func (r *lazyRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
