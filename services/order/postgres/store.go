// Package postgres stores orders, their items and status history, the
// catalog replica and idempotency keys in the order service's database. Every
// state change writes its outbox events (docs/saga.md) in the same
// transaction, and every transition locks the order row first, so concurrent
// messages, sweeps and requests on one order serialize.
//
// The decisions are the domain's (package order); the store loads what
// they need and saves what they decided, and its methods are named for
// that. LockOrders and Save bracket order.ApplySteps in the caller's
// transaction (the saga consumer's); LockKey and SavePlacement bracket the
// rendering of an idempotent POST's response, LockKey having the domain
// place the order (order.Place). Transition (a request's step),
// SweepDeadlines, Create and Backlog do the same in their own
// transactions. Methods that take a pgx.Tx run in the caller's
// transaction; the others run their own.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/migrations"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/services/order/order"
)

// Migration is the service's own migration set (migrations/order); its
// database also carries boot.Messaging.
var Migration = pg.Migration{FS: migrations.Of("order"), Table: "goose_order"}

// Store is the order service's database.
type Store struct {
	pool *pgxpool.Pool
	// Clock tells the time (see Now); nil means time.Now. Tests set it to
	// move time on.
	Clock func() time.Time
	// Metrics records the saga's steps that Save saved, once their
	// transaction commits; nil records nothing.
	Metrics *order.SagaMetrics
}

// New returns a Store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool returns the store's pool, for transactions that span the store and
// the inbox.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// querier is what both a transaction and the pool offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Now returns the time of the decisions whose outcome the store saves, at
// the precision Postgres keeps, so that a value returned to a client or put
// in an event equals the one read back later.
func (s *Store) Now() time.Time {
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	return now().UTC().Truncate(time.Microsecond)
}

// Create validates req, has the domain place it with the catalog replica's
// prices and t (order.Place) and stores the order as pending (history seq
// 1) with its OrderPlaced and OrderStatusChanged events, all in one
// transaction, and returns it.
//
// It returns a *order.ValidationError (ErrInvalidOrder, ErrUnknownSKU,
// ErrMixedCurrency) for a request that breaks a rule, having written
// nothing.
func (s *Store) Create(ctx context.Context, t order.Timeouts, req order.Request) (order.Order, error) {
	if err := req.Validate(); err != nil {
		return order.Order{}, err
	}
	var o order.Order
	err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		p, err := s.place(ctx, tx, t, req, nil)
		if err != nil {
			return err
		}
		o = p.Order
		return s.SavePlacement(ctx, tx, p, nil)
	})
	if err != nil {
		return order.Order{}, fmt.Errorf("create order: %w", err)
	}
	return o, nil
}

// Placement is a new order the domain placed, for SavePlacement to write in
// the same transaction, or what the first request with the same
// Idempotency-Key got.
type Placement struct {
	// Order is the new order, with its history.
	Order order.Order
	// Replay, when set, is the response stored under the key by its first
	// request, which placed the order: there is nothing to save.
	Replay *StoredResponse
	events []outbox.Event
	key    *IdempotencyKey
}

// place reads, in one round trip, the catalog rows of req's lines (after,
// with key, the statements of queueLockKey) and has the domain place req
// with them at the store's time (order.Place).
func (s *Store) place(ctx context.Context, tx pgx.Tx, t order.Timeouts, req order.Request, key *IdempotencyKey) (Placement, error) {
	now := s.Now()
	b := &pgx.Batch{}
	var stored *keyState
	if key != nil {
		stored = queueLockKey(b, *key, now)
	}
	catalog := queueCatalog(b, req.Lines)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return Placement{}, err
	}
	if stored != nil && (stored.err != nil || stored.resp != nil) {
		return Placement{Replay: stored.resp}, stored.err
	}
	o, events, err := order.Place(req, *catalog, uuid.Must(uuid.NewV7()).String(), now, t)
	if err != nil {
		return Placement{}, err
	}
	return Placement{Order: o, events: events, key: key}, nil
}

