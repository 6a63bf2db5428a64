package payment_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/outbox"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/payment/gateway"
	"github.com/orderly/orderly/services/payment/payment"
)

var now = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// existing returns a payment of orderID as the store would load it.
func existing(orderID uuid.UUID, status payment.Status) payment.Payment {
	p := payment.Payment{
		ID: uuid.New(), OrderID: orderID, CustomerID: "customer-1", AmountCents: 4200, Currency: "EUR",
		Method: gateway.MethodOK, Status: status, CreatedAt: now.Add(-time.Minute), UpdatedAt: now.Add(-time.Minute),
	}
	switch status {
	case payment.StatusAuthorized, payment.StatusRefunded:
		p.GatewayReference = "sim_auth_1"
	case payment.StatusDeclined:
		p.DeclineReason = gateway.ReasonCardDeclined
	}
	return p
}

// decided returns the payment request(orderID, …) records, without its id.
func decided(orderID uuid.UUID, status payment.Status, reason, reference string) *payment.Payment {
	return &payment.Payment{
		OrderID: orderID, CustomerID: "customer-1", AmountCents: 4200, Currency: "EUR", Method: gateway.MethodOK,
		Status: status, DeclineReason: reason, GatewayReference: reference,
	}
}

func request(orderID uuid.UUID, expiresAt time.Time) payment.Request {
	return payment.Request{
		OrderID: orderID, CustomerID: "customer-1", AmountCents: 4200, Currency: "EUR",
		Method: gateway.MethodOK, ExpiresAt: expiresAt,
	}
}

// decode returns the book's events as messages, checking that each is
// about its order.
func decode(tb testing.TB, evs []outbox.Event) []proto.Message {
	tb.Helper()
	var out []proto.Message
	for _, ev := range evs {
		msg, err := eventsv1.Unmarshal(ev.Type, ev.Payload)
		if err != nil {
			tb.Fatalf("decode %s: %v", ev.Type, err)
		}
		type aboutOrder interface{ GetOrderId() string }
		if o, ok := msg.(aboutOrder); !ok || o.GetOrderId() != ev.AggregateID {
			tb.Errorf("%s has aggregate id %s, want its order", ev.Type, ev.AggregateID)
		}
		out = append(out, msg)
	}
	return out
}

// paymentIDs are left out of event comparisons: they are new random ids,
// checked against the decided payment instead.
var paymentIDs = cmp.Options{
	protocmp.Transform(),
	protocmp.IgnoreFields(&eventsv1.PaymentAuthorized{}, "payment_id"),
	protocmp.IgnoreFields(&eventsv1.PaymentDeclined{}, "payment_id"),
}

// bookOf returns a book that holds given (nil: nothing).
func bookOf(given *payment.Payment) *payment.Book {
	payments := map[uuid.UUID]payment.Payment{}
	if given != nil {
		payments[given.OrderID] = *given
	}
	return payment.NewBook(payments)
}

// checkDecision stops the test unless d has wantAction, and checks that d
// carries the payment the book held (given), if any.
func checkDecision(tb testing.TB, d payment.Decision, wantAction payment.Action, given *payment.Payment) {
	tb.Helper()
	if d.Action != wantAction {
		tb.Fatalf("action = %s, want %s", d.Action, wantAction)
	}
	if given != nil && d.Payment != *given {
		tb.Errorf("decision's payment = %+v, want the one found, %+v", d.Payment, *given)
	}
}

// recorded is what Book.Payments should return when a request recorded
// want (nil: nothing) as the payment with id.
func recorded(want *payment.Payment, id uuid.UUID) []*payment.Payment {
	if want == nil {
		return nil
	}
	w := *want
	w.ID = id
	return []*payment.Payment{&w}
}

