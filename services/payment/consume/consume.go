// Package consume is the payment service's message handling: the
// payment.requests queue and the handler that decodes PaymentRequested and
// RefundRequested, has payment.Book decide them (docs/saga.md, steps 4 and
// 7) and makes the gateway calls the book asks for. No database
// transaction or lock is held across a gateway call: a call is claimed in
// one short transaction and its answer recorded in another (see
// callGateway).
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/inbox"
	"github.com/orderly/orderly/pkg/pg"
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

// Consumers returns the consumer of payment.requests: the gateway calls of
// a batch are made first, outside any transaction (callGateway), then the
// messages are recorded through the inbox, so that each takes effect once
// and those waiting together commit in one transaction.
func (h *Handler) Consumers() []*rabbit.Consumer {
	return []*rabbit.Consumer{{Queue: Queue(), Batch: h.batchHandler(inbox.Handle(h.store.Pool(), QueueName, h.handle))}}
}

// batchHandler returns the handler of a batch: callGateway on the messages
// it can decode, then record (the inbox) on those that did not fail.
func (h *Handler) batchHandler(record rabbit.BatchHandler) rabbit.BatchHandler {
	return func(ctx context.Context, batch []rabbit.Delivery) []error {
		errs := make([]error, len(batch))
		reqs := make([]request, 0, len(batch))
		for i, d := range batch {
			// A message the inbox will refuse (no message id) must not
			// be charged first; inbox.Handle gives it its error.
			if _, err := uuid.Parse(d.MessageId); err != nil {
				continue
			}
			r, err := decode(d)
			if err != nil {
				errs[i] = err
				continue
			}
			r.at = i
			if r.ctx == nil {
				r.ctx = ctx
			}
			reqs = append(reqs, r)
		}
		for k, err := range h.callGateway(ctx, reqs) {
			errs[reqs[k].at] = err
		}
		rest := make([]rabbit.Delivery, 0, len(batch))
		at := make([]int, 0, len(batch))
		for i, d := range batch {
			if errs[i] == nil {
				rest, at = append(rest, d), append(at, i)
			}
		}
		if len(rest) > 0 {
			for k, err := range record(ctx, rest) {
				errs[at[k]] = err
			}
		}
		return errs
	}
}

// request is a decoded message of payment.requests: a PaymentRequested
// (pay) or a RefundRequested (refund).
type request struct {
	order  uuid.UUID
	pay    *payment.Request
	refund *payment.RefundRequest
	ctx    context.Context // the delivery's, with its trace
	at     int             // its index in the batch
}

// decode returns d as a request, or a rabbit.Permanent error for an unknown
// type, an undecodable body, a malformed order id, a negative amount or an
// invalid expires_at.
func decode(d rabbit.Delivery) (request, error) {
	msg, err := eventsv1.Unmarshal(d.Type, d.Body)
	if err != nil {
		return request{}, rabbit.Permanent(err)
	}
	r := request{ctx: d.Ctx}
	var raw string
	switch m := msg.(type) {
	case *eventsv1.PaymentRequested:
		raw = m.GetOrderId()
		r.pay = &payment.Request{
			CustomerID:  m.GetCustomerId(),
			AmountCents: m.GetAmountCents(),
			Currency:    m.GetCurrency(),
			Method:      m.GetPaymentMethod(),
		}
		// An unset expires_at is no deadline, not the Unix epoch AsTime
		// makes of it.
		if exp := m.GetExpiresAt(); exp != nil {
			if err := exp.CheckValid(); err != nil {
				return request{}, rabbit.Permanent(fmt.Errorf("%s: expires_at: %w", d.Type, err))
			}
			r.pay.ExpiresAt = exp.AsTime()
		}
	case *eventsv1.RefundRequested:
		raw = m.GetOrderId()
		r.refund = &payment.RefundRequest{AmountCents: m.GetAmountCents(), Currency: m.GetCurrency()}
	default:
		return request{}, rabbit.Permanent(fmt.Errorf("payment.requests does not handle %s", d.Type))
	}
	id, err := parseOrderID(raw)
	if err != nil {
		return request{}, rabbit.Permanent(fmt.Errorf("%s: %w", d.Type, err))
	}
	r.order = id
	amount := int64(0)
	if r.pay != nil {
		r.pay.OrderID, amount = id, r.pay.AmountCents
	} else {
		r.refund.OrderID, amount = id, r.refund.AmountCents
	}
	// The gateway would be asked to charge or refund it; the payments
	// table refuses it only after the call.
	if amount < 0 {
		return request{}, rabbit.Permanent(fmt.Errorf("%s: amount_cents %d is negative", d.Type, amount))
	}
	return r, nil
}

