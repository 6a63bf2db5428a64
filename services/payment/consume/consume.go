// Package consume is the payment service's message handling: the
// payment.requests queue and the handler that turns PaymentRequested into an
// authorized or declined payment and RefundRequested into a refund or a
// voided marker (docs/saga.md, steps 4 and 7).
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
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/outbox"
	"github.com/orderly/orderly/pkg/rabbit"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/payment/gateway"
	"github.com/orderly/orderly/services/payment/payment"
	"github.com/orderly/orderly/services/payment/postgres"
)

// QueueName is the queue the payment service consumes; it is also the inbox
// consumer name.
const QueueName = "payment.requests"

// Queue returns the payment.requests queue with its bindings to the order
// service's payment and refund requests, and the default retry delays.
func Queue() rabbit.Queue {
	return rabbit.Queue{
		Name: QueueName,
		Bindings: []rabbit.Binding{
			{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyPaymentRequested},
			{Exchange: eventsv1.ExchangeOrder, Key: eventsv1.RoutingKeyRefundRequested},
		},
		RetryDelays: rabbit.DefaultRetryDelays,
	}
}

// Exchanges are the exchanges Queue binds to; a consumer declares them with
// the queue.
func Exchanges() []string { return []string{eventsv1.ExchangeOrder} }

// DefaultBackoff is the wait before each retry of a transient gateway
// failure within one handler call: three attempts in all, about 300 ms. Past
// it the handler fails and the queue's delayed retries take over.
var DefaultBackoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}

