package pg

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Migration is one set of numbered goose SQL files and the table that records
// which of them were applied. Several sets (the shared messaging tables and a
// service's own) live side by side in one database, each with its own table.
type Migration struct {
	FS    fs.FS
	Table string
	// Upkeep, when set, is periodic work the set's tables need to stay the
	// same size (a purge of old rows); the service runs it with its own.
	Upkeep *Upkeep
}

// Upkeep is one periodic job on a database: Run returns how many rows it
// touched.
type Upkeep struct {
	Name     string
	Interval time.Duration
	Run      func(ctx context.Context, pool *pgxpool.Pool) (int64, error)
}

// Migrate applies every pending migration of each set in order. A Postgres
// advisory lock serializes replicas that start together, so exactly one of
// them applies a given file. It returns the first error; what was applied
// before it stays applied.
//
// The migrations run on connections of their own, like pool's but without
// its statement_timeout: a migration may rightly take long (an index
// built on a large table). They keep its lock_timeout, so that a
// migration waiting for a table's lock behind a long transaction fails
// (and the service with it, to be restarted) rather than queue every
// other statement on that table behind its own wait.
func Migrate(ctx context.Context, pool *pgxpool.Pool, sets ...Migration) error {
	cfg := pool.Config()
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = "0"
	cfg.MinConns, cfg.MaxConns = 0, 4 // the session lock's, a migration's, and spare
	mpool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pg: migration pool: %w", err)
	}
	defer mpool.Close()
	db := stdlib.OpenDBFromPool(mpool)
	defer db.Close()
	for _, set := range sets {
		locker, err := lock.NewPostgresSessionLocker()
		if err != nil {
			return fmt.Errorf("pg: migration lock: %w", err)
		}
		p, err := goose.NewProvider(goose.DialectPostgres, db, set.FS,
			goose.WithTableName(set.Table),
			goose.WithSessionLocker(locker),
			goose.WithDisableGlobalRegistry(true),
		)
		if err != nil {
			return fmt.Errorf("pg: migrations %s: %w", set.Table, err)
		}
		results, err := p.Up(ctx)
		if err != nil {
			return fmt.Errorf("pg: migrate %s: %w", set.Table, err)
		}
		for _, r := range results {
			slog.DebugContext(ctx, "migration applied", "table", set.Table, "file", r.Source.Path, "duration", r.Duration)
		}
	}
	return nil
}

// Pending reports how many migrations of the sets are not yet applied; a
// service is not ready while any are.
func Pending(ctx context.Context, pool *pgxpool.Pool, sets ...Migration) (int, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	n := 0
	for _, set := range sets {
		p, err := goose.NewProvider(goose.DialectPostgres, db, set.FS,
			goose.WithTableName(set.Table), goose.WithDisableGlobalRegistry(true))
		if err != nil {
			return 0, fmt.Errorf("pg: migrations %s: %w", set.Table, err)
		}
		status, err := p.Status(ctx)
		if err != nil {
			return 0, fmt.Errorf("pg: migration status %s: %w", set.Table, err)
		}
		for _, s := range status {
			if s.State == goose.StatePending {
				n++
			}
		}
	}
	return n, nil
}
