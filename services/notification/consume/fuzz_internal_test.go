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
// accepts must be a change the tables take (their CHECK constraints: a
// known status, a known reason exactly when cancelled, a positive seq) for
// a canonical order id, at a valid time, with no text PostgreSQL would
// refuse.
func FuzzDecode(f *testing.F) {
	const id = "0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d"
	now := timestamppb.Now()
	rabbittest.AddSeeds(f,
		&eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_RESERVED, Seq: 2, At: now},
		&eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_CANCELLED,
			Reason: eventsv1.CancelReason_CANCEL_REASON_TIMEOUT, Seq: 3, At: now},
		&eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "alice", Status: eventsv1.OrderStatus_ORDER_STATUS_CANCELLED, Seq: 3, At: now},
		&eventsv1.OrderStatusChanged{OrderId: id, Status: eventsv1.OrderStatus(42), Reason: eventsv1.CancelReason(42), Seq: 1, At: now},
		&eventsv1.OrderStatusChanged{OrderId: id, CustomerId: "al\x00ice", Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: 1, At: now},
		&eventsv1.OrderStatusChanged{OrderId: id, Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: 1, At: &timestamppb.Timestamp{Nanos: -1}},
		&eventsv1.OrderStatusChanged{OrderId: "not-a-uuid", Status: eventsv1.OrderStatus_ORDER_STATUS_PENDING, Seq: 1, At: now},
		&eventsv1.OrderStatusChanged{},
		&eventsv1.OrderCancelled{OrderId: id},
	)
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		c, err := decode(&amqp.Delivery{Type: typ, Body: body})
		if err != nil {
			if !rabbit.IsPermanent(err) {
				t.Fatalf("decode(%q, %x) = %v, not permanent", typ, body, err)
			}
			return
		}
		u, err := uuid.Parse(c.OrderID)
		switch {
		case err != nil || u.String() != c.OrderID,
			!statuses[c.Status], (c.Status == "cancelled") != reasons[c.Reason], c.Status != "cancelled" && c.Reason != "",
			c.Seq <= 0, !timestamppb.New(c.At).IsValid():
			t.Fatalf("decode(%q, %x) accepted %+v", typ, body, c)
		}
		if err := httpx.CheckText(c.CustomerID); err != nil {
			t.Fatalf("decode(%q, %x) accepted customer id %q: %v", typ, body, c.CustomerID, err)
		}
	})
}

// statuses and reasons are those the tables' CHECK constraints allow
// (migrations/notification).
var (
	statuses = map[string]bool{"pending": true, "reserved": true, "confirmed": true, "shipped": true, "delivered": true, "cancelled": true}
	reasons  = map[string]bool{"out_of_stock": true, "payment_declined": true, "customer_request": true, "timeout": true}
)