// SavePlacement writes in tx, in one round trip, the order p placed, its
// items, history entry and events, and, when p came with an
// Idempotency-Key (LockKey), response under the key: the body of the 201
// the request got, which a later request with the key and the same body
// gets again.
func (s *Store) SavePlacement(ctx context.Context, tx pgx.Tx, p Placement, response []byte) error {
	o := p.Order
	b := &pgx.Batch{}
	const insOrder = `
INSERT INTO orders (id, customer_id, status, payment_method, total_cents, currency, version, deadline_at, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8, $8)`
	b.Queue(insOrder, o.ID, o.CustomerID, o.Status, o.PaymentMethod, o.TotalCents, o.Currency, o.DeadlineAt, o.CreatedAt)
	skus, qtys, prices := make([]string, len(o.Items)), make([]int32, len(o.Items)), make([]int64, len(o.Items))
	for i, it := range o.Items {
		skus[i], qtys[i], prices[i] = it.SKU, int32(it.Quantity), it.UnitPriceCents //nolint:gosec // quantity is validated 1..1000
	}
	const insItems = `
INSERT INTO order_items (order_id, line, sku, quantity, unit_price_cents)
SELECT $1, l.n, l.sku, l.q, l.p FROM unnest($2::text[], $3::int[], $4::bigint[]) WITH ORDINALITY AS l(sku, q, p, n)`
	b.Queue(insItems, o.ID, skus, qtys, prices)
	queueHistory(b, []order.Order{o})
	if err := outbox.Queue(ctx, b, p.events...); err != nil {
		return err
	}
	if p.key != nil {
		queueStoreKey(b, *p.key, StoredResponse{OrderID: o.ID, Status: statusCreated, Body: response}, o.CreatedAt)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("insert order: %w", err)
	}
	return nil
}

// queueCatalog queues the read of the catalog rows of the lines' SKUs on b;
// the map is filled when b's results are read.
func queueCatalog(b *pgx.Batch, lines []order.Line) *map[string]order.Product {
	skus := make([]string, len(lines))
	for i, l := range lines {
		skus[i] = l.SKU
	}
	m := make(map[string]order.Product, len(lines))
	b.Queue(`SELECT sku, name, price_cents, currency, version FROM catalog WHERE sku = ANY($1)`, skus).Query(func(rows pgx.Rows) error {
		var p order.Product
		_, err := pgx.ForEachRow(rows, []any{&p.SKU, &p.Name, &p.PriceCents, &p.Currency, &p.Version}, func() error {
			m[p.SKU] = p
			return nil
		})
		if err != nil {
			return fmt.Errorf("read catalog: %w", err)
		}
		return nil
	})
	return &m
}

// orderColumns are read by scanOrder, in this order.
const orderColumns = `id, customer_id, status, reason, payment_method, payment_id, total_cents, currency, version, deadline_at, created_at, updated_at`

func scanOrder(row pgx.Row) (order.Order, error) {
	var (
		o  order.Order
		id uuid.UUID
	)
	err := row.Scan(&id, &o.CustomerID, &o.Status, &o.Reason, &o.PaymentMethod, &o.PaymentID, &o.TotalCents,
		&o.Currency, &o.Version, &o.DeadlineAt, &o.CreatedAt, &o.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, order.ErrNotFound
	}
	o.ID = id.String()
	o.CreatedAt, o.UpdatedAt = o.CreatedAt.UTC(), o.UpdatedAt.UTC()
	return o, err
}

// Get returns the order with its items and history. With owner set, an
// order of another customer is ErrNotFound, as is an id that is not a UUID.
func (s *Store) Get(ctx context.Context, id, owner string) (order.Order, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return order.Order{}, fmt.Errorf("get order %q: %w", id, order.ErrNotFound)
	}
	o, err := scanOrder(s.pool.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1 AND ($2 = '' OR customer_id = $2)`, uid, owner))
	if err != nil {
		return order.Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	if err := loadItems(ctx, s.pool, []*order.Order{&o}); err != nil {
		return order.Order{}, err
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, status, reason, at FROM order_history WHERE order_id = $1 ORDER BY seq`, uid)
	if err != nil {
		return order.Order{}, fmt.Errorf("get order %s history: %w", id, err)
	}
	o.History, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (order.HistoryEntry, error) {
		var h order.HistoryEntry
		err := r.Scan(&h.Seq, &h.Status, &h.Reason, &h.At)
		h.At = h.At.UTC()
		return h, err
	})
	if err != nil {
		return order.Order{}, fmt.Errorf("get order %s history: %w", id, err)
	}
	return o, nil
}