// decide has b decide r at now.
func (r request) decide(b *payment.Book, now time.Time) (payment.Decision, error) {
	if r.pay != nil {
		return b.RequestPayment(*r.pay, now)
	}
	return b.RequestRefund(*r.refund)
}

// errCallDue is the (transient) error of a message that, when recorded,
// needs a gateway call after all: the payment changed after callGateway
// (another replica claimed a call). A retry makes the call first.
var errCallDue = errors.New("a gateway call is due; the message is retried to make it")

// handle records a batch of messages in tx (an inbox.Handler), after
// callGateway made the gateway calls they need: it locks the payments of
// their orders and has a payment.Book decide each message in order against
// them (an expired request is declined, a refund before any payment voids
// the order, a duplicate is ignored); the new payments and events are
// written in one round trip. It returns a rabbit.Permanent error for an
// undecodable message, errCallDue for one that needs a gateway call, and a
// plain error (retried later) when the database fails.
func (h *Handler) handle(ctx context.Context, tx pgx.Tx, batch []rabbit.Delivery) error {
	reqs := make([]request, len(batch))
	orders := make([]uuid.UUID, len(batch))
	for i, d := range batch {
		r, err := decode(d)
		if err != nil {
			return err
		}
		reqs[i], orders[i] = r, r.order
	}
	locked, err := h.store.Lock(ctx, tx, orders)
	if err != nil {
		return err
	}
	book := payment.NewBook(locked)
	for _, r := range reqs {
		d, err := r.decide(book, h.Now())
		if err != nil {
			return err
		}
		log := h.log.With("order_id", r.order)
		switch d.Action {
		case payment.ActionAuthorize, payment.ActionRefund:
			return fmt.Errorf("order %s: %w", r.order, errCallDue)
		case payment.ActionIgnore:
			// The usual end of a request whose call callGateway made.
			log.DebugContext(r.ctx, "nothing more to do", "status", d.Payment.Status)
		case payment.ActionExpire:
			log.InfoContext(r.ctx, "payment request expired; declining without calling the gateway", "expires_at", r.pay.ExpiresAt)
		case payment.ActionVoid:
			log.InfoContext(r.ctx, "refund requested before any payment; voiding the order's payment")
		}
	}
	return h.store.Save(ctx, tx, postgres.ChangesOf(book))
}

// call is a gateway call a request needs, and how it went.
type call struct {
	req    int // the index of the request that needs it
	d      payment.Decision
	auth   gateway.AuthorizeResult
	refund gateway.RefundResult
	err    error
}

// callGateway makes the gateway calls that reqs (a batch's messages, in
// queue order) need before they can be recorded, with no transaction and
// no lock held across any call, in rounds of three steps:
//
//   - claim, in one short transaction: each order's requests are decided
//     in order against its payment up to the first that needs a call,
//     which is claimed (the payment becomes authorizing or refunding). A
//     request that changes the payment without a call (a void, an expiry)
//     ends its order's round: it and the order's later requests are
//     decided, and recorded, by handle;
//   - the calls, each with the in-handler retries of transient failures;
//   - record the answers, in another short transaction: authorized,
//     declined or refunded, with their events. An answer recorded already
//     (another handler resumed the same call) is left alone; a call the
//     gateway refused for good is released.
//
// The requests of the orders that had a call are decided again in the next
// round, until no call is due. It returns, by index into reqs, the error of
// each request that cannot be recorded now: the call's failure, for the
// request that needed it and its order's later requests (a transient one
// leaves the claim for the retry to resume), or the database's for all.
func (h *Handler) callGateway(ctx context.Context, reqs []request) []error {
	errs := make([]error, len(reqs))
	pending := make([]int, len(reqs))
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		calls, next, err := h.claim(ctx, reqs, pending)
		if err == nil && len(calls) == 0 {
			return errs
		}
		if err == nil {
			for _, c := range calls {
				h.callOnce(reqs[c.req], c)
			}
			err = h.record(ctx, reqs, calls)
		}
		if err != nil {
			for _, i := range pending {
				errs[i] = err
			}
			return errs
		}
		failed := make(map[uuid.UUID]error)
		for _, c := range calls {
			if c.err != nil {
				failed[reqs[c.req].order] = c.err
				errs[c.req] = c.err
			}
		}
		pending = pending[:0]
		for _, i := range next {
			switch err, ok := failed[reqs[i].order]; {
			case errs[i] != nil:
			case ok && !rabbit.IsPermanent(err):
				// Behind a call still failing: recorded later, in
				// order, when the retry has made it.
				errs[i] = fmt.Errorf("order %s: an earlier request is not done: %w", reqs[i].order, err)
			default:
				pending = append(pending, i)
			}
		}
	}
	return errs
}

