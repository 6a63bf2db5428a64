// Package ordertest holds the order service's test helpers: a store on a
// fresh, migrated database, catalog seeding, reading the outbox back as
// protobuf messages, and a poll-until-deadline helper.
package ordertest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// NewDB returns a pool on a fresh database with the messaging and order
// migrations applied, and its URL.
func NewDB(tb testing.TB) (*pgxpool.Pool, string) {
	tb.Helper()
	return pgtest.NewDB(tb, boot.Messaging, postgres.Migration)
}

// Clock is a settable clock for stores under test.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at the current time.
func NewClock() *Clock { return &Clock{now: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Timeouts are the saga's timeouts under test: the service's defaults.
var Timeouts = order.Timeouts{Reserve: 30 * time.Second, Payment: 30 * time.Second}

// NewStore returns a store on a fresh database with the given clock (the
// real one when nil).
func NewStore(tb testing.TB, clock *Clock) (*postgres.Store, *pgxpool.Pool) {
	tb.Helper()
	pool, _ := NewDB(tb)
	store := postgres.New(pool)
	if clock != nil {
		store.Clock = clock.Now
	}
	return store, pool
}

// SeedCatalog writes products straight into the catalog replica.
func SeedCatalog(tb testing.TB, pool *pgxpool.Pool, products ...order.Product) {
	tb.Helper()
	for _, p := range products {
		if p.Version == 0 {
			p.Version = 1
		}
		_, err := pool.Exec(context.Background(),
			`INSERT INTO catalog (sku, name, price_cents, currency, version) VALUES ($1, $2, $3, $4, $5)
			 ON CONFLICT (sku) DO UPDATE SET name = $2, price_cents = $3, currency = $4, version = $5`,
			p.SKU, p.Name, p.PriceCents, p.Currency, p.Version)
		if err != nil {
			tb.Fatalf("seed catalog %s: %v", p.SKU, err)
		}
	}
}

// Product returns the catalog replica's row for sku, and whether there is
// one.
func Product(tb testing.TB, pool *pgxpool.Pool, sku string) (order.Product, bool) {
	tb.Helper()
	var p order.Product
	err := pool.QueryRow(context.Background(), `SELECT sku, name, price_cents, currency, version FROM catalog WHERE sku = $1`, sku).
		Scan(&p.SKU, &p.Name, &p.PriceCents, &p.Currency, &p.Version)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, false
	}
	if err != nil {
		tb.Fatalf("read product %s: %v", sku, err)
	}
	return p, true
}

// Event is an outbox row decoded.
type Event struct {
	Exchange   string
	RoutingKey string
	Type       string
	Aggregate  string
	Msg        proto.Message
}

// Outbox returns the outbox rows of aggregate (all rows when ""), in the
// order they were written, decoded.
func Outbox(tb testing.TB, pool *pgxpool.Pool, aggregate string) []Event {
	tb.Helper()
	rows, err := pool.Query(context.Background(),
		`SELECT exchange, routing_key, event_type, aggregate_id, payload FROM outbox
		 WHERE $1 = '' OR aggregate_id = $1 ORDER BY id`, aggregate)
	if err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var (
			e       Event
			payload []byte
		)
		if err := r.Scan(&e.Exchange, &e.RoutingKey, &e.Type, &e.Aggregate, &payload); err != nil {
			return e, err
		}
		msg, err := eventsv1.Unmarshal(e.Type, payload)
		e.Msg = msg
		return e, err
	})
	if err != nil {
		tb.Fatalf("read outbox: %v", err)
	}
	return evs
}

// Types returns the AMQP types of evs, shortened to the message name
// ("OrderPlaced").
func Types(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = string(e.Msg.ProtoReflect().Descriptor().Name())
	}
	return out
}

// Count runs a count(*) query.
func Count(tb testing.TB, pool *pgxpool.Pool, q string, args ...any) int {
	tb.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}
