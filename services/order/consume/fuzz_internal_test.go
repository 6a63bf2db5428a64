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
	"github.com/orderly/orderly/services/order/order"
)

// FuzzDecode feeds arbitrary AMQP types and bodies to the decoders of both
// queues. Whatever the input, they must not panic, every refusal must be
// rabbit.Permanent (dead-lettered at once rather than retried for a
// minute), and what they accept must be whole: a saga step of a known
// event, or a refund with a valid time, for an order id in the canonical
// UUID form the store keys on; a product with a SKU, a currency and a
// price of at least zero; and no text PostgreSQL would refuse.
func FuzzDecode(f *testing.F) {
	const id = "0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d"
	now := timestamppb.Now()
	rabbittest.AddSeeds(f,
		&eventsv1.StockReserved{OrderId: id, ReservedAt: now},
		&eventsv1.StockRejected{OrderId: id, RejectedAt: now},
		&eventsv1.PaymentAuthorized{OrderId: id, PaymentId: "pay-1", AmountCents: 1250, Currency: "EUR", AuthorizedAt: now},
		&eventsv1.PaymentDeclined{OrderId: id, PaymentId: "pay-1", Reason: "insufficient_funds", DeclinedAt: now},
		&eventsv1.PaymentRefunded{OrderId: id, PaymentId: "pay-1", RefundId: "re-1", AmountCents: 1250, Currency: "EUR", RefundedAt: now},
		&eventsv1.PaymentRefunded{OrderId: id, PaymentId: "pay-1"},
		&eventsv1.PaymentRefunded{OrderId: id, RefundedAt: &timestamppb.Timestamp{Seconds: -1 << 62}},
		&eventsv1.StockReserved{},
		&eventsv1.StockReserved{OrderId: "not-a-uuid"},
		&eventsv1.StockRejected{OrderId: "urn:uuid:" + id},
		&eventsv1.PaymentAuthorized{OrderId: id, PaymentId: "pay\x00"},
		&eventsv1.ProductUpserted{Sku: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Version: 2, UpdatedAt: now},
		&eventsv1.ProductUpserted{Sku: "MUG-1", Currency: "EUR", PriceCents: -1},
		&eventsv1.ProductUpserted{Sku: "MUG\x00", Name: "Mug", Currency: "EUR"},
		&eventsv1.ProductUpserted{Name: "Mug", Currency: "EUR"},
		&eventsv1.OrderPlaced{OrderId: id},
	)
	f.Add(eventsv1.TypeProductUpserted, []byte{0x0a, 0x02, 'A', 0x00})
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		d := &amqp.Delivery{Type: typ, Body: body}
		if a, err := decodeAnswer(d); err != nil {
			if !rabbit.IsPermanent(err) {
				t.Fatalf("decodeAnswer(%q, %x) = %v, not permanent", typ, body, err)
			}
		} else {
			orderID, texts := a.step.OrderID, []string{a.step.PaymentID}
			if m := a.refund; m != nil {
				orderID, texts = m.GetOrderId(), []string{m.GetPaymentId(), m.GetRefundId(), m.GetCurrency()}
				if !m.GetRefundedAt().IsValid() {
					t.Fatalf("decodeAnswer(%q, %x) accepted a refund without a valid time: %v", typ, body, m)
				}
			} else if !knownAnswer[a.step.Event] {
				t.Fatalf("decodeAnswer(%q, %x) accepted step %+v", typ, body, a.step)
			}
			if u, err := uuid.Parse(orderID); err != nil || u.String() != orderID {
				t.Fatalf("decodeAnswer(%q, %x) accepted order id %q", typ, body, orderID)
			}
			for _, s := range texts {
				if err := httpx.CheckText(s); err != nil {
					t.Fatalf("decodeAnswer(%q, %x) accepted %q: %v", typ, body, s, err)
				}
			}
		}

		p, err := decodeProduct(d)
		if err != nil {
			if !rabbit.IsPermanent(err) {
				t.Fatalf("decodeProduct(%q, %x) = %v, not permanent", typ, body, err)
			}
			return
		}
		if p.SKU == "" || p.Currency == "" || p.PriceCents < 0 {
			t.Fatalf("decodeProduct(%q, %x) accepted %+v", typ, body, p)
		}
		for _, s := range []string{p.SKU, p.Name, p.Currency} {
			if err := httpx.CheckText(s); err != nil {
				t.Fatalf("decodeProduct(%q, %x) accepted %q: %v", typ, body, s, err)
			}
		}
	})
}

// knownAnswer holds the events of the answers order.saga takes.
var knownAnswer = map[order.Event]bool{
	order.EventStockReserved: true, order.EventStockRejected: true,
	order.EventPaymentAuthorized: true, order.EventPaymentDeclined: true,
}
