package e2ebench

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/tests/stack"
)

// What the history mode preloads, at scale 1: what a few months of
// traffic leave in the services' databases that the benchmark's own few
// thousand orders do not.
const (
	// historyOutbox is how many sent events the order service's outbox
	// has seen. The relay deletes an event once the broker confirmed it,
	// so what they leave is dead rows (and index entries) until vacuum.
	historyOutbox = 1_000_000
	// historyInbox is how many inbox records the consumers keep (the last
	// 7 days' message ids), split over order.saga, inventory.orders and
	// payment.requests 2:2:1, as the saga sends them messages.
	historyInbox = 1_000_000
	// historyOrders is how many finished orders the databases hold, with
	// everything they leave behind in each service.
	historyOrders = 100_000
)

// historySpan is how far back the preloaded history reaches, as SQL: it
// ends an hour ago, and stays inside the inbox's 7-day retention (so the
// purge leaves it be) and the notification service's 30 days.
const historySpan = "interval '6 days'"

// preloadCounts are the preloaded row counts at a scale.
type preloadCounts struct {
	Outbox int64 `json:"outbox_events"`
	Inbox  int64 `json:"inbox_records"`
	Orders int64 `json:"orders"`
}

func countsAt(scale float64) preloadCounts {
	n := func(x int) int64 { return max(1, int64(math.Round(float64(x)*scale))) }
	return preloadCounts{Outbox: n(historyOutbox), Inbox: n(historyInbox), Orders: n(historyOrders)}
}

// preloadChunk bounds the rows one preload statement writes (its WAL and
// its time), for the outbox and the inbox.
const preloadChunk = 250_000

// historyOrdersCTE defines, for every statement that writes the finished
// orders into one service's database, the same orders: $1 is how many,
// $2 the moment the history ends (now), $3 the benchmark's customers and
// $4 its SKUs. Everything is a function of the order's number n, so that
// four databases written by four statements agree on every id, amount and
// time without sharing anything else.
//
//   - orders: n's id and payment id (md5 of a name, as a uuid), its fate
//     (80 % confirmed; 8 % cancelled out_of_stock; 7 % payment_declined;
//     5 % confirmed and then cancelled by the customer, refunded), its
//     customer (even n: one of the benchmark's, whose order lists the
//     history then fills; odd n: one of 20,000 others) and when it was
//     placed, evenly over historySpan ending an hour ago.
//   - lines: 1–3 distinct SKUs (the benchmark's, or one of 20 more).
//   - totals: each order's amount, and its lines as the API renders them.
//   - steps: every status each fate goes through, with its seq and time.
const historyOrdersCTE = `
WITH orders_h AS (
  SELECT n,
         md5('orderly-history-order-' || n)::uuid AS id,
         md5('orderly-history-payment-' || n)::uuid AS payment_id,
         CASE WHEN n % 100 < 80 THEN 'confirmed'
              WHEN n % 100 < 88 THEN 'out_of_stock'
              WHEN n % 100 < 95 THEN 'payment_declined'
              ELSE 'customer_request' END AS fate,
         CASE WHEN n % 2 = 0 THEN ($3::text[])[1 + (n / 2) % cardinality($3::text[])]
              ELSE 'history-customer-' || lpad(((n * 7919) % 20000)::text, 5, '0') END AS customer,
         $2::timestamptz - interval '1 hour' - ` + historySpan + ` * (1 - n::float8 / $1::bigint) AS placed
  FROM generate_series(1, $1::bigint) AS n
), lines AS (
  SELECT o.n, o.id, l AS line, k,
         CASE WHEN k < cardinality($4::text[]) THEN ($4::text[])[k + 1] ELSE 'HISTORY-' || lpad(k::text, 2, '0') END AS sku,
         1 + (o.n + l) % 3 AS quantity,
         100 * (1 + k % 20) AS unit_price
  FROM orders_h o
  CROSS JOIN LATERAL generate_series(1, 1 + (o.n % 3)::int) AS l
  CROSS JOIN LATERAL (SELECT ((o.n * 7 + l) % (cardinality($4::text[]) + 20))::int AS k) AS kk
), totals AS (
  SELECT n, sum(quantity * unit_price)::bigint AS total,
         json_agg(json_build_object('sku', sku, 'quantity', quantity, 'unit_price_cents', unit_price) ORDER BY line) AS items
  FROM lines GROUP BY n
), steps AS (
  SELECT o.n, o.id, s.seq, s.status, s.reason, o.placed + s.after AS at
  FROM orders_h o
  JOIN (VALUES
    ('confirmed', 1, 'pending', '', interval '0'),
    ('confirmed', 2, 'reserved', '', interval '40 ms'),
    ('confirmed', 3, 'confirmed', '', interval '120 ms'),
    ('out_of_stock', 1, 'pending', '', interval '0'),
    ('out_of_stock', 2, 'cancelled', 'out_of_stock', interval '30 ms'),
    ('payment_declined', 1, 'pending', '', interval '0'),
    ('payment_declined', 2, 'reserved', '', interval '40 ms'),
    ('payment_declined', 3, 'cancelled', 'payment_declined', interval '120 ms'),
    ('customer_request', 1, 'pending', '', interval '0'),
    ('customer_request', 2, 'reserved', '', interval '40 ms'),
    ('customer_request', 3, 'confirmed', '', interval '120 ms'),
    ('customer_request', 4, 'cancelled', 'customer_request', interval '10 minutes')
  ) AS s(fate, seq, status, reason, after) ON s.fate = o.fate
), final AS (
  SELECT DISTINCT ON (n) n, seq, status, reason, at FROM steps ORDER BY n, seq DESC
)
`

