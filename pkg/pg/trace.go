package pg

import (
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// WithTracing has every statement of the pool, and of connections made
// from its config (a relay's or a listener's own connection), traced
// through tp with otelpgx: a client span per query, batch statement,
// prepare and connect, named by the SQL operation ("INSERT") and carrying
// the statement text (db.query.text) but never its arguments, which hold
// customers' data.
//
// A span is started only inside a span that is recording: a statement run
// by an HTTP handler or a consumer appears in the order's trace, while the
// background loops that run without a span (the outbox relay's fetches, a
// purge, the listener) cost one context value and no span. Waiting for a
// pool connection is not traced (its wait shows as the gap before the
// query), nor measured: otelpgx's own metrics are off, so this option costs
// nothing where nothing is traced.
func WithTracing(tp trace.TracerProvider) func(*pgxpool.Config) {
	t := otelpgx.NewTracer(
		otelpgx.WithTracerProvider(tp),
		otelpgx.WithMeterProvider(noop.NewMeterProvider()),
		otelpgx.WithDisableAcquireTracer(),
		// Host, port, user and database on every span would repeat what
		// the service's resource and configuration already say.
		otelpgx.WithDisableConnectionDetailsInAttributes(),
	)
	return func(c *pgxpool.Config) {
		c.ConnConfig.Tracer = t
	}
}
