package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/orderly/orderly/pkg/rabbit"
)

// Publisher is what the relay needs from the broker (*rabbit.Publisher):
// send a batch now and, through the returned function, learn later per
// message whether the broker confirmed it (nil) or not.
type Publisher interface {
	Send(ctx context.Context, msgs []rabbit.Message) (wait func(context.Context) []error)
}

// ContentType is the content type of event payloads.
const ContentType = "application/x-protobuf"

// relayAppName marks the relays' lock connections in pg_stat_activity; the
// relays count each other through it to share partitions fairly.
const relayAppName = "orderly-outbox-relay"

// lockSpace is the first key of the two-key advisory locks on partitions.
const lockSpace = 0x0b0c

// Relay publishes committed outbox events. Run several replicas freely: each
// owns a fair share of the partitions through advisory locks, so an
// aggregate's events are published by one relay at a time, in id order.
type Relay struct {
	Pool      *pgxpool.Pool
	Publisher Publisher
	Log       *slog.Logger
	Meter     metric.Meter

	BatchSize    int           // events per publish round (default 1000)
	PollInterval time.Duration // fallback when a notification is missed (default 1s)
	Linger       time.Duration // wait after a wake-up so batches fill (default 1ms)

	owned     []int32
	published metric.Int64Counter
	failed    metric.Int64Counter
}

func (r *Relay) defaults() {
	if r.BatchSize <= 0 {
		r.BatchSize = 1000
	}
	if r.PollInterval <= 0 {
		r.PollInterval = time.Second
	}
	if r.Linger == 0 {
		r.Linger = time.Millisecond
	}
	if r.Log == nil {
		r.Log = slog.Default()
	}
	if r.Meter == nil {
		r.Meter = noop.NewMeterProvider().Meter("")
	}
}

// Run publishes until ctx ends. It wakes on the outbox's NOTIFY and polls
// every PollInterval in case a notification was lost (they are while the
// listening connection is down). When ctx ends it finishes the batch in
// flight and returns nil. It survives database and broker restarts.
func (r *Relay) Run(ctx context.Context) error {
	r.defaults()
	if err := r.instrument(); err != nil {
		return err
	}
	for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
		err := r.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.Log.Warn("outbox relay session ended; restarting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
	}
}

// session holds one dedicated connection for LISTEN and the partition locks;
// the locks die with it, so when it breaks another relay can take over.
func (r *Relay) session(ctx context.Context) error {
	cfg := r.Pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = relayAppName
	// Fetches run on this connection too. Without statistics (a new table,
	// or one that just grew a backlog) the planner picks a bitmap scan that
	// reads and sorts every pending row for each batch: quadratic in
	// the backlog. The ordered walk of the primary key stops after the batch.
	cfg.RuntimeParams["enable_bitmapscan"] = "off"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("outbox: connect: %w", err)
	}
	r.owned = nil
	defer func() {
		r.owned = nil
		_ = conn.Close(context.WithoutCancel(ctx))
	}()
	lctx, cancel := bounded(ctx)
	_, err = conn.Exec(lctx, "LISTEN outbox")
	cancel()
	if err != nil {
		return fmt.Errorf("outbox: listen: %w", err)
	}
	// Deleting sent events commits without waiting for the WAL flush: if
	// the database crashes before it is flushed, the events come back and
	// are published again, which consumers absorb (they are at-least-once
	// anyway). The events themselves were written with the state change,
	// durably; only the note that they were sent is relaxed.
	scfg := r.Pool.Config().ConnConfig.Copy()
	scfg.RuntimeParams["synchronous_commit"] = "off"
	settler, err := pgx.ConnectConfig(ctx, scfg)
	if err != nil {
		return fmt.Errorf("outbox: connect: %w", err)
	}
	defer func() { _ = settler.Close(context.WithoutCancel(ctx)) }()
	pipe := r.startPipeline(ctx, settler)
	defer pipe.close()
	nextBalance := time.Now()
	pubBackoff := 50 * time.Millisecond
	for {
		if time.Now().After(nextBalance) {
			if err := r.rebalance(ctx, conn, pipe); err != nil {
				return err
			}
			nextBalance = time.Now().Add(r.PollInterval)
		}
		var pubErr *publishError
		switch err := r.drain(ctx, conn, pipe); {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &pubErr):
			// The broker is down or refusing: keep the partitions and the
			// listening connection, and try again after a pause.
			r.Log.Warn("outbox publish failed; retrying", "err", err, "retry_in", pubBackoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pubBackoff):
			}
			pubBackoff = min(2*pubBackoff, 5*time.Second)
			continue
		case err != nil:
			return err
		default:
			pubBackoff = 50 * time.Millisecond
		}
		wctx, cancel := context.WithTimeout(ctx, r.PollInterval)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("outbox: wait: %w", err)
		}
		if err == nil && r.Linger > 0 {
			// Woken by a commit: let the commits right behind it land so
			// that one round of queries publishes them all.
			select {
			case <-ctx.Done():
			case <-time.After(r.Linger):
			}
		}
		if err == nil {
			skipReceived(conn)
		}
	}
}