// historyStatements are the statements that write the finished orders,
// by service; each runs after historyOrdersCTE with its parameters.
var historyStatements = map[string][]string{
	"order": {
		`INSERT INTO orders (id, customer_id, status, reason, payment_method, payment_id, total_cents, currency, version,
                     deadline_at, refunded_at, created_at, updated_at)
SELECT o.id, o.customer, f.status, f.reason, CASE o.fate WHEN 'payment_declined' THEN 'pm_card_declined' ELSE 'pm_card_ok' END,
       CASE WHEN o.fate IN ('confirmed', 'customer_request') THEN o.payment_id::text ELSE '' END,
       t.total, 'EUR', f.seq, NULL,
       CASE WHEN o.fate = 'customer_request' THEN f.at + interval '200 ms' END,
       o.placed, f.at
FROM orders_h o JOIN final f USING (n) JOIN totals t USING (n)`,
		`INSERT INTO order_items (order_id, line, sku, quantity, unit_price_cents)
SELECT id, line, sku, quantity, unit_price FROM lines`,
		`INSERT INTO order_history (order_id, seq, status, reason, at)
SELECT id, seq, status, reason, at FROM steps`,
		// Keys are kept 24 hours: only the orders of the last day can still
		// have one, and only those placed with a key (here: half of them).
		`INSERT INTO idempotency_keys (customer_id, key, request_hash, order_id, response_status, response_body, created_at, expires_at)
SELECT o.customer, md5('orderly-history-key-' || o.n)::uuid::text, sha256(convert_to('request-' || o.n, 'UTF8')), o.id, 201,
       json_build_object('id', o.id, 'customer_id', o.customer, 'status', 'pending', 'reason', NULL,
         'items', t.items,
         'total_cents', t.total, 'currency', 'EUR', 'tracking_token', encode(sha256(convert_to('token-' || o.n, 'UTF8')), 'hex'),
         'version', 1, 'created_at', o.placed, 'updated_at', o.placed),
       o.placed, o.placed + interval '24 hours'
FROM orders_h o JOIN totals t USING (n)
WHERE o.placed > $2::timestamptz - interval '23 hours' AND o.n % 2 = 0`,
	},
	"inventory": {
		`INSERT INTO reservations (order_id, status, expires_at, created_at, updated_at)
SELECT o.id, CASE o.fate WHEN 'confirmed' THEN 'committed' WHEN 'out_of_stock' THEN 'rejected' ELSE 'released' END,
       NULL, o.placed + interval '10 ms', f.at
FROM orders_h o JOIN final f USING (n)`,
		`INSERT INTO reservation_lines (order_id, sku, quantity)
SELECT id, sku, quantity FROM lines`,
	},
	"payment": {
		`INSERT INTO payments (id, order_id, customer_id, amount_cents, currency, payment_method, status, decline_reason,
                       gateway_reference, created_at, updated_at)
SELECT o.payment_id, o.id, o.customer, t.total, 'EUR',
       CASE o.fate WHEN 'payment_declined' THEN 'pm_card_declined' ELSE 'pm_card_ok' END,
       CASE o.fate WHEN 'confirmed' THEN 'authorized' WHEN 'payment_declined' THEN 'declined' ELSE 'refunded' END,
       CASE o.fate WHEN 'payment_declined' THEN 'card_declined' ELSE '' END,
       CASE WHEN o.fate = 'payment_declined' THEN '' ELSE 'gw_' || left(md5('gateway-' || o.n), 24) END,
       o.placed + interval '60 ms', f.at
FROM orders_h o JOIN final f USING (n) JOIN totals t USING (n)
WHERE o.fate <> 'out_of_stock'`,
		`INSERT INTO refunds (id, payment_id, amount_cents, currency, gateway_reference, created_at)
SELECT md5('orderly-history-refund-' || o.n)::uuid, o.payment_id, t.total, 'EUR', 're_' || left(md5('refund-' || o.n), 24),
       f.at + interval '150 ms'
FROM orders_h o JOIN final f USING (n) JOIN totals t USING (n)
WHERE o.fate = 'customer_request'`,
	},
	"notification": {
		`INSERT INTO order_status (order_id, customer_id, status, reason, seq, at, updated_at)
SELECT o.id, o.customer, f.status, nullif(f.reason, ''), f.seq, f.at, f.at
FROM orders_h o JOIN final f USING (n)`,
		`INSERT INTO status_feed (order_id, seq, status, reason, at)
SELECT id, seq, status, nullif(reason, ''), at FROM steps`,
	},
}

