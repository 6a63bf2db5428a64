// Package consume handles the messages the order service receives: the saga
// answers of inventory and payment (queue order.saga), which it decodes into
// steps for the domain to run on the orders the store locked (order.ApplySteps)
// and the store to save, and the product events that feed the catalog
// replica (queue order.catalog). Handlers run inside inbox.Handle, so their
// effects commit with the message id, and dispatch on the AMQP type
// property.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/google/uuid"
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

// Handler decodes the messages of both queues, has the domain decide the
// saga's steps and the store save them.
type Handler struct {
	store    *postgres.Store
	timeouts order.Timeouts
	log      *slog.Logger
}

// New returns the handler of the order service's queues on store; log gets
// a line per message, and the saga's steps run with timeouts.
func New(store *postgres.Store, log *slog.Logger, timeouts order.Timeouts) *Handler {
	return &Handler{store: store, timeouts: timeouts, log: log}
}

// Consumers returns a consumer per queue, each handler wrapped in
// inbox.Handle so that a message takes effect once: order.saga applies the
// answers waiting together in one transaction, set-wise; order.catalog
// applies one product event at a time.
func (h *Handler) Consumers() []*rabbit.Consumer {
	return []*rabbit.Consumer{
		{Queue: SagaQueue(), Batch: inbox.Handle(h.store.Pool(), QueueSaga, h.saga)},
		{Queue: CatalogQueue(), Batch: inbox.Handle(h.store.Pool(), QueueCatalog, inbox.Each(h.catalog))},
	}
}

// saga applies answers of inventory and payment, all in one go: the store
// locks their orders, the domain runs the steps on them and the store saves
// the outcome in one round trip. A message that does not apply to the
// order's status (a duplicate, a late answer) is acknowledged with no
// change beyond the compensations of the state machine; an unknown type or
// a corrupt body is dead-lettered.
func (h *Handler) saga(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
	steps := make([]order.Step, 0, len(batch))
	stepOf := make([]int, 0, len(batch)) // batch index of each step
	var refunds []*eventsv1.PaymentRefunded
	for i, d := range batch {
		a, err := decodeAnswer(d.Delivery)
		if err != nil {
			return err
		}
		if m := a.refund; m != nil {
			h.log.InfoContext(d.Ctx, "payment refunded", "order_id", m.GetOrderId(), "payment_id", m.GetPaymentId(),
				"refund_id", m.GetRefundId(), "amount_cents", m.GetAmountCents(), "currency", m.GetCurrency())
			refunds = append(refunds, m)
			continue
		}
		steps, stepOf = append(steps, a.step), append(stepOf, i)
	}
	orders, err := h.store.LockOrders(ctx, tx, steps...)
	if err != nil {
		return err
	}
	out, err := order.ApplySteps(orders, steps, h.store.Now(), h.timeouts)
	if err != nil {
		return err
	}
	if err := h.store.Save(ctx, tx, out); err != nil {
		return err
	}
	for k, r := range out.Results {
		d, st := batch[stepOf[k]], steps[k]
		switch t := r.Transition; {
		case order.IsIgnorable(r.Err):
			h.log.InfoContext(d.Ctx, "message does not apply; ignored", "type", d.Type, "order_id", st.OrderID,
				"status", r.Order.Status, "reason", ignoredWhy(r.Err))
		case r.Err != nil:
			return r.Err
		case t.Changes():
			h.log.InfoContext(d.Ctx, "order transition", "order_id", st.OrderID, "event", st.Event, "from", t.From, "to", t.To,
				"reason", t.Reason, "seq", r.Order.Version)
		default:
			h.log.InfoContext(d.Ctx, "late message compensated", "order_id", st.OrderID, "event", st.Event, "status", r.Order.Status,
				"commands", t.Commands)
		}
	}
	// Refunds only note the time: after the transitions, so that this
	// transaction locks orders in id order first.
	for _, m := range refunds {
		if err := h.store.RecordRefund(ctx, tx, m.GetOrderId(), m.GetRefundedAt().AsTime()); err != nil {
			return err
		}
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
func (h *Handler) catalog(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	p, err := decodeProduct(d)
	if err != nil {
		return err
	}
	wrote, err := h.store.UpsertProduct(ctx, tx, p)
	if err != nil {
		return err
	}
	if !wrote {
		h.log.DebugContext(ctx, "older product version ignored", "sku", p.SKU, "version", p.Version)
	}
	return nil
}

// answer is a message of order.saga decoded: a step for the domain to
// run, or a refund, which only notes the time on the order.
type answer struct {
	step   order.Step
	refund *eventsv1.PaymentRefunded
}

// decodeAnswer returns d as an answer, or a rabbit.Permanent error for an
// unknown type, an undecodable body, an order id that is not a UUID or a
// refund without a valid time: none of them can ever apply.
func decodeAnswer(d *amqp.Delivery) (answer, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return answer{}, rabbit.Permanent(err)
	}
	var a answer
	switch m := msg.(type) {
	case *eventsv1.StockReserved:
		a.step = order.Step{OrderID: m.GetOrderId(), Event: order.EventStockReserved}
	case *eventsv1.StockRejected:
		a.step = order.Step{OrderID: m.GetOrderId(), Event: order.EventStockRejected}
	case *eventsv1.PaymentAuthorized:
		a.step = order.Step{OrderID: m.GetOrderId(), Event: order.EventPaymentAuthorized, PaymentID: m.GetPaymentId()}
	case *eventsv1.PaymentDeclined:
		a.step = order.Step{OrderID: m.GetOrderId(), Event: order.EventPaymentDeclined}
	case *eventsv1.PaymentRefunded:
		if err := m.GetRefundedAt().CheckValid(); err != nil {
			return answer{}, rabbit.Permanent(fmt.Errorf("PaymentRefunded %q: refunded_at: %w", m.GetOrderId(), err))
		}
		a.refund = m
	default:
		return answer{}, rabbit.Permanent(fmt.Errorf("order.saga does not handle %s", d.Type))
	}
	// The store would take any other string, or another spelling of a
	// UUID ({…}, urn:uuid:…), for an unknown order, and the message would
	// be acknowledged as one that does not apply.
	raw := a.step.OrderID
	if a.refund != nil {
		raw = a.refund.GetOrderId()
	}
	id, err := uuid.Parse(raw)
	if err != nil {
		return answer{}, rabbit.Permanent(fmt.Errorf("%s: order_id %q is not a UUID", d.Type, raw))
	}
	if a.refund != nil {
		a.refund.OrderId = id.String()
	} else {
		a.step.OrderID = id.String()
	}
	return a, nil
}

// decodeProduct returns the ProductUpserted in d as a catalog product, or a
// rabbit.Permanent error for another type, an undecodable body or a
// product without a SKU or currency, or with a negative price.
func decodeProduct(d *amqp.Delivery) (order.Product, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return order.Product{}, rabbit.Permanent(err)
	}
	m, ok := msg.(*eventsv1.ProductUpserted)
	if !ok {
		return order.Product{}, rabbit.Permanent(fmt.Errorf("order.catalog does not handle %s", d.Type))
	}
	if m.GetSku() == "" || m.GetCurrency() == "" || m.GetPriceCents() < 0 {
		return order.Product{}, rabbit.Permanent(fmt.Errorf("product event for %q lacks sku or currency, or has a negative price", m.GetSku()))
	}
	return order.Product{
		SKU: m.GetSku(), Name: m.GetName(), PriceCents: m.GetPriceCents(), Currency: m.GetCurrency(), Version: m.GetVersion(),
	}, nil
}
