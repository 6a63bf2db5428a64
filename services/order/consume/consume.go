// Package consume applies the messages the order service receives: the saga
// answers of inventory and payment (queue order.saga) and the product
// events that feed the catalog replica (queue order.catalog). Handlers run
// inside inbox.Handle, so their effects commit with the message id, and
// dispatch on the AMQP type property.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/order/order"
	"github.com/orderly/orderly/services/order/postgres"
)

// Queue names (docs/saga.md).
const (
	QueueSaga    = "order.saga"
	QueueCatalog = "order.catalog"
)

// SagaQueue is the queue of inventory's and payment's answers.
func SagaQueue() rabbit.Queue {
	return rabbit.Queue{
		Name: QueueSaga,
		Bindings: []rabbit.Binding{
			{Exchange: eventsv1.ExchangeInventory, Key: eventsv1.RoutingKeyStockReserved},
			{Exchange: eventsv1.ExchangeInventory, Key: eventsv1.RoutingKeyStockRejected},
			{Exchange: eventsv1.ExchangePayment, Key: eventsv1.RoutingKeyPaymentAuthorized},
			{Exchange: eventsv1.ExchangePayment, Key: eventsv1.RoutingKeyPaymentDeclined},
			{Exchange: eventsv1.ExchangePayment, Key: eventsv1.RoutingKeyPaymentRefunded},
		},
		RetryDelays: rabbit.DefaultRetryDelays,
	}
}

// CatalogQueue is the queue of inventory's product events.
func CatalogQueue() rabbit.Queue {
	return rabbit.Queue{
		Name: QueueCatalog,
		Bindings: []rabbit.Binding{
			{Exchange: eventsv1.ExchangeInventory, Key: eventsv1.RoutingKeyProductUpserted},
		},
		RetryDelays: rabbit.DefaultRetryDelays,
	}
}

// Handlers hold what the message handlers need.
type Handlers struct {
	Store *postgres.Store
	Log   *slog.Logger
}

// Saga returns the order.saga handler, wrapped in inbox.Handle: the
// answers waiting together are applied in one transaction.
func (h *Handlers) Saga() rabbit.BatchHandler {
	return inbox.Handle(h.Store.Pool(), QueueSaga, inbox.Each(h.saga))
}

// Catalog returns the order.catalog handler, wrapped in inbox.Handle.
func (h *Handlers) Catalog() rabbit.BatchHandler {
	return inbox.Handle(h.Store.Pool(), QueueCatalog, inbox.Each(h.catalog))
}

// saga applies one answer of inventory or payment. A message that does not
// apply to the order's status (a duplicate, a late answer) is acknowledged
// with no change beyond the compensations of the state machine; an unknown
// type or a corrupt body is dead-lettered.
func (h *Handlers) saga(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return rabbit.Permanent(err)
	}
	var (
		orderID string
		event   order.Event
		facts   postgres.Facts
	)
	switch m := msg.(type) {
	case *eventsv1.StockReserved:
		orderID, event = m.GetOrderId(), order.EventStockReserved
	case *eventsv1.StockRejected:
		orderID, event = m.GetOrderId(), order.EventStockRejected
	case *eventsv1.PaymentAuthorized:
		orderID, event, facts.PaymentID = m.GetOrderId(), order.EventPaymentAuthorized, m.GetPaymentId()
	case *eventsv1.PaymentDeclined:
		orderID, event = m.GetOrderId(), order.EventPaymentDeclined
	case *eventsv1.PaymentRefunded:
		h.Log.InfoContext(ctx, "payment refunded", "order_id", m.GetOrderId(), "payment_id", m.GetPaymentId(),
			"refund_id", m.GetRefundId(), "amount_cents", m.GetAmountCents(), "currency", m.GetCurrency())
		return h.Store.RecordRefund(ctx, tx, m.GetOrderId(), m.GetRefundedAt().AsTime())
	default:
		return rabbit.Permanent(fmt.Errorf("order.saga does not handle %s", d.Type))
	}
	o, t, err := h.Store.ApplyTx(ctx, tx, orderID, event, facts)
	switch {
	case postgres.IsIgnorable(err):
		h.Log.InfoContext(ctx, "message does not apply; ignored", "type", d.Type, "order_id", orderID,
			"status", o.Status, "reason", ignoredWhy(err))
		return nil
	case err != nil:
		return err
	}
	if t.Changes() {
		h.Log.InfoContext(ctx, "order transition", "order_id", orderID, "event", event, "from", t.From, "to", t.To,
			"reason", t.Reason, "seq", o.Version)
	} else {
		h.Log.InfoContext(ctx, "late message compensated", "order_id", orderID, "event", event, "status", o.Status,
			"commands", t.Commands)
	}
	return nil
}

func ignoredWhy(err error) string {
	if errors.Is(err, order.ErrNotFound) {
		return "unknown order"
	}
	return "no transition from the current status"
}

// catalog applies one ProductUpserted to the replica, if newer.
func (h *Handlers) catalog(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return rabbit.Permanent(err)
	}
	m, ok := msg.(*eventsv1.ProductUpserted)
	if !ok {
		return rabbit.Permanent(fmt.Errorf("order.catalog does not handle %s", d.Type))
	}
	if m.GetSku() == "" || m.GetCurrency() == "" || m.GetPriceCents() < 0 {
		return rabbit.Permanent(fmt.Errorf("product event for %q lacks sku or currency, or has a negative price", m.GetSku()))
	}
	wrote, err := h.Store.UpsertProduct(ctx, tx, order.Product{
		SKU: m.GetSku(), Name: m.GetName(), PriceCents: m.GetPriceCents(), Currency: m.GetCurrency(), Version: m.GetVersion(),
	})
	if err != nil {
		return err
	}
	if !wrote {
		h.Log.DebugContext(ctx, "older product version ignored", "sku", m.GetSku(), "version", m.GetVersion())
	}
	return nil
}