func TestRequestPayment(t *testing.T) {
	t.Parallel()
	order := uuid.New()
	at := timestamppb.New(now)
	tests := []struct {
		name      string
		given     *payment.Payment // the order's payment before the request
		expiresAt time.Time
		answer    gateway.AuthorizeResult // the gateway's, if asked
		// wantAction is the book's decision; with ActionAuthorize the
		// gateway is asked and its answer recorded.
		wantAction payment.Action
		// want is the payment the request records (nil: none), without
		// its id.
		want       *payment.Payment
		wantEvents []proto.Message
	}{
		{
			name:       "duplicate request of an authorized order",
			given:      new(existing(order, payment.StatusAuthorized)),
			expiresAt:  now.Add(time.Minute),
			wantAction: payment.ActionIgnore,
		},
		{
			name:       "duplicate request of a declined order, even past its deadline",
			given:      new(existing(order, payment.StatusDeclined)),
			expiresAt:  now.Add(-time.Second),
			wantAction: payment.ActionIgnore,
		},
		{
			name:       "order voided before its payment ran",
			given:      new(existing(order, payment.StatusVoided)),
			expiresAt:  now.Add(time.Minute),
			wantAction: payment.ActionIgnore,
		},
		{
			name:       "expired",
			expiresAt:  now.Add(-time.Second),
			wantAction: payment.ActionExpire,
			want:       decided(order, payment.StatusDeclined, payment.ReasonExpired, ""),
			wantEvents: []proto.Message{&eventsv1.PaymentDeclined{OrderId: order.String(), Reason: "expired", DeclinedAt: at}},
		},
		{
			name:       "expiring this instant",
			expiresAt:  now,
			wantAction: payment.ActionExpire,
			want:       decided(order, payment.StatusDeclined, payment.ReasonExpired, ""),
			wantEvents: []proto.Message{&eventsv1.PaymentDeclined{OrderId: order.String(), Reason: "expired", DeclinedAt: at}},
		},
		{
			name:       "approved",
			expiresAt:  now.Add(time.Nanosecond),
			answer:     gateway.AuthorizeResult{Approved: true, Reference: "sim_auth_2"},
			wantAction: payment.ActionAuthorize,
			want:       decided(order, payment.StatusAuthorized, "", "sim_auth_2"),
			wantEvents: []proto.Message{&eventsv1.PaymentAuthorized{OrderId: order.String(), AmountCents: 4200, Currency: "EUR", AuthorizedAt: at}},
		},
		{
			name:       "approved without a deadline",
			answer:     gateway.AuthorizeResult{Approved: true, Reference: "sim_auth_2"},
			wantAction: payment.ActionAuthorize,
			want:       decided(order, payment.StatusAuthorized, "", "sim_auth_2"),
			wantEvents: []proto.Message{&eventsv1.PaymentAuthorized{OrderId: order.String(), AmountCents: 4200, Currency: "EUR", AuthorizedAt: at}},
		},
		{
			name:       "declined",
			expiresAt:  now.Add(time.Minute),
			answer:     gateway.AuthorizeResult{DeclineReason: gateway.ReasonCardDeclined},
			wantAction: payment.ActionAuthorize,
			want:       decided(order, payment.StatusDeclined, gateway.ReasonCardDeclined, ""),
			wantEvents: []proto.Message{&eventsv1.PaymentDeclined{OrderId: order.String(), Reason: gateway.ReasonCardDeclined, DeclinedAt: at}},
		},
		{
			name:       "declined without a reason",
			expiresAt:  now.Add(time.Minute),
			answer:     gateway.AuthorizeResult{},
			wantAction: payment.ActionAuthorize,
			want:       decided(order, payment.StatusDeclined, "declined", ""),
			wantEvents: []proto.Message{&eventsv1.PaymentDeclined{OrderId: order.String(), Reason: "declined", DeclinedAt: at}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bookOf(tt.given)
			d, err := b.RequestPayment(request(order, tt.expiresAt), now)
			if err != nil {
				t.Fatalf("RequestPayment: %v", err)
			}
			checkDecision(t, d, tt.wantAction, tt.given)
			var wantAuth gateway.AuthorizeRequest
			if d.Action == payment.ActionAuthorize {
				// One order, one authorization: the key is the order id.
				wantAuth = gateway.AuthorizeRequest{IdempotencyKey: order.String(), AmountCents: 4200, Currency: "EUR", PaymentMethod: gateway.MethodOK}
				if _, err := b.Authorized(d, tt.answer, now); err != nil {
					t.Fatalf("Authorized: %v", err)
				}
			}
			if d.Authorization != wantAuth {
				t.Errorf("authorization = %+v, want %+v", d.Authorization, wantAuth)
			}

			if diff := cmp.Diff(recorded(tt.want, d.Payment.ID), b.Payments(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("payments (-want +got):\n%s", diff)
			}
			events := decode(t, b.Events())
			if diff := cmp.Diff(tt.wantEvents, events, paymentIDs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			for _, ev := range events {
				if id := ev.(interface{ GetPaymentId() string }).GetPaymentId(); id != d.Payment.ID.String() {
					t.Errorf("event's payment_id = %s, want the payment's, %s", id, d.Payment.ID)
				}
			}
			if len(b.Refunds()) != 0 {
				t.Errorf("refunds = %+v, want none", b.Refunds())
			}
		})
	}
}

func TestRequestRefund(t *testing.T) {
	t.Parallel()
	order := uuid.New()
	tests := []struct {
		name   string
		given  *payment.Payment // the order's payment before the request
		amount int64            // the request's
		// wantAction is the book's decision; with ActionRefund the gateway
		// is asked and refunds with reference sim_refund_1.
		wantAction payment.Action
		// wantVoided is the voided payment recorded (nil: none), without
		// its id.
		wantVoided *payment.Payment
	}{
		{
			name:       "before any payment",
			amount:     3100,
			wantAction: payment.ActionVoid,
			wantVoided: &payment.Payment{OrderID: order, AmountCents: 3100, Currency: "EUR", Status: payment.StatusVoided},
		},
		{
			name:       "before any payment, of a negative amount",
			amount:     -5,
			wantAction: payment.ActionVoid,
			wantVoided: &payment.Payment{OrderID: order, AmountCents: 0, Currency: "EUR", Status: payment.StatusVoided},
		},
		{name: "of a declined payment", given: new(existing(order, payment.StatusDeclined)), amount: 4200, wantAction: payment.ActionIgnore},
		{name: "of a voided payment", given: new(existing(order, payment.StatusVoided)), amount: 4200, wantAction: payment.ActionIgnore},
		{name: "of a refunded payment", given: new(existing(order, payment.StatusRefunded)), amount: 4200, wantAction: payment.ActionIgnore},
		{name: "of an authorized payment", given: new(existing(order, payment.StatusAuthorized)), amount: 4200, wantAction: payment.ActionRefund},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bookOf(tt.given)
			d, err := b.RequestRefund(payment.RefundRequest{OrderID: order, AmountCents: tt.amount, Currency: "EUR"})
			if err != nil {
				t.Fatalf("RequestRefund: %v", err)
			}
			if d.Action == payment.ActionRefund {
				// The payment is refunding: the call is claimed.
				claimed := *tt.given
				claimed.Status = payment.StatusRefunding
				checkDecision(t, d, tt.wantAction, &claimed)
				if diff := cmp.Diff([]*payment.Update{{Payment: claimed, From: payment.StatusAuthorized}}, b.Updates()); diff != "" {
					t.Errorf("updates (-want +got):\n%s", diff)
				}
			} else {
				checkDecision(t, d, tt.wantAction, tt.given)
			}
			if diff := cmp.Diff(recorded(tt.wantVoided, d.Payment.ID), b.Payments(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("payments (-want +got):\n%s", diff)
			}

			if d.Action != payment.ActionRefund {
				if d.Refund != (gateway.RefundRequest{}) || len(b.Refunds()) != 0 || len(b.Events()) != 0 {
					t.Errorf("refund request %+v, refunds %+v, %d events; want none", d.Refund, b.Refunds(), len(b.Events()))
				}
				return
			}
			p := *tt.given
			// The whole authorization, under the refund's own key.
			wantReq := gateway.RefundRequest{IdempotencyKey: "refund:" + order.String(), Reference: "sim_auth_1", AmountCents: 4200, Currency: "EUR"}
			if d.Refund != wantReq {
				t.Errorf("refund request = %+v, want %+v", d.Refund, wantReq)
			}
			r, err := b.Refunded(d, gateway.RefundResult{Reference: "sim_refund_1"}, now)
			if err != nil {
				t.Fatalf("Refunded: %v", err)
			}
			wantRefund := &payment.Refund{ID: r.ID, PaymentID: p.ID, AmountCents: 4200, Currency: "EUR", GatewayReference: "sim_refund_1"}
			if diff := cmp.Diff([]*payment.Refund{wantRefund}, b.Refunds()); diff != "" {
				t.Errorf("refunds (-want +got):\n%s", diff)
			}
			wantEvents := []proto.Message{&eventsv1.PaymentRefunded{
				OrderId: order.String(), PaymentId: p.ID.String(), RefundId: r.ID.String(),
				AmountCents: 4200, Currency: "EUR", RefundedAt: timestamppb.New(now),
			}}
			if diff := cmp.Diff(wantEvents, decode(t, b.Events()), protocmp.Transform()); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			// The order's payment is refunded now: a second request
			// refunds nothing.
			again, err := b.RequestRefund(payment.RefundRequest{OrderID: order, AmountCents: 4200, Currency: "EUR"})
			if err != nil || again.Action != payment.ActionIgnore || again.Payment.Status != payment.StatusRefunded {
				t.Errorf("second RequestRefund = %+v, %v; want ActionIgnore of the refunded payment", again, err)
			}
		})
	}
}

// gatewayAnswers answers like a gateway that approves every authorization
// and every refund.
func gatewayAnswers(tb testing.TB, b *payment.Book, d payment.Decision) {
	tb.Helper()
	var err error
	switch d.Action {
	case payment.ActionAuthorize:
		_, err = b.Authorized(d, gateway.AuthorizeResult{Approved: true, Reference: "auth:" + d.Authorization.IdempotencyKey}, now)
	case payment.ActionRefund:
		_, err = b.Refunded(d, gateway.RefundResult{Reference: d.Refund.IdempotencyKey}, now)
	}
	if err != nil {
		tb.Fatalf("%s: %v", d.Action, err)
	}
}

// A batch is decided request by request, in order, against the payments as
// the requests before it left them.
func TestBookDecidesABatchInOrder(t *testing.T) {
	t.Parallel()
	charged, voided := uuid.New(), uuid.New()
	steps := []struct {
		pay        *payment.Request
		refund     *payment.RefundRequest
		wantAction payment.Action
	}{
		{pay: new(request(charged, now.Add(time.Minute))), wantAction: payment.ActionAuthorize},
		{pay: new(request(charged, now.Add(time.Minute))), wantAction: payment.ActionIgnore}, // a duplicate
		{refund: &payment.RefundRequest{OrderID: charged, AmountCents: 4200, Currency: "EUR"}, wantAction: payment.ActionRefund},
		{refund: &payment.RefundRequest{OrderID: charged, AmountCents: 4200, Currency: "EUR"}, wantAction: payment.ActionIgnore},
		{refund: &payment.RefundRequest{OrderID: voided, AmountCents: 800, Currency: "EUR"}, wantAction: payment.ActionVoid},
		{pay: new(request(voided, now.Add(time.Minute))), wantAction: payment.ActionIgnore}, // late, after the void
	}
	b := payment.NewBook(nil)
	var paymentID uuid.UUID
	for i, s := range steps {
		var d payment.Decision
		var err error
		if s.pay != nil {
			d, err = b.RequestPayment(*s.pay, now)
		} else {
			d, err = b.RequestRefund(*s.refund)
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if d.Action != s.wantAction {
			t.Fatalf("step %d: action = %s, want %s", i, d.Action, s.wantAction)
		}
		gatewayAnswers(t, b, d)
		if i == 0 {
			paymentID = d.Payment.ID
		}
	}

	// The charged order's payment went through the whole story in this
	// book: it is written as refunded, with its refund.
	got := b.Payments()
	if len(got) != 2 || got[0].OrderID != charged || got[0].Status != payment.StatusRefunded || got[0].ID != paymentID ||
		got[1].OrderID != voided || got[1].Status != payment.StatusVoided {
		t.Errorf("payments = %+v, want the charged order's authorized, then the voided one", got)
	}
	if r := b.Refunds(); len(r) != 1 || r[0].PaymentID != paymentID || r[0].GatewayReference != "refund:"+charged.String() {
		t.Errorf("refunds = %+v, want one of payment %s", r, paymentID)
	}
	var types []string
	for _, ev := range b.Events() {
		types = append(types, ev.Type)
	}
	if want := []string{eventsv1.TypePaymentAuthorized, eventsv1.TypePaymentRefunded}; !cmp.Equal(want, types) {
		t.Errorf("events = %v, want %v", types, want)
	}
}

// A decision takes effect once: its gateway answer cannot be recorded a
// second time.
func TestDecisionTakesEffectOnce(t *testing.T) {
	t.Parallel()
	order := uuid.New()
	b := payment.NewBook(nil)
	d, err := b.RequestPayment(request(order, time.Time{}), now)
	if err != nil || d.Action != payment.ActionAuthorize {
		t.Fatalf("RequestPayment = %+v, %v; want ActionAuthorize", d, err)
	}
	approved := gateway.AuthorizeResult{Approved: true, Reference: "sim_auth_1"}
	if _, err := b.Authorized(d, approved, now); err != nil {
		t.Fatalf("Authorized: %v", err)
	}
	if _, err := b.Authorized(d, approved, now); !errors.Is(err, payment.ErrSettled) {
		t.Errorf("second Authorized = %v, want ErrSettled", err)
	}

	r, err := b.RequestRefund(payment.RefundRequest{OrderID: order, AmountCents: 4200, Currency: "EUR"})
	if err != nil || r.Action != payment.ActionRefund {
		t.Fatalf("RequestRefund = %+v, %v; want ActionRefund", r, err)
	}
	if _, err := b.Refunded(r, gateway.RefundResult{Reference: "sim_refund_1"}, now); err != nil {
		t.Fatalf("Refunded: %v", err)
	}
	if _, err := b.Refunded(r, gateway.RefundResult{Reference: "sim_refund_1"}, now); !errors.Is(err, payment.ErrSettled) {
		t.Errorf("second Refunded = %v, want ErrSettled", err)
	}
	if err := b.Release(r); !errors.Is(err, payment.ErrSettled) {
		t.Errorf("Release of a recorded refund = %v, want ErrSettled", err)
	}
	if len(b.Payments()) != 1 || len(b.Refunds()) != 1 || len(b.Events()) != 2 {
		t.Errorf("%d payments, %d refunds, %d events; want 1, 1 and 2", len(b.Payments()), len(b.Refunds()), len(b.Events()))
	}
}

// A payment in flight (its gateway call claimed, the answer not recorded:
// the handler that made it crashed, or is still waiting) is resumed by
// whichever request finds it, with the same idempotency key, and nothing
// new is claimed.
func TestInFlightPaymentsAreResumed(t *testing.T) {
	t.Parallel()
	order := uuid.New()
	authorizing := existing(order, payment.StatusAuthorizing)
	refunding := existing(order, payment.StatusRefunding)
	refunding.GatewayReference = "sim_auth_1"
	authKey := gateway.AuthorizeRequest{IdempotencyKey: order.String(), AmountCents: 4200, Currency: "EUR", PaymentMethod: gateway.MethodOK}
	refundKey := gateway.RefundRequest{IdempotencyKey: "refund:" + order.String(), Reference: "sim_auth_1", AmountCents: 4200, Currency: "EUR"}
	refundReq := payment.RefundRequest{OrderID: order, AmountCents: 4200, Currency: "EUR"}

	tests := []struct {
		name   string
		given  payment.Payment
		decide func(*payment.Book) (payment.Decision, error)
		want   payment.Action
		resume bool
	}{
		{"payment request, charge in flight, even past its deadline", authorizing,
			func(b *payment.Book) (payment.Decision, error) {
				return b.RequestPayment(request(order, now.Add(-time.Hour)), now)
			},
			payment.ActionAuthorize, true},
		{"payment request, refund in flight", refunding,
			func(b *payment.Book) (payment.Decision, error) {
				return b.RequestPayment(request(order, time.Time{}), now)
			},
			payment.ActionIgnore, false},
		{"refund request, charge in flight: the charge first", authorizing,
			func(b *payment.Book) (payment.Decision, error) { return b.RequestRefund(refundReq) },
			payment.ActionAuthorize, true},
		{"refund request, refund in flight", refunding,
			func(b *payment.Book) (payment.Decision, error) { return b.RequestRefund(refundReq) },
			payment.ActionRefund, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bookOf(&tt.given)
			d, err := tt.decide(b)
			if err != nil {
				t.Fatal(err)
			}
			checkDecision(t, d, tt.want, &tt.given)
			if d.Resume != tt.resume {
				t.Errorf("Resume = %v, want %v", d.Resume, tt.resume)
			}
			if len(b.Payments())+len(b.Updates())+len(b.Events()) != 0 {
				t.Errorf("deciding wrote %+v, %+v, %d events; want nothing", b.Payments(), b.Updates(), len(b.Events()))
			}
			switch d.Action {
			case payment.ActionAuthorize:
				if d.Authorization != authKey {
					t.Errorf("authorization = %+v, want %+v", d.Authorization, authKey)
				}
				p, err := b.Authorized(d, gateway.AuthorizeResult{Approved: true, Reference: "sim_auth_1"}, now)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]*payment.Update{{Payment: p, From: payment.StatusAuthorizing}}, b.Updates()); diff != "" || p.Status != payment.StatusAuthorized {
					t.Errorf("updates (-want +got):\n%s", diff)
				}
			case payment.ActionRefund:
				if d.Refund != refundKey {
					t.Errorf("refund = %+v, want %+v", d.Refund, refundKey)
				}
				if _, err := b.Refunded(d, gateway.RefundResult{Reference: "sim_refund_1"}, now); err != nil {
					t.Fatal(err)
				}
				if u := b.Updates(); len(u) != 1 || u[0].From != payment.StatusRefunding || u[0].Payment.Status != payment.StatusRefunded || len(b.Refunds()) != 1 {
					t.Errorf("updates %+v, refunds %+v; want refunding → refunded and one refund", u, b.Refunds())
				}
			}
		})
	}
}