// skipReceived drops the notifications conn has already received: they
// are of commits that happened before the fetch about to run, which sees
// their events. Without it, the commits that landed while the relay was
// busy would each wake it once more for a fetch that finds nothing new.
func skipReceived(conn *pgx.Conn) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		// With a context already done, only notifications read earlier
		// are returned; the connection itself is not touched.
		if _, err := conn.WaitForNotification(done); err != nil {
			return
		}
	}
}

// rebalance moves the set of partitions this relay owns toward its fair
// share, ceil(Partitions / live relays). A relay gives partitions up only
// here, between batches, so a partition changes hands with nothing in flight.
func (r *Relay) rebalance(ctx context.Context, conn *pgx.Conn, pipe *pipeline) error {
	ctx, cancel := bounded(ctx)
	defer cancel()
	var relays int
	const countQ = `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`
	if err := conn.QueryRow(ctx, countQ, relayAppName).Scan(&relays); err != nil {
		return fmt.Errorf("outbox: count relays: %w", err)
	}
	share := (Partitions + max(relays, 1) - 1) / max(relays, 1)
	if len(r.owned) > share {
		// Hand partitions over only with nothing of theirs in flight.
		if err := pipe.flush(); err != nil {
			return err
		}
	}
	for len(r.owned) > share {
		p := r.owned[len(r.owned)-1]
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1, $2)", lockSpace, p); err != nil {
			return fmt.Errorf("outbox: release partition: %w", err)
		}
		r.owned = r.owned[:len(r.owned)-1]
	}
	// Start at a random partition so that relays starting together do not
	// all race for the same ones.
	start := rand.N(int32(Partitions)) //nolint:gosec // spreads relays, not a secret
	for i := int32(0); i < Partitions && len(r.owned) < share; i++ {
		p := (start + i) % Partitions
		if slices.Contains(r.owned, p) {
			continue
		}
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", lockSpace, p).Scan(&ok); err != nil {
			return fmt.Errorf("outbox: claim partition: %w", err)
		}
		if ok {
			r.owned = append(r.owned, p)
		}
	}
	return nil
}

type row struct {
	id  int64
	msg rabbit.Message
}

// publishError is a batch the broker did not fully confirm.
type publishError struct{ err error }

func (e *publishError) Error() string { return e.err.Error() }
func (e *publishError) Unwrap() error { return e.err }

// batchTimeout bounds one batch's publish and confirm; a broker that takes
// longer is treated as down and the batch is retried.
const batchTimeout = 30 * time.Second

// queryTimeout bounds each of the relay's own statements. The server ends
// a statement after its statement_timeout (5s by default) when it hears
// it; a statement lost in a network black hole is ended by this instead,
// which closes the connection, so that the session restarts on a fresh one
// rather than waiting on the old one for good.
const queryTimeout = 10 * time.Second

// bounded is ctx bounded by queryTimeout.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, queryTimeout)
}

// inflight is a batch sent to the broker whose confirms are awaited.
type inflight struct {
	ids  []int64
	wait func(context.Context) []error
	span trace.Span // the batch's (startBatch), ended by settle
}

// drain sends batches until the owned partitions have nothing left that is
// not already in flight, or ctx ends. It first waits for what is in flight
// to settle: the relay was woken by a commit, and without the wait it would
// fetch again while the events it just sent await their confirm — most often
// nothing new, one query per commit for nothing. Within a drain it does not
// wait for confirms (the pipeline settles batches behind it), so under a
// backlog fetching the next full batch overlaps the broker confirming the
// previous ones. After a failed batch it waits for the pipeline to empty and
// returns the failure.
//
// Within a drain the next batch starts after the last id sent: what is in
// flight is not fetched again. An event that took a smaller id but committed
// only after a fetch is not lost: its commit wakes the relay, and the next
// drain, with nothing in flight, starts from the first pending event.
func (r *Relay) drain(ctx context.Context, conn *pgx.Conn, pipe *pipeline) error {
	if err := pipe.flush(); err != nil {
		return err
	}
	var after int64
	for len(r.owned) > 0 && ctx.Err() == nil {
		if pipe.failed() {
			return pipe.flush()
		}
		b, err := r.send(ctx, conn, after)
		if err != nil || b == nil {
			return err
		}
		pipe.push(b)
		if len(b.ids) < r.BatchSize {
			return nil
		}
		after = b.ids[len(b.ids)-1]
	}
	return nil
}

