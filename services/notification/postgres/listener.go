package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/services/notification/status"
)

// Channel is the NOTIFY channel on which Store.Save announces the changes it
// stores.
const Channel = "order_status"

// ListenerAppName is the application_name of a Listener's connection, so
// that it can be told apart in pg_stat_activity.
const ListenerAppName = "orderly-notification-listener"

// notificationPayload is the SQL expression, over a status_feed row, of
// what Store.Save announces: a JSON array [order_id, seq, status, reason,
// at, traceparent], e.g. ["0190a6b4-…", 3, "cancelled", "timeout",
// "2026-03-01T12:00:03.123456+00:00", "00-4bf9…-00f0…-01"] (reason and
// traceparent null when there is none; at in the session's time zone). An
// array rather than an object keeps it short (~170 bytes; NOTIFY allows
// 8,000); decodeNotification reads it, and also the five-element form
// without traceparent that replicas sent before it was added.
const notificationPayload = `json_build_array(f.order_id, f.seq, f.status, f.reason, f.at, f.traceparent)::text`

// ErrBadNotification is wrapped by the error of a payload on Channel that
// is not what Store.Save sends.
var ErrBadNotification = errors.New("postgres: not an order_status notification")

// decodeNotification turns a payload of notificationPayload back into a
// Change (without the customer, which the payload leaves out). It returns
// an error wrapping ErrBadNotification when the payload is malformed.
func decodeNotification(payload string) (status.Change, error) {
	var f []json.RawMessage
	if err := json.Unmarshal([]byte(payload), &f); err != nil || (len(f) != 5 && len(f) != 6) {
		return status.Change{}, fmt.Errorf("%w: %q", ErrBadNotification, payload)
	}
	var c status.Change
	var reason, traceparent *string
	for i, dst := range []any{&c.OrderID, &c.Seq, &c.Status, &reason, &c.At, &traceparent}[:len(f)] {
		if err := json.Unmarshal(f[i], dst); err != nil {
			return status.Change{}, fmt.Errorf("%w: %q: field %d: %w", ErrBadNotification, payload, i, err)
		}
	}
	if c.OrderID == "" || c.Seq <= 0 || c.Status == "" || c.At.IsZero() {
		return status.Change{}, fmt.Errorf("%w: %q", ErrBadNotification, payload)
	}
	if reason != nil {
		c.Reason = *reason
	}
	if traceparent != nil {
		c.Traceparent = *traceparent
	}
	return c, nil
}

// Hub is what a Listener hands the changes to; *live.Hub is one.
type Hub interface {
	// Publish hands a committed change to the connections watching its
	// order; it must not block.
	Publish(c status.Change)
	// Orders returns the orders that have connections on this replica.
	Orders() []string
}

// Listener hands every change that any replica stores (Store.Save's
// announcements on Channel) to this replica's hub, so that each replica
// pushes every change to its own shoppers while a change is consumed from
// the broker only once, by one replica.
//
// It listens on a connection of its own, not one of the pool's: LISTEN
// belongs to a session, and pooled connections change hands. Announcements
// made while that connection is down are lost (PostgreSQL keeps none for a
// session that is gone), so after every LISTEN, the first one included, it
// resyncs: it reads the latest status of every order watched on this
// replica and publishes it. A connection that missed changes then sends
// the missing ones from the feed before the latest (the hub fills gaps),
// and one that missed nothing drops it (it never sends a seq twice).
type Listener struct {
	pool *pgxpool.Pool
	hub  Hub
	log  *slog.Logger

	// Backoff is the first pause before connecting again after the
	// connection failed; the pause doubles up to MaxBackoff while
	// attempts keep failing. Set them before Run.
	Backoff, MaxBackoff time.Duration
	// Heard, when set, is also given every change announced, once each
	// (not those a resync publishes again): what the dashboard counts
	// the orders placed by. It must not block. Set it before Run.
	Heard func(status.Change)

	notifications, resyncs atomic.Int64
}