// A call the gateway refused for good is released: the payment is as it
// was before the call was claimed.
func TestRelease(t *testing.T) {
	t.Parallel()
	order := uuid.New()

	// A stored claim of a charge is deleted; a refund request then voids
	// the order, as if no charge had been tried.
	stored := existing(order, payment.StatusAuthorizing)
	b := bookOf(&stored)
	d, err := b.RequestPayment(request(order, time.Time{}), now)
	if err != nil || d.Action != payment.ActionAuthorize {
		t.Fatalf("RequestPayment = %+v, %v", d, err)
	}
	if err := b.Release(d); err != nil {
		t.Fatal(err)
	}
	if got := b.Released(); len(got) != 1 || got[0] != stored.ID {
		t.Errorf("released = %v, want [%s]", got, stored.ID)
	}
	if v, err := b.RequestRefund(payment.RefundRequest{OrderID: order, AmountCents: 4200, Currency: "EUR"}); err != nil || v.Action != payment.ActionVoid {
		t.Errorf("refund after the release = %+v, %v; want ActionVoid", v, err)
	}

	// A claim made in the same book leaves nothing to write.
	b = bookOf(nil)
	d, err = b.RequestPayment(request(order, time.Time{}), now)
	if err != nil || len(b.Payments()) != 1 || b.Payments()[0].Status != payment.StatusAuthorizing {
		t.Fatalf("RequestPayment = %+v, %v; payments %+v, want one authorizing", d, err, b.Payments())
	}
	if err := b.Release(d); err != nil || len(b.Payments())+len(b.Released()) != 0 {
		t.Errorf("Release = %v; payments %+v, released %v; want nothing", err, b.Payments(), b.Released())
	}

	// A refund in flight goes back to authorized.
	refunding := existing(order, payment.StatusRefunding)
	refunding.GatewayReference = "sim_auth_1"
	b = bookOf(&refunding)
	d, err = b.RequestRefund(payment.RefundRequest{OrderID: order, AmountCents: 4200, Currency: "EUR"})
	if err != nil || d.Action != payment.ActionRefund {
		t.Fatalf("RequestRefund = %+v, %v", d, err)
	}
	if err := b.Release(d); err != nil {
		t.Fatal(err)
	}
	if u := b.Updates(); len(u) != 1 || u[0].From != payment.StatusRefunding || u[0].Payment.Status != payment.StatusAuthorized {
		t.Errorf("updates = %+v, want refunding → authorized", u)
	}
}
