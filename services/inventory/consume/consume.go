// Package consume decodes the order service's commands and events into
// steps of the stock book: OrderPlaced reserves, CommitReservation commits
// and ReleaseReservation releases (docs/saga.md, steps 2, 6a and 6b). Handlers
// run inside inbox.Handle, so each message takes effect once, together with
// the events it publishes, and the messages waiting together are applied in
// one transaction.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
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

// Handler decodes saga messages into steps for the stock book.
type Handler struct {
	store *postgres.Store
	log   *slog.Logger
}

// New returns a Handler on store; log gets a line per applied step.
func New(store *postgres.Store, log *slog.Logger) *Handler {
	return &Handler{store: store, log: log}
}

// Consumers returns the consumer of the inventory.orders queue: handle
// wrapped in inbox.Handle on the store's pool, so that every message takes
// effect once and the messages waiting together commit in one transaction.
func (h *Handler) Consumers() []*rabbit.Consumer {
	return []*rabbit.Consumer{{Queue: Queue(), Batch: inbox.Handle(h.store.Pool(), QueueName, h.handle)}}
}

// handle handles a batch of deliveries inside tx (an inbox.Handler): it
// decodes each into a saga step, by the AMQP type (a retried message
// arrives through the default exchange, so the routing key says nothing),
// has the store load the book of them all at once, applies the steps to it
// in order, and has the store save it. An unknown type, a corrupt body or
// a message that breaks the saga contract is returned as a
// rabbit.Permanent error, for the DLQ; database errors are returned as
// they are, to be retried.
func (h *Handler) handle(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
	steps := make([]stock.Step, len(batch))
	for i, d := range batch {
		var err error
		if steps[i], err = decode(d.Delivery); err != nil {
			return err
		}
	}
	book, err := h.store.LockBook(ctx, tx, steps...)
	if err != nil {
		return err
	}
	now := time.Now()
	changes := make([]stock.Change, len(steps))
	for i, st := range steps {
		if changes[i], err = book.Apply(st, now); err != nil {
			return permanentIf(err, stock.ErrInvalid, stock.ErrNoReservation, stock.ErrNotCommittable)
		}
	}
	if err := h.store.Save(ctx, tx, book); err != nil {
		return err
	}
	for i, c := range changes {
		h.log.InfoContext(batch[i].Ctx, "saga step", "type", batch[i].Type, "order_id", steps[i].OrderID,
			"status", c.Status, "applied", c.Applied, "lines", len(c.Lines), "shortages", len(c.Shortages))
	}
	return nil
}

// decode returns d as the saga step it asks for, or a rabbit.Permanent
// error for an unknown type, an undecodable body, an order id that is not
// a UUID or an invalid expires_at.
func decode(d *amqp.Delivery) (stock.Step, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return stock.Step{}, rabbit.Permanent(err)
	}
	switch m := msg.(type) {
	case *eventsv1.OrderPlaced:
		id, err := parseOrderID(m.GetOrderId())
		if err != nil {
			return stock.Step{}, err
		}
		st := stock.Step{Kind: stock.StepReserve, OrderID: id, Lines: make([]stock.Line, len(m.GetItems()))}
		for i, it := range m.GetItems() {
			st.Lines[i] = stock.Line{SKU: it.GetSku(), Quantity: it.GetQuantity()}
		}
		if ts := m.GetExpiresAt(); ts != nil {
			if err := ts.CheckValid(); err != nil {
				return stock.Step{}, rabbit.Permanent(fmt.Errorf("OrderPlaced %s: expires_at: %w", id, err))
			}
			st.ExpiresAt = ts.AsTime()
		}
		return st, nil
	case *eventsv1.CommitReservation:
		id, err := parseOrderID(m.GetOrderId())
		return stock.Step{Kind: stock.StepCommit, OrderID: id}, err
	case *eventsv1.ReleaseReservation:
		id, err := parseOrderID(m.GetOrderId())
		return stock.Step{Kind: stock.StepRelease, OrderID: id}, err
	}
	return stock.Step{}, rabbit.Permanent(fmt.Errorf("inventory does not handle %s", d.Type))
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
