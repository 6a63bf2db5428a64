// Package consume applies the order service's commands and events to the
// inventory: OrderPlaced reserves, CommitReservation commits and
// ReleaseReservation releases (docs/saga.md, steps 2, 6a and 6b). Handlers
// run inside inbox.HandleBatch, so each message takes effect once, together
// with the events it publishes.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/postgres"
	"github.com/orderly/orderly/services/inventory/stock"
)

// QueueName is the queue inventory consumes the order saga from; it is also
// the inbox consumer name.
const QueueName = "inventory.orders"

// Queue returns the inventory.orders queue with its bindings to order.events.
func Queue() rabbit.Queue {
	return rabbit.Queue{
		Name: QueueName,
		Bindings: []rabbit.Binding{
			{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyOrderPlaced},
			{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyCommitReservation},
			{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyReleaseReservation},
		},
		RetryDelays: rabbit.DefaultRetryDelays,
	}
}

// Exchanges are the exchanges Queue binds to and inventory publishes to.
func Exchanges() []string {
	return []string{eventsv1.ExchangeOrder, eventsv1.ExchangeInventory}
}

// Handler applies saga messages to the store.
type Handler struct {
	store *postgres.Store
	log   *slog.Logger
}

// NewHandler returns a Handler on store; log gets a line per applied step.
func NewHandler(store *postgres.Store, log *slog.Logger) *Handler {
	return &Handler{store: store, log: log}
}

// Consumer returns the batch handler of the queue: Apply wrapped in
// inbox.HandleBatch on pool, so that every message takes effect once and
// the messages waiting together commit in one transaction, after their
// products were locked in SKU order (see postgres.Store.LockProducts).
func (h *Handler) Consumer(pool *pgxpool.Pool) rabbit.BatchHandler {
	return inbox.HandleBatch(pool, QueueName, h.Apply, h.lockProducts)
}

// lockProducts locks the products the saga steps of a batch will move.
// Messages it cannot read are left to Apply, which refuses them.
func (h *Handler) lockProducts(ctx context.Context, tx pgx.Tx, ds []*amqp.Delivery) error {
	var (
		skus   []string
		orders []uuid.UUID
	)
	held := func(orderID string) {
		if id, err := uuid.Parse(orderID); err == nil {
			orders = append(orders, id)
		}
	}
	for _, d := range ds {
		msg, err := eventsv1.Unmarshal(d.Type, d.Body)
		if err != nil {
			continue
		}
		switch m := msg.(type) {
		case *eventsv1.OrderPlaced:
			for _, it := range m.GetItems() {
				skus = append(skus, it.GetSku())
			}
		case *eventsv1.CommitReservation:
			held(m.GetOrderId())
		case *eventsv1.ReleaseReservation:
			held(m.GetOrderId())
		}
	}
	return h.store.LockProducts(ctx, tx, skus, orders)
}

// Apply handles one delivery inside tx. It dispatches on the AMQP type (a
// retried message arrives through the default exchange, so the routing key
// says nothing). An unknown type, a corrupt body or a message that breaks
// the saga contract is returned as a rabbit.Permanent error, for the DLQ;
// database errors are returned as they are, to be retried.
func (h *Handler) Apply(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return rabbit.Permanent(err)
	}
	var (
		orderID string
		change  postgres.Change
	)
	switch m := msg.(type) {
	case *eventsv1.OrderPlaced:
		orderID = m.GetOrderId()
		id, err := parseOrderID(orderID)
		if err != nil {
			return err
		}
		lines := make([]stock.Line, len(m.GetItems()))
		for i, it := range m.GetItems() {
			lines[i] = stock.Line{SKU: it.GetSku(), Quantity: it.GetQuantity()}
		}
		var expires time.Time // zero: the store's default hold
		if ts := m.GetExpiresAt(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				return rabbit.Permanent(fmt.Errorf("OrderPlaced %s: expires_at: %w", orderID, err))
			}
			expires = ts.AsTime()
		}
		change, err = h.store.Reserve(ctx, tx, id, lines, expires)
		if err != nil {
			return permanentIf(err, stock.ErrInvalid)
		}
	case *eventsv1.CommitReservation:
		orderID = m.GetOrderId()
		id, err := parseOrderID(orderID)
		if err != nil {
			return err
		}
		change, err = h.store.Commit(ctx, tx, id)
		if err != nil {
			return permanentIf(err, stock.ErrNoReservation, stock.ErrNotCommittable)
		}
	case *eventsv1.ReleaseReservation:
		orderID = m.GetOrderId()
		id, err := parseOrderID(orderID)
		if err != nil {
			return err
		}
		change, err = h.store.Release(ctx, tx, id)
		if err != nil {
			return err
		}
	default:
		return rabbit.Permanent(fmt.Errorf("inventory does not handle %s", d.Type))
	}
	h.log.InfoContext(ctx, "saga step", "type", d.Type, "order_id", orderID,
		"status", change.Status, "applied", change.Applied, "lines", len(change.Lines), "shortages", len(change.Shortages))
	return nil
}

// parseOrderID returns the order id of a message, or a permanent error: a
// message without a valid order id can never be applied.
func parseOrderID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, rabbit.Permanent(fmt.Errorf("order_id %q is not a UUID", s))
	}
	return id, nil
}

// permanentIf marks err permanent when it matches one of targets.
func permanentIf(err error, targets ...error) error {
	for _, t := range targets {
		if errors.Is(err, t) {
			return rabbit.Permanent(err)
		}
	}
	return err
}
