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
	amqp "github.com/rabbitmq/amqp091-go"
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

// Consumer returns the batch handler of the payment.requests queue: h
// applied through the inbox on pool, so that each message takes effect once,
// and the requests waiting together in one transaction.
func (h *Handler) Consumer(pool *pgxpool.Pool) rabbit.BatchHandler {
	return inbox.Handle(pool, QueueName, inbox.Each(h.Handle))
}

// Handle applies one message in tx. It dispatches on the
// AMQP type: PaymentRequested and RefundRequested. It returns a
// rabbit.Permanent error for an unknown type, an undecodable body, a
// malformed order id and a gateway error that retrying cannot fix, and a
// plain error (retried later) when the database fails or the gateway is
// still failing transiently after the in-handler retries.
func (h *Handler) Handle(ctx context.Context, tx pgx.Tx, d *amqp.Delivery) error {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return rabbit.Permanent(err)
	}
	switch m := msg.(type) {
	case *eventsv1.PaymentRequested:
		return h.paymentRequested(ctx, tx, m)
	case *eventsv1.RefundRequested:
		return h.refundRequested(ctx, tx, m)
	default:
		return rabbit.Permanent(fmt.Errorf("payment.requests does not handle %s", d.Type))
	}
}

// paymentRequested is saga step 4. The gateway is called with tx open: the
// per-order lock makes a RefundRequested for the same order wait, and the
// gateway's latency is small. If tx then fails to commit, the redelivery
// calls the gateway again with the same idempotency key and gets the same
// authorization, never a second one.
func (h *Handler) paymentRequested(ctx context.Context, tx pgx.Tx, m *eventsv1.PaymentRequested) error {
	orderID, err := parseOrderID(m.GetOrderId())
	if err != nil {
		return rabbit.Permanent(fmt.Errorf("PaymentRequested: %w", err))
	}
	log := h.log().With("order_id", orderID)
	if err := postgres.LockOrder(ctx, tx, orderID); err != nil {
		return err
	}
	switch existing, err := postgres.ByOrder(ctx, tx, orderID); {
	case err == nil:
		// A duplicate request, or the order was voided before its
		// payment ran: either way nothing is charged.
		log.InfoContext(ctx, "payment already handled; ignoring request", "status", existing.Status)
		return nil
	case !errors.Is(err, payment.ErrNotFound):
		return err
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
		return h.record(ctx, tx, p)
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
	err = h.retry(ctx, "authorize", log, func() error {
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
	return h.record(ctx, tx, p)
}

// record inserts p and its PaymentAuthorized or PaymentDeclined event.
func (h *Handler) record(ctx context.Context, tx pgx.Tx, p *payment.Payment) error {
	if err := postgres.Insert(ctx, tx, p); err != nil {
		return err
	}
	var msg proto.Message
	var key string
	switch p.Status {
	case payment.StatusAuthorized:
		key = eventsv1.RoutingKeyPaymentAuthorized
		msg = &eventsv1.PaymentAuthorized{
			OrderId:      p.OrderID.String(),
			PaymentId:    p.ID.String(),
			AmountCents:  p.AmountCents,
			Currency:     p.Currency,
			AuthorizedAt: timestamppb.New(p.CreatedAt),
		}
	case payment.StatusDeclined:
		key = eventsv1.RoutingKeyPaymentDeclined
		msg = &eventsv1.PaymentDeclined{
			OrderId:    p.OrderID.String(),
			PaymentId:  p.ID.String(),
			Reason:     p.DeclineReason,
			DeclinedAt: timestamppb.New(p.CreatedAt),
		}
	default:
		return nil
	}
	return publish(ctx, tx, p.OrderID, key, msg)
}

// refundRequested is saga step 7: refund an authorized payment, void an
// order whose payment has not run, and ignore the rest.
func (h *Handler) refundRequested(ctx context.Context, tx pgx.Tx, m *eventsv1.RefundRequested) error {
	orderID, err := parseOrderID(m.GetOrderId())
	if err != nil {
		return rabbit.Permanent(fmt.Errorf("RefundRequested: %w", err))
	}
	log := h.log().With("order_id", orderID)
	if err := postgres.LockOrder(ctx, tx, orderID); err != nil {
		return err
	}
	p, err := postgres.ByOrder(ctx, tx, orderID)
	switch {
	case errors.Is(err, payment.ErrNotFound):
		// The order was cancelled before its payment ran (or while the
		// payment service was down). The marker makes a later
		// PaymentRequested charge nothing.
		log.InfoContext(ctx, "refund requested before any payment; voiding the order's payment")
		return postgres.Insert(ctx, tx, &payment.Payment{
			ID:          uuid.New(),
			OrderID:     orderID,
			AmountCents: max(m.GetAmountCents(), 0),
			Currency:    m.GetCurrency(),
			Status:      payment.StatusVoided,
		})
	case err != nil:
		return err
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
	err = h.retry(ctx, "refund", log, func() error {
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
	if err := postgres.Refund(ctx, tx, r); err != nil {
		return err
	}
	log.InfoContext(ctx, "payment refunded", "payment_id", p.ID, "amount_cents", r.AmountCents)
	return publish(ctx, tx, orderID, eventsv1.RoutingKeyPaymentRefunded, &eventsv1.PaymentRefunded{
		OrderId:     orderID.String(),
		PaymentId:   p.ID.String(),
		RefundId:    r.ID.String(),
		AmountCents: r.AmountCents,
		Currency:    r.Currency,
		RefundedAt:  timestamppb.New(r.CreatedAt),
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

// publish adds msg to the outbox in tx, on the payment exchange, with the
// order as its aggregate.
func publish(ctx context.Context, tx pgx.Tx, orderID uuid.UUID, routingKey string, msg proto.Message) error {
	ev, err := outbox.NewEvent(eventsv1.ExchangePayment, routingKey, orderID.String(), msg)
	if err != nil {
		return err
	}
	return outbox.Add(ctx, tx, ev)
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
