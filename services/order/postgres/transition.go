package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/pg"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
)

// Facts are what a message tells about an order besides the event itself.
type Facts struct {
	// Owner, when set, restricts the transition to that customer's order;
	// another customer's order is ErrNotFound.
	Owner string
	// PaymentID is the authorized payment (PaymentAuthorized).
	PaymentID string
}

// Apply runs the transition of event on order id in its own transaction (a
// customer's cancel, an admin's ship or deliver) and returns the order
// after it, with its items. It returns an error matching order.ErrNotFound
// for an unknown id (or another customer's order, with f.Owner set), and
// order.ErrInvalidTransition (and, for a cancel, order.ErrNotCancellable)
// when the order's status does not allow event.
func (s *Store) Apply(ctx context.Context, id string, event order.Event, f Facts) (order.Order, error) {
	var o order.Order
	err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if o, _, err = s.ApplyTx(ctx, tx, id, event, f); err != nil {
			return err
		}
		return loadItems(ctx, tx, []*order.Order{&o})
	})
	return o, err
}

// ApplyTx runs the transition of event on order id inside tx: it locks the
// order row, asks the state machine, and writes the new status, version,
// deadline and history entry with OrderStatusChanged (and OrderCancelled)
// plus the transition's commands to the outbox. A compensation (a
// transition that keeps the status) writes only its commands. It returns
// the order after the transition (without items) and the transition, or
// the errors described at Apply, with the order as it is.
func (s *Store) ApplyTx(ctx context.Context, tx pgx.Tx, id string, event order.Event, f Facts) (order.Order, order.Transition, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return order.Order{}, order.Transition{}, fmt.Errorf("%s order %q: %w", event, id, order.ErrNotFound)
	}
	o, err := scanOrder(tx.QueryRow(ctx, `SELECT `+orderColumns+` FROM orders WHERE id = $1 FOR UPDATE`, uid))
	if err == nil && f.Owner != "" && o.CustomerID != f.Owner {
		err = order.ErrNotFound
	}
	if err != nil {
		return order.Order{}, order.Transition{}, fmt.Errorf("%s order %s: %w", event, id, err)
	}
	t, err := order.Next(o.Status, event)
	if err != nil {
		return o, t, fmt.Errorf("order %s: %w", id, err)
	}
	now := s.clock()
	if f.PaymentID != "" && event == order.EventPaymentAuthorized {
		o.PaymentID = f.PaymentID
	}
	prev := o.Status
	if t.Changes() {
		o.Status, o.Reason, o.Version, o.UpdatedAt = t.To, t.Reason, o.Version+1, now
		switch t.Deadline {
		case order.DeadlinePayment:
			d := now.Add(s.paymentTimeout)
			o.DeadlineAt = &d
		case order.DeadlineClear:
			o.DeadlineAt = nil
		case order.DeadlineKeep:
		}
		const q = `
UPDATE orders SET status = $2, reason = $3, version = $4, deadline_at = $5, updated_at = $6, payment_id = $7
WHERE id = $1`
		if _, err := tx.Exec(ctx, q, uid, o.Status, o.Reason, o.Version, o.DeadlineAt, o.UpdatedAt, o.PaymentID); err != nil {
			return o, t, fmt.Errorf("%s order %s: update: %w", event, id, err)
		}
		if err := appendHistory(ctx, tx, o); err != nil {
			return o, t, err
		}
	} else if f.PaymentID != "" {
		if _, err := tx.Exec(ctx, `UPDATE orders SET payment_id = $2 WHERE id = $1`, uid, o.PaymentID); err != nil {
			return o, t, fmt.Errorf("%s order %s: record payment: %w", event, id, err)
		}
	}
	events, err := transitionEvents(o, prev, t, now)
	if err != nil {
		return o, t, err
	}
	if err := outbox.Add(ctx, tx, events...); err != nil {
		return o, t, fmt.Errorf("%s order %s: %w", event, id, err)
	}
	return o, t, nil
}

// IsIgnorable reports whether err from ApplyTx means the message does not
// apply to the order (a duplicate or late message, or an order this service
// never stored) and should be acknowledged without effects.
func IsIgnorable(err error) bool {
	return errors.Is(err, order.ErrInvalidTransition) || errors.Is(err, order.ErrNotFound)
}