// Handler applies payment and refund requests. Its zero value is not usable:
// set Gateway (the rest has defaults).
type Handler struct {
	// Gateway is the payment provider.
	Gateway gateway.Gateway
	// Backoff lists the waits between attempts of a gateway call that
	// failed with gateway.ErrTransient; nil means DefaultBackoff, and an
	// empty non-nil slice makes one attempt.
	Backoff []time.Duration
	// Now tells the time, for checking expiry; nil means time.Now.
	Now func() time.Time
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Consumer returns the batch handler of the payment.requests queue: Apply
// through the inbox on pool, so that each message takes effect once, and
// the requests waiting together in one transaction.
func (h *Handler) Consumer(pool *pgxpool.Pool) rabbit.BatchHandler {
	return inbox.Handle(pool, QueueName, h.Apply)
}

// Apply applies a batch of messages in tx (an inbox.Handler): it locks the
// payments of their orders, decides each message in order against them —
// calling the gateway where a charge or a refund is due — and writes the
// new payments, refunds and events in one round trip. It dispatches on the
// AMQP type: PaymentRequested and RefundRequested. It returns a
// rabbit.Permanent error for an unknown type, an undecodable body, a
// malformed order id and a gateway error that retrying cannot fix, and a
// plain error (retried later) when the database fails or the gateway is
// still failing transiently after the in-handler retries.
//
// The gateway is called with tx open: the per-order lock makes a
// RefundRequested for the same order wait, and the gateway's latency is
// small. If tx then fails to commit, the redelivery calls the gateway again
// with the same idempotency key and gets the same authorization, never a
// second one.
func (h *Handler) Apply(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
	msgs := make([]proto.Message, len(batch))
	orders := make([]uuid.UUID, len(batch))
	for i, d := range batch {
		msg, err := eventsv1.Unmarshal(d.Type, d.Body)
		if err != nil {
			return rabbit.Permanent(err)
		}
		var raw string
		switch m := msg.(type) {
		case *eventsv1.PaymentRequested:
			raw = m.GetOrderId()
		case *eventsv1.RefundRequested:
			raw = m.GetOrderId()
		default:
			return rabbit.Permanent(fmt.Errorf("payment.requests does not handle %s", d.Type))
		}
		id, err := parseOrderID(raw)
		if err != nil {
			return rabbit.Permanent(fmt.Errorf("%s: %w", d.Type, err))
		}
		msgs[i], orders[i] = msg, id
	}
	book, err := postgres.Lock(ctx, tx, orders)
	if err != nil {
		return err
	}
	var c postgres.Changes
	for i, msg := range msgs {
		log := h.log().With("order_id", orders[i])
		var err error
		switch m := msg.(type) {
		case *eventsv1.PaymentRequested:
			err = h.paymentRequested(batch[i].Ctx, log, book, orders[i], m, &c)
		case *eventsv1.RefundRequested:
			err = h.refundRequested(batch[i].Ctx, log, book, orders[i], m, &c)
		}
		if err != nil {
			return err
		}
	}
	return postgres.Save(ctx, tx, c)
}

// paymentRequested is saga step 4: charge the order unless it has a
// payment already (a duplicate request, or an order voided before its
// payment ran) or its deadline passed.
func (h *Handler) paymentRequested(ctx context.Context, log *slog.Logger, book map[uuid.UUID]payment.Payment, orderID uuid.UUID, m *eventsv1.PaymentRequested, c *postgres.Changes) error {
	if existing, ok := book[orderID]; ok {
		log.InfoContext(ctx, "payment already handled; ignoring request", "status", existing.Status)
		return nil
	}
	p := &payment.Payment{
		ID:          uuid.New(),
		OrderID:     orderID,
		CustomerID:  m.GetCustomerId(),
		AmountCents: m.GetAmountCents(),
		Currency:    m.GetCurrency(),
		Method:      m.GetPaymentMethod(),
	}
	if exp := m.GetExpiresAt(); exp != nil && !h.now().Before(exp.AsTime()) {
		// The order has timed out (or will be cancelled any moment): a
		// charge now would only have to be refunded.
		p.Status, p.DeclineReason = payment.StatusDeclined, payment.ReasonExpired
		log.InfoContext(ctx, "payment request expired; declining without calling the gateway", "expires_at", exp.AsTime())
		return record(book, p, c)
	}
	// The key is the order id whatever the message says: one order, one
	// authorization, however many requests arrive.
	req := gateway.AuthorizeRequest{
		IdempotencyKey: orderID.String(),
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
		PaymentMethod:  p.Method,
	}
	var res gateway.AuthorizeResult
	err := h.retry(ctx, "authorize", log, func() error {
		var err error
		res, err = h.Gateway.Authorize(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	if res.Approved {
		p.Status, p.GatewayReference = payment.StatusAuthorized, res.Reference
	} else {
		p.Status, p.DeclineReason = payment.StatusDeclined, res.DeclineReason
		if p.DeclineReason == "" {
			p.DeclineReason = "declined"
		}
	}
	log.InfoContext(ctx, "payment decided", "status", p.Status, "reason", p.DeclineReason, "amount_cents", p.AmountCents)
	return record(book, p, c)
}

// record adds p, and its PaymentAuthorized or PaymentDeclined event, to c
// and to the book, so that a later message of the batch sees it.
func record(book map[uuid.UUID]payment.Payment, p *payment.Payment, c *postgres.Changes) error {
	book[p.OrderID] = *p
	c.Payments = append(c.Payments, p)
	at := timestamppb.Now()
	var msg proto.Message
	switch p.Status {
	case payment.StatusAuthorized:
		msg = &eventsv1.PaymentAuthorized{
			OrderId:      p.OrderID.String(),
			PaymentId:    p.ID.String(),
			AmountCents:  p.AmountCents,
			Currency:     p.Currency,
			AuthorizedAt: at,
		}
	case payment.StatusDeclined:
		msg = &eventsv1.PaymentDeclined{
			OrderId:    p.OrderID.String(),
			PaymentId:  p.ID.String(),
			Reason:     p.DeclineReason,
			DeclinedAt: at,
		}
	default:
		return nil
	}
	return publish(c, p.OrderID, msg)
}

// refundRequested is saga step 7: refund an authorized payment, void an
// order whose payment has not run, and ignore the rest.
func (h *Handler) refundRequested(ctx context.Context, log *slog.Logger, book map[uuid.UUID]payment.Payment, orderID uuid.UUID, m *eventsv1.RefundRequested, c *postgres.Changes) error {
	p, ok := book[orderID]
	switch {
	case !ok:
		// The order was cancelled before its payment ran (or while the
		// payment service was down). The marker makes a later
		// PaymentRequested charge nothing.
		log.InfoContext(ctx, "refund requested before any payment; voiding the order's payment")
		return record(book, &payment.Payment{
			ID:          uuid.New(),
			OrderID:     orderID,
			AmountCents: max(m.GetAmountCents(), 0),
			Currency:    m.GetCurrency(),
			Status:      payment.StatusVoided,
		}, c)
	case p.Status != payment.StatusAuthorized:
		log.InfoContext(ctx, "nothing to refund", "status", p.Status)
		return nil
	}

	// The whole authorization is refunded: the order was cancelled.
	req := gateway.RefundRequest{
		IdempotencyKey: "refund:" + orderID.String(),
		Reference:      p.GatewayReference,
		AmountCents:    p.AmountCents,
		Currency:       p.Currency,
	}
	var res gateway.RefundResult
	err := h.retry(ctx, "refund", log, func() error {
		var err error
		res, err = h.Gateway.Refund(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	r := &payment.Refund{
		ID:               uuid.New(),
		PaymentID:        p.ID,
		AmountCents:      p.AmountCents,
		Currency:         p.Currency,
		GatewayReference: res.Reference,
	}
	p.Status = payment.StatusRefunded
	book[orderID] = p
	c.Refunds = append(c.Refunds, r)
	log.InfoContext(ctx, "payment refunded", "payment_id", p.ID, "amount_cents", r.AmountCents)
	return publish(c, orderID, &eventsv1.PaymentRefunded{
		OrderId:     orderID.String(),
		PaymentId:   p.ID.String(),
		RefundId:    r.ID.String(),
		AmountCents: r.AmountCents,
		Currency:    r.Currency,
		RefundedAt:  timestamppb.Now(),
	})
}

// retry runs call up to len(Backoff)+1 times while it fails with
// gateway.ErrTransient, waiting Backoff[i] before attempt i+2. It returns
// nil on success; the last error when the attempts are used up or ctx ended,
// for the queue to retry later; and a rabbit.Permanent error for a failure
// that is not transient.
func (h *Handler) retry(ctx context.Context, op string, log *slog.Logger, call func() error) error {
	backoff := h.Backoff
	if backoff == nil {
		backoff = DefaultBackoff
	}
	for attempt := 0; ; attempt++ {
		err := call()
		switch {
		case err == nil:
			return nil
		case !transient(err):
			return rabbit.Permanent(fmt.Errorf("gateway %s: %w", op, err))
		case attempt >= len(backoff):
			return fmt.Errorf("gateway %s: still failing after %d attempts: %w", op, attempt+1, err)
		}
		log.WarnContext(ctx, "gateway call failed; retrying", "op", op, "attempt", attempt+1, "error", err)
		t := time.NewTimer(backoff[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gateway %s: %w (waiting to retry: %w)", op, err, ctx.Err())
		case <-t.C:
		}
	}
}

// transient reports whether a gateway call that failed with err may succeed
// when tried again. A context that ended mid-call counts: the outcome is
// unknown, and the idempotency key makes the retry safe.
func transient(err error) bool {
	return errors.Is(err, gateway.ErrTransient) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// publish adds msg to c's events, with the order as its aggregate.
func publish(c *postgres.Changes, orderID uuid.UUID, msg proto.Message) error {
	ev, err := outbox.NewEvent(orderID.String(), msg)
	if err != nil {
		return err
	}
	c.Events = append(c.Events, ev)
	return nil
}

func parseOrderID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %q", payment.ErrInvalidOrderID, s)
	}
	return id, nil
}

func (h *Handler) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Handler) log() *slog.Logger {
	if h.Log != nil {
		return h.Log
	}
	return slog.Default()
}
