// Package consume is the payment service's message handling: the
// payment.requests queue and the handler that decodes PaymentRequested and
// RefundRequested, has payment.Book decide them (docs/saga.md, steps 4 and
// 7) and makes the gateway calls the book asks for.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/inbox"
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

// DefaultBackoff is the wait before each retry of a transient gateway
// failure within one handler call: three attempts in all, about 300 ms. Past
// it the handler fails and the queue's delayed retries take over.
var DefaultBackoff = []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}

// Handler handles the payment.requests queue.
type Handler struct {
	// Backoff lists the waits between attempts of a gateway call that
	// failed with gateway.ErrTransient; New sets DefaultBackoff, and an
	// empty list makes one attempt.
	Backoff []time.Duration
	// Now tells the time, for checking expiry and dating events; New sets
	// time.Now.
	Now func() time.Time

	store *postgres.Store
	log   *slog.Logger
	gw    gateway.Gateway
}

// New returns the Handler that keeps payments in store and charges and
// refunds them through gw; log gets a line per decided request.
func New(store *postgres.Store, log *slog.Logger, gw gateway.Gateway) *Handler {
	return &Handler{Backoff: DefaultBackoff, Now: time.Now, store: store, log: log, gw: gw}
}

// Consumers returns the consumer of payment.requests: handle through the
// inbox, so that each message takes effect once and the requests waiting
// together commit in one transaction.
func (h *Handler) Consumers() []*rabbit.Consumer {
	return []*rabbit.Consumer{{Queue: Queue(), Batch: inbox.Handle(h.store.Pool(), QueueName, h.handle)}}
}

// handle handles a batch of messages in tx (an inbox.Handler): it locks the
// payments of their orders and has a payment.Book decide each message in
// order against them, calling the gateway where the book asks for a charge
// or a refund; the new payments, refunds and events are written in one
// round trip. It dispatches on the AMQP type: PaymentRequested and
// RefundRequested. It returns a rabbit.Permanent error for an unknown type,
// an undecodable body, a malformed order id and a gateway error that
// retrying cannot fix, and a plain error (retried later) when the database
// fails or the gateway is still failing transiently after the in-handler
// retries.
//
// The gateway is called with tx open: the per-order lock makes a
// RefundRequested for the same order wait, and the gateway's latency is
// small. If tx then fails to commit, the redelivery calls the gateway again
// with the same idempotency key and gets the same authorization, never a
// second one.
func (h *Handler) handle(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
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
	locked, err := h.store.Lock(ctx, tx, orders)
	if err != nil {
		return err
	}
	book := payment.NewBook(locked)
	for i, msg := range msgs {
		log := h.log.With("order_id", orders[i])
		var err error
		switch m := msg.(type) {
		case *eventsv1.PaymentRequested:
			err = h.pay(batch[i].Ctx, log, book, paymentRequest(orders[i], m))
		case *eventsv1.RefundRequested:
			err = h.refund(batch[i].Ctx, log, book, payment.RefundRequest{OrderID: orders[i], AmountCents: m.GetAmountCents(), Currency: m.GetCurrency()})
		}
		if err != nil {
			return err
		}
	}
	return h.store.Save(ctx, tx, postgres.Changes{Payments: book.Payments(), Refunds: book.Refunds(), Events: book.Events()})
}

func paymentRequest(orderID uuid.UUID, m *eventsv1.PaymentRequested) payment.Request {
	r := payment.Request{
		OrderID:     orderID,
		CustomerID:  m.GetCustomerId(),
		AmountCents: m.GetAmountCents(),
		Currency:    m.GetCurrency(),
		Method:      m.GetPaymentMethod(),
	}
	// An unset expires_at is no deadline, not the Unix epoch AsTime makes
	// of it.
	if exp := m.GetExpiresAt(); exp != nil {
		r.ExpiresAt = exp.AsTime()
	}
	return r
}

// pay is saga step 4: the book decides r, and the gateway is asked only
// when the book wants a charge.
func (h *Handler) pay(ctx context.Context, log *slog.Logger, book *payment.Book, r payment.Request) error {
	d, err := book.RequestPayment(r, h.Now())
	if err != nil {
		return err
	}
	switch d.Action {
	case payment.ActionIgnore:
		log.InfoContext(ctx, "payment already handled; ignoring request", "status", d.Payment.Status)
		return nil
	case payment.ActionExpire:
		log.InfoContext(ctx, "payment request expired; declining without calling the gateway", "expires_at", r.ExpiresAt)
		return nil
	}
	res, err := retry(ctx, log, h.Backoff, "authorize", func() (gateway.AuthorizeResult, error) {
		return h.gw.Authorize(ctx, d.Authorization)
	})
	if err != nil {
		return err
	}
	p, err := book.Authorized(d, res, h.Now())
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "payment decided", "status", p.Status, "reason", p.DeclineReason, "amount_cents", p.AmountCents)
	return nil
}

// refund is saga step 7: the book decides r, and the gateway is asked only
// when the book wants a refund.
func (h *Handler) refund(ctx context.Context, log *slog.Logger, book *payment.Book, r payment.RefundRequest) error {
	d, err := book.RequestRefund(r)
	if err != nil {
		return err
	}
	switch d.Action {
	case payment.ActionVoid:
		log.InfoContext(ctx, "refund requested before any payment; voiding the order's payment")
		return nil
	case payment.ActionIgnore:
		log.InfoContext(ctx, "nothing to refund", "status", d.Payment.Status)
		return nil
	}
	res, err := retry(ctx, log, h.Backoff, "refund", func() (gateway.RefundResult, error) {
		return h.gw.Refund(ctx, d.Refund)
	})
	if err != nil {
		return err
	}
	refund, err := book.Refunded(d, res, h.Now())
	if err != nil {
		return err
	}
	log.InfoContext(ctx, "payment refunded", "payment_id", refund.PaymentID, "amount_cents", refund.AmountCents)
	return nil
}

// retry runs call up to len(backoff)+1 times while it fails with
// gateway.ErrTransient, waiting backoff[i] before attempt i+2. It returns
// call's result on success; the last error when the attempts are used up
// or ctx ended, for the queue to retry later; and a rabbit.Permanent error
// for a failure that is not transient.
func retry[T any](ctx context.Context, log *slog.Logger, backoff []time.Duration, op string, call func() (T, error)) (T, error) {
	for attempt := 0; ; attempt++ {
		res, err := call()
		switch {
		case err == nil:
			return res, nil
		case !transient(err):
			return res, rabbit.Permanent(fmt.Errorf("gateway %s: %w", op, err))
		case attempt >= len(backoff):
			return res, fmt.Errorf("gateway %s: still failing after %d attempts: %w", op, attempt+1, err)
		}
		log.WarnContext(ctx, "gateway call failed; retrying", "op", op, "attempt", attempt+1, "error", err)
		t := time.NewTimer(backoff[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return res, fmt.Errorf("gateway %s: %w (waiting to retry: %w)", op, err, ctx.Err())
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

func parseOrderID(s string) (uuid.UUID, error) {
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, fmt.Errorf("%w: %q", payment.ErrInvalidOrderID, s)
	}
	return id, nil
}