// SweepDeadlines cancels, with reason timeout, pending and reserved orders
// whose deadline passed, up to batch per transaction, until none is left.
// Rows another sweeper (or a request) holds are skipped; they are taken at
// the next sweep if still due. It returns how many orders it cancelled.
func (s *Store) SweepDeadlines(ctx context.Context, batch int) (int, error) {
	total := 0
	for {
		n := 0
		err := pg.Transact(ctx, s.pool, func(tx pgx.Tx) error {
			n = 0
			const q = `
SELECT id FROM orders
WHERE deadline_at IS NOT NULL AND deadline_at < $1 AND status IN ('pending', 'reserved')
ORDER BY deadline_at
LIMIT $2
FOR UPDATE SKIP LOCKED`
			rows, err := tx.Query(ctx, q, s.clock(), batch)
			if err != nil {
				return fmt.Errorf("sweep deadlines: %w", err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
			if err != nil {
				return fmt.Errorf("sweep deadlines: %w", err)
			}
			for _, id := range ids {
				if _, _, err := s.ApplyTx(ctx, tx, id.String(), order.EventTimeout, Facts{}); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		total += n
		if err != nil || n < batch {
			return total, err
		}
	}
}

// Backlog measures how far behind the saga is, from the deadlines of the
// orders waiting in each step (a step's deadline is when it began plus its
// timeout). It skips the skip orders that have waited longest in each step,
// so that a few orders stuck in a delayed retry do not count as a backlog.
func (s *Store) Backlog(ctx context.Context, skip int) (order.Backlog, error) {
	const q = `
SELECT
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'pending' ORDER BY deadline_at OFFSET $1 LIMIT 1),
  (SELECT deadline_at FROM orders WHERE deadline_at IS NOT NULL AND status = 'reserved' ORDER BY deadline_at OFFSET $1 LIMIT 1)`
	var reserve, payment *time.Time
	if err := s.pool.QueryRow(ctx, q, skip).Scan(&reserve, &payment); err != nil {
		return order.Backlog{}, fmt.Errorf("saga backlog: %w", err)
	}
	now := s.clock()
	waited := func(deadline *time.Time, timeout time.Duration) time.Duration {
		if deadline == nil {
			return 0
		}
		return max(0, now.Sub(deadline.Add(-timeout)))
	}
	return order.Backlog{Reserve: waited(reserve, s.reserveTimeout), Payment: waited(payment, s.paymentTimeout)}, nil
}

// RecordRefund notes in tx that order id's payment was refunded at. It
// changes neither status nor version; an unknown order is ignored.
func (s *Store) RecordRefund(ctx context.Context, tx pgx.Tx, id string, at time.Time) error {
	uid, err := uuid.Parse(id)
	if err != nil {
		return nil //nolint:nilerr // not an order of ours: nothing to record
	}
	if _, err := tx.Exec(ctx, `UPDATE orders SET refunded_at = $2 WHERE id = $1`, uid, at); err != nil {
		return fmt.Errorf("record refund of order %s: %w", id, err)
	}
	return nil
}

// placedEvents are the events of a new order.
func placedEvents(o order.Order, expires time.Time) ([]outbox.Event, error) {
	items := make([]*eventsv1.LineItem, len(o.Items))
	for i, it := range o.Items {
		items[i] = &eventsv1.LineItem{Sku: it.SKU, Quantity: int32(it.Quantity), UnitPriceCents: it.UnitPriceCents} //nolint:gosec // 1..1000
	}
	placed := &eventsv1.OrderPlaced{
		OrderId:       o.ID,
		CustomerId:    o.CustomerID,
		Items:         items,
		TotalCents:    o.TotalCents,
		Currency:      o.Currency,
		PaymentMethod: o.PaymentMethod,
		PlacedAt:      timestamppb.New(o.CreatedAt),
		ExpiresAt:     timestamppb.New(expires),
	}
	return newEvents(o.ID, placed, statusChanged(o))
}

func statusChanged(o order.Order) *eventsv1.OrderStatusChanged {
	return &eventsv1.OrderStatusChanged{
		OrderId:    o.ID,
		CustomerId: o.CustomerID,
		Status:     protoStatus(o.Status),
		Reason:     protoReason(o.Reason),
		Seq:        o.Version,
		At:         timestamppb.New(o.UpdatedAt),
	}
}

// transitionEvents are the events of transition t, which left order o (as
// it is now) in status prev at now.
func transitionEvents(o order.Order, prev order.Status, t order.Transition, now time.Time) ([]outbox.Event, error) {
	var msgs []proto.Message
	if t.Changes() {
		msgs = append(msgs, statusChanged(o))
		if o.Status == order.StatusCancelled {
			msgs = append(msgs, &eventsv1.OrderCancelled{
				OrderId:        o.ID,
				CustomerId:     o.CustomerID,
				Reason:         protoReason(o.Reason),
				PreviousStatus: protoStatus(prev),
				Seq:            o.Version,
				CancelledAt:    timestamppb.New(now),
			})
		}
	}
	at := timestamppb.New(now)
	for _, c := range t.Commands {
		switch c {
		case order.CommandRequestPayment:
			msgs = append(msgs, &eventsv1.PaymentRequested{
				OrderId:        o.ID,
				CustomerId:     o.CustomerID,
				AmountCents:    o.TotalCents,
				Currency:       o.Currency,
				PaymentMethod:  o.PaymentMethod,
				IdempotencyKey: o.ID,
				RequestedAt:    at,
				ExpiresAt:      timestamppb.New(*o.DeadlineAt),
			})
		case order.CommandCommitReservation:
			msgs = append(msgs, &eventsv1.CommitReservation{OrderId: o.ID, RequestedAt: at})
		case order.CommandReleaseReservation:
			msgs = append(msgs, &eventsv1.ReleaseReservation{OrderId: o.ID, Reason: protoReason(o.Reason), RequestedAt: at})
		case order.CommandRequestRefund:
			msgs = append(msgs, &eventsv1.RefundRequested{
				OrderId:        o.ID,
				PaymentId:      o.PaymentID,
				AmountCents:    o.TotalCents,
				Currency:       o.Currency,
				Reason:         protoReason(o.Reason),
				IdempotencyKey: "refund:" + o.ID,
				RequestedAt:    at,
			})
		default:
			return nil, fmt.Errorf("order %s: unknown command %q", o.ID, c)
		}
	}
	return newEvents(o.ID, msgs...)
}

// newEvents routes msgs (see eventsv1.Routes) with the order as aggregate.
func newEvents(orderID string, msgs ...proto.Message) ([]outbox.Event, error) {
	out := make([]outbox.Event, 0, len(msgs))
	for _, m := range msgs {
		r, ok := eventsv1.RouteOf(m)
		if !ok {
			return nil, fmt.Errorf("no route for %T", m)
		}
		e, err := outbox.NewEvent(r.Exchange, r.RoutingKey, orderID, m)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func protoStatus(s order.Status) eventsv1.OrderStatus {
	v, _ := eventsv1.ParseOrderStatus(string(s))
	return v
}

func protoReason(r order.Reason) eventsv1.CancelReason {
	v, _ := eventsv1.ParseCancelReason(string(r))
	return v
}