// NewListener returns a Listener that connects with pool's settings and
// hands what it hears to hub. Backoff is 100 ms and MaxBackoff 2 s: a
// database restart takes a few seconds here, and every pause while the
// database is back is a pause in live updates.
func NewListener(pool *pgxpool.Pool, hub Hub, log *slog.Logger) *Listener {
	return &Listener{pool: pool, hub: hub, log: log, Backoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second}
}

// ListenerStats counts what a Listener did: the notifications it received
// and the resyncs it ran (one per successful LISTEN: at start and after
// each reconnect).
type ListenerStats struct{ Notifications, Resyncs int64 }

// Stats returns the counts so far.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Notifications: l.notifications.Load(), Resyncs: l.resyncs.Load()}
}

// idleCheck is how long the connection may stay silent before the
// listener checks it with a round trip. A server that vanished without
// closing the TCP connection (a host crash, a partition) would otherwise go
// unnoticed until the kernel's keepalive gives up, many minutes later.
const idleCheck = 30 * time.Second

// Run listens until ctx ends, reconnecting by itself whenever the
// connection breaks; it returns nil when ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	backoff := l.Backoff
	for {
		listened, err := l.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = l.Backoff
		}
		l.log.WarnContext(ctx, "status listener connection lost; reconnecting", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, l.MaxBackoff)
	}
}

// session connects, listens, resyncs and then hands notifications to the
// hub until the connection fails or ctx ends. listened reports whether it
// got as far as the resync; err says why the session ended.
func (l *Listener) session(ctx context.Context) (listened bool, err error) {
	cfg := l.pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["application_name"] = ListenerAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("postgres: listener: connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	// Bounded, as the idle check is: a LISTEN lost in a network black hole
	// would otherwise hold the session, and live updates, for good.
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = conn.Exec(lctx, "LISTEN "+Channel)
	cancel()
	if err != nil {
		return false, fmt.Errorf("postgres: listener: listen: %w", err)
	}
	if err := l.resync(ctx, conn); err != nil {
		return false, err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, idleCheck)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, nil
		case errors.Is(err, context.DeadlineExceeded):
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := conn.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return true, fmt.Errorf("postgres: listener: idle check: %w", err)
			}
			continue
		case err != nil:
			return true, fmt.Errorf("postgres: listener: wait: %w", err)
		}
		l.notifications.Add(1)
		c, err := decodeNotification(n.Payload)
		if err != nil {
			l.log.WarnContext(ctx, "ignoring a notification", "channel", n.Channel, "err", err)
			continue
		}
		l.hub.Publish(c)
		if l.Heard != nil {
			l.Heard(c)
		}
	}
}

// resync publishes the latest status of every order watched on this
// replica; what was announced while the listener was not listening is
// otherwise lost. It reads after LISTEN, so a change committed after the
// read is announced, and one committed before it is read: nothing falls in
// between. Orders first watched after the hub was asked get their
// snapshot after LISTEN too.
func (l *Listener) resync(ctx context.Context, conn *pgx.Conn) error {
	orders := l.hub.Orders()
	if len(orders) > 0 {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cs, err := latest(rctx, conn, orders)
		if err != nil {
			return err
		}
		for _, c := range cs {
			l.hub.Publish(c)
		}
	}
	l.resyncs.Add(1)
	return nil
}

// latest returns the latest status of each of orders that the service
// knows, in one query, or the database's error. Ids that are not UUIDs
// are left out rather than failing the query: one would otherwise stop
// every resync.
func latest(ctx context.Context, conn *pgx.Conn, orders []string) ([]status.Change, error) {
	orders = slices.DeleteFunc(slices.Clone(orders), func(id string) bool { return uuid.Validate(id) != nil })
	const q = `
SELECT order_id::text, customer_id, status, coalesce(reason, ''), seq, at
FROM order_status WHERE order_id = ANY($1::uuid[])`
	rows, err := conn.Query(ctx, q, orders)
	if err != nil {
		return nil, fmt.Errorf("postgres: latest status of %d orders: %w", len(orders), err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (status.Change, error) {
		var c status.Change
		err := r.Scan(&c.OrderID, &c.CustomerID, &c.Status, &c.Reason, &c.Seq, &c.At)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: latest status of %d orders: %w", len(orders), err)
	}
	return out, nil
}
