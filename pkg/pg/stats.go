package pg

import (
	"fmt"

	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric"
)

// RecordStats exports pool's statistics through mp, read at most once a
// second (at a scrape), as otelpgx names them; in Prometheus:
//
//	pgxpool_acquired_connections, pgxpool_idle_connections,
//	pgxpool_total_connections, pgxpool_constructing_connections,
//	pgxpool_max_connections                     (gauges)
//	pgxpool_acquires_total, pgxpool_canceled_acquires_total,
//	pgxpool_empty_acquire_total                 (acquires; empty = had to wait)
//	pgxpool_acquire_duration_nanoseconds_total,
//	pgxpool_empty_acquire_wait_time_nanoseconds_total
//	pgxpool_new_connections_total, pgxpool_max_idle_destroys_total,
//	pgxpool_max_lifetime_destroys_total
//
// each labeled with db_client_connection_pool_name (host:port/database).
// Every service calls it once on its pool (boot.Start), so the four look
// alike. It fails only if an instrument cannot be created.
func RecordStats(pool *pgxpool.Pool, mp metric.MeterProvider) error {
	if err := otelpgx.RecordStats(pool, otelpgx.WithStatsMeterProvider(mp)); err != nil {
		return fmt.Errorf("pg: pool metrics: %w", err)
	}
	return nil
}
