package pg_test

import (
	"context"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/poll"
)

// TestVacuumerCleansTablesPastTheirThreshold deletes rows from a table with
// a low threshold in its storage parameters and from one with the default
// thresholds: Once vacuums the first (its dead rows go) and leaves the
// second, whose few dead rows are under autovacuum's default threshold.
// The VACUUM runs without the pool's statement timeout, which the
// connection has again afterwards.
func TestVacuumerCleansTablesPastTheirThreshold(t *testing.T) {
	t.Parallel()
	pool, url := pgtest.NewDB(t)
	ctx := context.Background()
	for _, q := range []string{
		`CREATE TABLE queue (id int PRIMARY KEY) WITH (autovacuum_vacuum_threshold = 10, autovacuum_vacuum_scale_factor = 0)`,
		`CREATE TABLE quiet (id int PRIMARY KEY)`,
		`INSERT INTO queue SELECT generate_series(1, 100)`,
		`INSERT INTO quiet SELECT generate_series(1, 100)`,
		`DELETE FROM queue`,
		`DELETE FROM quiet WHERE id <= 20`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dead := func(table string) (n int64) {
		t.Helper()
		if err := pool.QueryRow(ctx, `SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = $1`, table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Statistics reach the shared counters shortly after the transactions.
	poll.Until(t, 10*time.Second, "dead rows counted", func() bool { return dead("queue") == 100 && dead("quiet") == 20 })

	one := mustConnect(t, url+"&pool_max_conns=1", pg.WithTimeouts(pg.Timeouts{Statement: 3 * time.Second, Lock: time.Second}))
	v := &pg.Vacuumer{Pool: one}
	if err := v.Once(ctx); err != nil {
		t.Fatal(err)
	}
	if got := show(t, one, "statement_timeout"); got != "3s" {
		t.Errorf("statement_timeout after Once = %s, want the pool's 3s back", got)
	}
	poll.Until(t, 10*time.Second, "queue vacuumed", func() bool { return dead("queue") == 0 })
	if n := dead("quiet"); n != 20 {
		t.Errorf("quiet has %d dead rows after Once, want its 20 left for later (under the default threshold)", n)
	}
}