// loadItems fills the items of orders.
func loadItems(ctx context.Context, q querier, orders []*order.Order) error {
	if len(orders) == 0 {
		return nil
	}
	ids := make([]string, len(orders))
	byID := make(map[string]*order.Order, len(orders))
	for i, o := range orders {
		ids[i], byID[o.ID] = o.ID, o
		o.Items = []order.Item{}
	}
	rows, err := q.Query(ctx, `SELECT order_id, sku, quantity, unit_price_cents FROM order_items WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line`, ids)
	if err != nil {
		return fmt.Errorf("read order items: %w", err)
	}
	var (
		oid uuid.UUID
		it  order.Item
	)
	_, err = pgx.ForEachRow(rows, []any{&oid, &it.SKU, &it.Quantity, &it.UnitPriceCents}, func() error {
		o := byID[oid.String()]
		o.Items = append(o.Items, it)
		return nil
	})
	if err != nil {
		return fmt.Errorf("read order items: %w", err)
	}
	return nil
}

// List returns the page of orders q asks for, newest first (created_at,
// then id, descending), and the cursor of the next page, nil on the last.
//
// The WHERE clause holds only the filters q sets, rather than "$1 IS NULL OR
// customer_id = $1" for each: a cached generic plan of the catch-all form
// cannot pick the index of the filter at hand, so each combination of
// filters is its own statement, and each has an index (migrations/order
// 00003) that serves it in order.
func (s *Store) List(ctx context.Context, q order.ListQuery) ([]order.Order, *order.Cursor, error) {
	var (
		where []string
		args  []any
	)
	cond := func(sql string, vals ...any) {
		for _, v := range vals {
			args = append(args, v)
			sql = strings.Replace(sql, "?", "$"+strconv.Itoa(len(args)), 1)
		}
		where = append(where, sql)
	}
	if q.CustomerID != "" {
		cond("customer_id = ?", q.CustomerID)
	}
	if q.Status != "" {
		cond("status = ?", q.Status)
	}
	if !q.CreatedAfter.IsZero() {
		cond("created_at >= ?", q.CreatedAfter)
	}
	if !q.CreatedBefore.IsZero() {
		cond("created_at < ?", q.CreatedBefore)
	}
	if q.After != nil {
		cond("(created_at, id) < (?, ?::uuid)", q.After.CreatedAt, q.After.ID)
	}
	sql := `SELECT ` + orderColumns + ` FROM orders`
	if len(where) > 0 {
		sql += ` WHERE ` + strings.Join(where, " AND ")
	}
	limit := q.Limit
	if limit < 1 || limit > order.MaxListLimit {
		return nil, nil, fmt.Errorf("list orders: limit %d: %w", limit, order.ErrInvalidQuery)
	}
	args = append(args, limit+1)
	sql += ` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", err)
	}
	orders, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (order.Order, error) { return scanOrder(r) })
	if err != nil {
		return nil, nil, fmt.Errorf("list orders: %w", err)
	}
	var next *order.Cursor
	if len(orders) > limit {
		orders = orders[:limit]
		last := orders[limit-1]
		next = &order.Cursor{CreatedAt: last.CreatedAt, ID: uuid.MustParse(last.ID)}
	}
	ptrs := make([]*order.Order, len(orders))
	for i := range orders {
		ptrs[i] = &orders[i]
	}
	if err := loadItems(ctx, s.pool, ptrs); err != nil {
		return nil, nil, err
	}
	return orders, next, nil
}