// claim decides, in one transaction, the pending requests (indexes into
// reqs, in queue order) of each order up to the first that needs a gateway
// call, and claims the calls. It returns the calls and the requests to
// decide again after them: those of the orders that have a call.
func (h *Handler) claim(ctx context.Context, reqs []request, pending []int) (calls []*call, next []int, err error) {
	err = pg.Transact(ctx, h.store.Pool(), func(tx pgx.Tx) error {
		calls, next = nil, nil
		orders := make([]uuid.UUID, len(pending))
		for k, i := range pending {
			orders[k] = reqs[i].order
		}
		locked, err := h.store.Lock(ctx, tx, orders)
		if err != nil {
			return err
		}
		var (
			books   = make(map[uuid.UUID]*payment.Book)
			called  = make(map[uuid.UUID]bool) // has a call this round
			settled = make(map[uuid.UUID]bool) // left to handle
			claims  postgres.Changes
		)
		for _, i := range pending {
			r := reqs[i]
			switch {
			case called[r.order]:
				next = append(next, i)
				continue
			case settled[r.order]:
				continue
			}
			// A book per order: its changes are then exactly the claim,
			// with nothing of the decisions left to handle.
			b, ok := books[r.order]
			if !ok {
				mine := make(map[uuid.UUID]payment.Payment, 1)
				if p, ok := locked[r.order]; ok {
					mine[r.order] = p
				}
				b = payment.NewBook(mine)
				books[r.order] = b
			}
			d, err := r.decide(b, h.Now())
			if err != nil {
				return err
			}
			switch d.Action {
			case payment.ActionIgnore:
			case payment.ActionAuthorize, payment.ActionRefund:
				calls = append(calls, &call{req: i, d: d})
				next = append(next, i)
				called[r.order] = true
				claims = claims.With(postgres.ChangesOf(b))
			default:
				settled[r.order] = true
			}
		}
		return h.store.Save(ctx, tx, claims)
	})
	return calls, next, err
}

// callOnce makes c's gateway call for r, with the in-handler retries, and
// keeps its answer or error in c.
func (h *Handler) callOnce(r request, c *call) {
	log := h.log.With("order_id", r.order)
	if c.d.Resume {
		log.InfoContext(r.ctx, "resuming a gateway call whose answer is not recorded", "action", c.d.Action)
	}
	switch c.d.Action {
	case payment.ActionAuthorize:
		c.auth, c.err = retry(r.ctx, log, h.Backoff, "authorize", func() (gateway.AuthorizeResult, error) {
			return h.gw.Authorize(r.ctx, c.d.Authorization)
		})
	case payment.ActionRefund:
		c.refund, c.err = retry(r.ctx, log, h.Backoff, "refund", func() (gateway.RefundResult, error) {
			return h.gw.Refund(r.ctx, c.d.Refund)
		})
	}
}

// record writes, in one transaction, the answers of calls: the payments
// authorized, declined or refunded, with their events, and the claims of
// the calls the gateway refused for good released. A call still failing
// transiently keeps its claim.
func (h *Handler) record(ctx context.Context, reqs []request, calls []*call) error {
	return pg.Transact(ctx, h.store.Pool(), func(tx pgx.Tx) error {
		orders := make([]uuid.UUID, len(calls))
		for k, c := range calls {
			orders[k] = c.d.Payment.OrderID
		}
		locked, err := h.store.Lock(ctx, tx, orders)
		if err != nil {
			return err
		}
		book := payment.NewBook(locked)
		for _, c := range calls {
			r := reqs[c.req]
			log := h.log.With("order_id", r.order)
			var err error
			switch {
			case c.err != nil && !rabbit.IsPermanent(c.err):
				continue
			case c.err != nil:
				err = book.Release(c.d)
			case c.d.Action == payment.ActionAuthorize:
				var p payment.Payment
				if p, err = book.Authorized(c.d, c.auth, h.Now()); err == nil {
					log.InfoContext(r.ctx, "payment decided", "status", p.Status, "reason", p.DeclineReason, "amount_cents", p.AmountCents)
				}
			default:
				var rf payment.Refund
				if rf, err = book.Refunded(c.d, c.refund, h.Now()); err == nil {
					log.InfoContext(r.ctx, "payment refunded", "payment_id", rf.PaymentID, "amount_cents", rf.AmountCents)
				}
			}
			if errors.Is(err, payment.ErrSettled) {
				// Another handler resumed the same call and recorded
				// the same answer (the idempotency key's).
				continue
			}
			if err != nil {
				return err
			}
		}
		return h.store.Save(ctx, tx, postgres.ChangesOf(book))
	})
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
		log.WarnContext(ctx, "gateway call failed; retrying", "op", op, "attempt", attempt+1, "err", err)
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