// send fetches the next batch, of events with an id above after, and sends
// it. It returns nil when nothing is pending.
func (r *Relay) send(ctx context.Context, conn *pgx.Conn, after int64) (*inflight, error) {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
	defer cancel()
	qctx, qcancel := bounded(fctx)
	rows, err := r.fetch(qctx, conn, after)
	qcancel()
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	b := &inflight{ids: make([]int64, len(rows))}
	msgs := make([]rabbit.Message, len(rows))
	for i, rw := range rows {
		b.ids[i], msgs[i] = rw.id, rw.msg
	}
	sctx, span := startBatch(fctx, msgs)
	b.span = span
	b.wait = r.Publisher.Send(sctx, msgs)
	return b, nil
}

// settle waits for a batch's confirms and deletes the confirmed events on
// conn: the table holds only what is still to be published.
func (r *Relay) settle(parent context.Context, conn *pgx.Conn, b *inflight) (err error) {
	if b == nil {
		return nil
	}
	defer func() { endBatch(b.span, err) }()
	// The delete runs in the batch's span.
	ctx, cancel := context.WithTimeout(trace.ContextWithSpan(context.WithoutCancel(parent), b.span), batchTimeout)
	defer cancel()
	errs := b.wait(ctx)
	sent := make([]int64, 0, len(b.ids))
	var firstErr error
	for i, err := range errs {
		if err == nil {
			sent = append(sent, b.ids[i])
		} else if firstErr == nil {
			firstErr = err
		}
	}
	if len(sent) > 0 {
		const q = `DELETE FROM outbox WHERE id = ANY($1)`
		dctx, cancel := bounded(ctx)
		_, err := conn.Exec(dctx, q, sent)
		cancel()
		if err != nil {
			return fmt.Errorf("outbox: delete sent: %w", err)
		}
		r.published.Add(ctx, int64(len(sent)))
	}
	if firstErr != nil {
		r.failed.Add(ctx, int64(len(b.ids)-len(sent)))
		return &publishError{fmt.Errorf("outbox: %d of %d events not confirmed: %w", len(b.ids)-len(sent), len(b.ids), firstErr)}
	}
	return nil
}

func (r *Relay) fetch(ctx context.Context, conn *pgx.Conn, after int64) ([]row, error) {
	const q = `
SELECT id, event_id, exchange, routing_key, event_type, aggregate_id, payload, headers, created_at
FROM outbox
WHERE partition = ANY($1) AND id > $3
ORDER BY id
LIMIT $2`
	rs, err := conn.Query(ctx, q, r.owned, r.BatchSize, after)
	if err != nil {
		return nil, fmt.Errorf("outbox: fetch: %w", err)
	}
	var out []row
	for rs.Next() {
		var (
			rw      row
			eventID [16]byte
			aggID   string
			headers []byte
			at      time.Time
		)
		if err := rs.Scan(&rw.id, &eventID, &rw.msg.Exchange, &rw.msg.RoutingKey, &rw.msg.Type, &aggID, &rw.msg.Body, &headers, &at); err != nil {
			rs.Close()
			return nil, fmt.Errorf("outbox: scan: %w", err)
		}
		carrier := map[string]string{}
		if err := json.Unmarshal(headers, &carrier); err != nil {
			r.Log.Warn("outbox: bad headers; publishing without them", "id", rw.id, "err", err)
		}
		h := amqp.Table{rabbit.HeaderAggregateID: aggID}
		for k, v := range carrier {
			h[k] = v
		}
		rw.msg.Headers = h
		rw.msg.MessageID = uuid.UUID(eventID).String()
		rw.msg.ContentType = ContentType
		rw.msg.Timestamp = at
		out = append(out, rw)
	}
	return out, rs.Err()
}

// instrument registers the relay's metrics: events published and failed,
// and, read from the table at scrape time, the pending count and the age of
// the oldest pending event (the number to alert on).
func (r *Relay) instrument() error {
	var err error
	if r.published, err = r.Meter.Int64Counter("outbox.published", metric.WithDescription("Events published and confirmed by the broker.")); err != nil {
		return err
	}
	if r.failed, err = r.Meter.Int64Counter("outbox.publish_failures", metric.WithDescription("Events the broker did not confirm; they are retried.")); err != nil {
		return err
	}
	pending, err := r.Meter.Int64ObservableGauge("outbox.pending", metric.WithDescription("Events committed but not yet confirmed by the broker."))
	if err != nil {
		return err
	}
	age, err := r.Meter.Float64ObservableGauge("outbox.oldest_pending_age", metric.WithUnit("s"), metric.WithDescription("Age of the oldest event not yet confirmed."))
	if err != nil {
		return err
	}
	_, err = r.Meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		var n int64
		var oldest float64
		const q = `SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM outbox`
		if err := r.Pool.QueryRow(ctx, q).Scan(&n, &oldest); err != nil {
			return err
		}
		o.ObserveInt64(pending, n)
		o.ObserveFloat64(age, oldest)
		return nil
	}, pending, age)
	return err
}
