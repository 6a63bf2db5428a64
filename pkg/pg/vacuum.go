package pg

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// AutovacuumOn reports whether the server runs autovacuum. It returns an
// error only when the database cannot be asked.
func AutovacuumOn(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var v string
	if err := pool.QueryRow(ctx, "SHOW autovacuum").Scan(&v); err != nil {
		return false, fmt.Errorf("pg: show autovacuum: %w", err)
	}
	return v == "on", nil
}

// Vacuumer stands in for autovacuum on a server where it is off: it
// vacuums and analyzes the tables of its database that crossed autovacuum's
// thresholds, read the way autovacuum reads them (a table's own
// autovacuum_* storage parameters, else the defaults). Without it, a queue
// table such as the outbox, where every row is deleted moments after it was
// written, would keep its dead rows for good, and every scan of it would
// cost more the longer the system ran.
type Vacuumer struct {
	Pool *pgxpool.Pool
	// Interval is how often the statistics are checked (default 10s).
	Interval time.Duration
	Log      *slog.Logger
}

// Run checks the tables every Interval until ctx ends, when it returns nil.
// A failed check or vacuum is logged and tried again at the next tick; it
// only delays the cleanup.
func (v *Vacuumer) Run(ctx context.Context) error {
	interval := v.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	log := v.Log
	if log == nil {
		log = slog.Default()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := v.once(ctx); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "table maintenance failed", "err", err)
		}
	}
}

// maintenanceTimeout bounds one round of Run. A VACUUM may rightly outlast
// the statement timeout, but not a database that stopped answering (a
// network black hole), which would otherwise keep the round, and its
// pooled connection, for good.
const maintenanceTimeout = 5 * time.Minute

// once is Once bounded by maintenanceTimeout.
func (v *Vacuumer) once(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, maintenanceTimeout)
	defer cancel()
	return v.Once(ctx)
}

// Defaults of autovacuum (PostgreSQL 15) that a table's storage parameters
// may override.
const (
	defaultVacuumThreshold  = 50
	defaultVacuumScale      = 0.2
	defaultAnalyzeThreshold = 50
	defaultAnalyzeScale     = 0.1
)

// Once vacuums (with ANALYZE) every table past its vacuum threshold and
// analyzes every table past its analyze threshold. Tables another session
// is vacuuming are skipped. It returns the first error.
func (v *Vacuumer) Once(ctx context.Context) error {
	const q = `
SELECT quote_ident(s.schemaname) || '.' || quote_ident(s.relname), s.n_live_tup, s.n_dead_tup, s.n_mod_since_analyze,
       coalesce(c.reloptions, '{}')
FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid`
	rows, err := v.Pool.Query(ctx, q)
	if err != nil {
		return fmt.Errorf("pg: table statistics: %w", err)
	}
	type table struct {
		name                string
		live, dead, changed int64
		opts                []string
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (table, error) {
		var t table
		err := r.Scan(&t.name, &t.live, &t.dead, &t.changed, &t.opts)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("pg: table statistics: %w", err)
	}
	for _, t := range tables {
		o := reloptions(t.opts)
		var stmt string
		switch {
		case float64(t.dead) > o.get("autovacuum_vacuum_threshold", defaultVacuumThreshold)+o.get("autovacuum_vacuum_scale_factor", defaultVacuumScale)*float64(t.live):
			stmt = "VACUUM (ANALYZE, SKIP_LOCKED) " + t.name
		case float64(t.changed) > o.get("autovacuum_analyze_threshold", defaultAnalyzeThreshold)+o.get("autovacuum_analyze_scale_factor", defaultAnalyzeScale)*float64(t.live):
			stmt = "ANALYZE (SKIP_LOCKED) " + t.name
		default:
			continue
		}
		if err := v.run(ctx, stmt); err != nil {
			return fmt.Errorf("pg: %s: %w", stmt, err)
		}
	}
	return nil
}

// run runs stmt without the pool's statement_timeout, which a VACUUM of a
// large table may rightly exceed (VACUUM cannot run in a transaction, so
// SET LOCAL is no help). RESET restores the connection's own setting
// before it goes back to the pool; a connection that cannot be reset is
// closed instead.
func (v *Vacuumer) run(ctx context.Context, stmt string) error {
	conn, err := v.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// Not ctx, which may have ended the statement; but bounded, as
		// the statement timeout is not back yet.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, err := conn.Exec(rctx, "RESET statement_timeout"); err != nil {
			_ = conn.Hijack().Close(context.WithoutCancel(ctx))
			return
		}
		conn.Release()
	}()
	if _, err := conn.Exec(ctx, "SET statement_timeout = 0"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, stmt)
	return err
}

// reloptions are a table's storage parameters, "name=value".
type reloptions []string

// get returns the numeric parameter name, or def when it is not set.
func (o reloptions) get(name string, def float64) float64 {
	for _, kv := range o {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || k != name {
			continue
		}
		if f, err := strconv.ParseFloat(val, 64); err == nil {
			return f
		}
	}
	return def
}