// preloadedTables are the tables the preload writes, by service: what the
// operator's ANALYZE covers.
var preloadedTables = map[string][]string{
	"order":        {"outbox", "inbox", "orders", "order_items", "order_history", "idempotency_keys"},
	"inventory":    {"inbox", "reservations", "reservation_lines"},
	"payment":      {"inbox", "payments", "refunds"},
	"notification": {"order_status", "status_feed"},
}

// preload writes the history into the stack's databases with set-based
// SQL, straight into the tables (the services keep running, idle), the
// order outbox last, and logs how long each part took. customers and skus are the benchmark's. It
// fails tb on any error.
func (b *bench) preload(tb testing.TB, n preloadCounts, customers, skus []string) {
	tb.Helper()
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.preloadInbox(ctx, tb, n.Inbox, now)

	for _, svc := range b.svcs {
		start := time.Now()
		err := pgx.BeginFunc(ctx, svc.DB, func(tx pgx.Tx) error {
			for _, stmt := range historyStatements[svc.Name] {
				if _, err := tx.Exec(ctx, historyOrdersCTE+stmt, n.Orders, now, customers, skus); err != nil {
					return fmt.Errorf("%w\n%s", err, stmt)
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("preload %s's finished orders: %v", svc.Name, err)
		}
		tb.Logf("preloaded %d finished orders into %s in %.1f s", n.Orders, svc.Name, time.Since(start).Seconds())
	}
	// The outbox last: the order service vacuums it within seconds, and
	// what the preload left there should be seen first.
	b.preloadOutbox(ctx, tb, n.Outbox, now)
}

// preloadOutbox writes n events into the order service's outbox and
// deletes them in the same transaction, a chunk at a time, as the relay
// leaves the events it sent: dead rows and their index entries. Nothing
// else ever sees them, so nothing is published; they cycle through the
// order exchange's routes and take the real events' shape (a protobuf-
// sized payload, a trace header, one of 32 partitions).
func (b *bench) preloadOutbox(ctx context.Context, tb testing.TB, n int64, now time.Time) {
	tb.Helper()
	var exchanges, keys, types []string
	for _, r := range eventsv1.Routes() {
		if r.Exchange == eventsv1.ExchangeOrder {
			exchanges, keys, types = append(exchanges, r.Exchange), append(keys, r.RoutingKey), append(types, r.Type)
		}
	}
	const insert = `
WITH ins AS (
  INSERT INTO outbox (event_id, exchange, routing_key, event_type, aggregate_id, partition, payload, headers, created_at)
  SELECT md5('orderly-history-event-' || i)::uuid,
         ($4::text[])[1 + i % cardinality($4::text[])], ($5::text[])[1 + i % cardinality($5::text[])], ($6::text[])[1 + i % cardinality($6::text[])],
         md5('orderly-history-order-' || (1 + i / 10))::uuid::text, (i % 32)::smallint,
         convert_to(repeat(md5(i::text), 5), 'UTF8'),
         jsonb_build_object('traceparent', '00-' || md5('trace-' || i) || '-' || left(md5('span-' || i), 16) || '-01'),
         $3::timestamptz - interval '1 hour' - ` + historySpan + ` * (1 - i::float8 / $7::bigint)
  FROM generate_series($1::bigint, $2::bigint) AS i
  RETURNING id)
SELECT min(id), max(id) FROM ins`
	// Only what this transaction inserted, which is old: the events the
	// services write meanwhile are created now and have ids in between.
	const del = `DELETE FROM outbox WHERE id BETWEEN $1 AND $2 AND created_at < $3::timestamptz - interval '30 minutes'`
	start := time.Now()
	for lo := int64(1); lo <= n; lo += preloadChunk {
		hi := min(n, lo+preloadChunk-1)
		err := pgx.BeginFunc(ctx, b.s.Order.DB, func(tx pgx.Tx) error {
			var minID, maxID int64
			if err := tx.QueryRow(ctx, insert, lo, hi, now, exchanges, keys, types, n).Scan(&minID, &maxID); err != nil {
				return fmt.Errorf("insert: %w", err)
			}
			tag, err := tx.Exec(ctx, del, minID, maxID, now)
			if err != nil {
				return fmt.Errorf("delete: %w", err)
			}
			if want := hi - lo + 1; tag.RowsAffected() != want {
				return fmt.Errorf("deleted %d events, inserted %d", tag.RowsAffected(), want)
			}
			// Report the dead rows as soon as this commits, not up to
			// 10 s later: waitOutboxVacuumed looks for them.
			_, err = tx.Exec(ctx, "SELECT pg_stat_force_next_flush()")
			return err
		})
		if err != nil {
			tb.Fatalf("preload the order outbox: %v", err)
		}
	}
	tb.Logf("preloaded %d sent (inserted, then deleted) outbox events into order in %.1f s", n, time.Since(start).Seconds())
}

// preloadInbox writes n inbox records, 2:2:1 into the order.saga,
// inventory.orders and payment.requests consumers' databases, processed
// evenly over historySpan and in that order (as the BRIN index on
// processed_at expects).
func (b *bench) preloadInbox(ctx context.Context, tb testing.TB, n int64, now time.Time) {
	tb.Helper()
	const insert = `
INSERT INTO inbox (consumer, message_id, processed_at)
SELECT $3::text, md5('orderly-history-message-' || $3::text || '-' || i)::uuid,
       $4::timestamptz - interval '1 hour' - ` + historySpan + ` * (1 - i::float8 / $5::bigint)
FROM generate_series($1::bigint, $2::bigint) AS i`
	shares := []struct {
		svc      *stack.Service
		consumer string
		n        int64
	}{
		{b.s.Order, "order.saga", n * 2 / 5},
		{b.s.Inventory, "inventory.orders", n * 2 / 5},
		{b.s.Payment, "payment.requests", n - 2*(n*2/5)},
	}
	for _, sh := range shares {
		start := time.Now()
		for lo := int64(1); lo <= sh.n; lo += preloadChunk {
			hi := min(sh.n, lo+preloadChunk-1)
			if _, err := sh.svc.DB.Exec(ctx, insert, lo, hi, sh.consumer, now, sh.n); err != nil {
				tb.Fatalf("preload %s's inbox: %v", sh.svc.Name, err)
			}
		}
		tb.Logf("preloaded %d inbox records of %s into %s in %.1f s", sh.n, sh.consumer, sh.svc.Name, time.Since(start).Seconds())
	}
}

// analyze runs ANALYZE on the preloaded tables, as an operator restoring
// a database would.
func (b *bench) analyze(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	for _, svc := range b.svcs {
		for _, t := range preloadedTables[svc.Name] {
			if _, err := svc.DB.Exec(ctx, "ANALYZE "+pgx.Identifier{t}.Sanitize()); err != nil {
				tb.Fatalf("ANALYZE %s.%s: %v", svc.Name, t, err)
			}
		}
	}
	tb.Logf("analyzed the preloaded tables in %.1f s", time.Since(start).Seconds())
}

// outboxVacuum is what pg_stat_user_tables says of the order outbox.
type outboxVacuum struct {
	dead, vacuums int64
}

func (b *bench) outboxStats(ctx context.Context) (outboxVacuum, error) {
	var v outboxVacuum
	err := b.s.Order.DB.QueryRow(ctx, `
SELECT n_dead_tup, vacuum_count + autovacuum_count FROM pg_stat_user_tables
WHERE relid = 'outbox'::regclass`).Scan(&v.dead, &v.vacuums)
	return v, err
}

// waitOutboxVacuumed waits, at most limit, until the order service's own
// maintenance (pg.Vacuumer, every 10 s while autovacuum is off) has
// vacuumed the preload's dead rows out of the outbox: fewer than a
// hundredth of dead (and under the outbox's vacuum threshold, 1,000) left,
// by a vacuum later than the statistics read just after the preload
// (after). When those did not count the dead rows any more (the service
// was quicker), a vacuum since before the preload (before) will do. It
// returns how long it waited, or an error saying what it last saw.
func (b *bench) waitOutboxVacuumed(before, after outboxVacuum, dead int64, limit time.Duration) (time.Duration, error) {
	since := after
	if after.dead < dead/2 {
		since = before
	}
	start := time.Now()
	var last outboxVacuum
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		v, err := b.outboxStats(ctx)
		cancel()
		if err == nil {
			last = v
			if v.vacuums > since.vacuums && v.dead < min(1000, max(1, dead/100)) {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > limit {
			if err != nil {
				return time.Since(start), fmt.Errorf("the outbox was not vacuumed within %v: statistics: %w", limit, err)
			}
			return time.Since(start), fmt.Errorf("the outbox was not vacuumed within %v: %d dead rows, %d vacuums (%d when the preload ended)", limit, last.dead, last.vacuums, since.vacuums)
		}
		time.Sleep(time.Second) // the vacuumer looks every 10 s: a second is fine-grained enough
	}
}
