package consume

import (
	"testing"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
)

// FuzzDecode feeds arbitrary AMQP types and bodies to decode. Whatever the
// input, it must not panic, every refusal must be rabbit.Permanent
// (dead-lettered at once rather than retried for a minute), and what it
// accepts must be whole: a payment or a refund request, not both, for a
// non-negative amount and the order id it names, a payment's expiry unset
// or a valid time, and no text PostgreSQL would refuse or the gateway
// would be sent.
func FuzzDecode(f *testing.F) {
	const id = "0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d"
	now := timestamppb.Now()
	rabbittest.AddSeeds(f,
		&eventsv1.PaymentRequested{OrderId: id, CustomerId: "alice", AmountCents: 2598, Currency: "EUR", PaymentMethod: "pm_card_ok",
			IdempotencyKey: id, RequestedAt: now, ExpiresAt: now},
		&eventsv1.PaymentRequested{OrderId: id, AmountCents: -1, ExpiresAt: &timestamppb.Timestamp{Seconds: 1 << 40}},
		&eventsv1.PaymentRequested{OrderId: id, CustomerId: "alice", PaymentMethod: "pm_\x00"},
		&eventsv1.PaymentRequested{},
		&eventsv1.RefundRequested{OrderId: id, PaymentId: "pay-1", AmountCents: 2598, Currency: "EUR",
			Reason: eventsv1.CancelReason_CANCEL_REASON_CUSTOMER_REQUEST, IdempotencyKey: id, RequestedAt: now},
		&eventsv1.RefundRequested{OrderId: "not-a-uuid", AmountCents: -5},
		&eventsv1.OrderPlaced{OrderId: id},
	)
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		r, err := decode(rabbit.Delivery{Delivery: &amqp.Delivery{Type: typ, Body: body}})
		if err != nil {
			if !rabbit.IsPermanent(err) {
				t.Fatalf("decode(%q, %x) = %v, not permanent", typ, body, err)
			}
			return
		}
		var (
			orderID uuid.UUID
			amount  int64
			texts   []string
		)
		switch {
		case r.pay != nil && r.refund == nil:
			p := r.pay
			orderID, amount, texts = p.OrderID, p.AmountCents, []string{p.CustomerID, p.Currency, p.Method}
			if !p.ExpiresAt.IsZero() && !timestamppb.New(p.ExpiresAt).IsValid() {
				t.Fatalf("decode(%q, %x) accepted expiry %v", typ, body, p.ExpiresAt)
			}
		case r.refund != nil && r.pay == nil:
			orderID, amount, texts = r.refund.OrderID, r.refund.AmountCents, []string{r.refund.Currency}
		default:
			t.Fatalf("decode(%q, %x) accepted %+v", typ, body, r)
		}
		if orderID != r.order || amount < 0 {
			t.Fatalf("decode(%q, %x) accepted order %s (request for %s), amount %d", typ, body, r.order, orderID, amount)
		}
		for _, s := range texts {
			if err := httpx.CheckText(s); err != nil {
				t.Fatalf("decode(%q, %x) accepted %q: %v", typ, body, s, err)
			}
		}
	})
}
