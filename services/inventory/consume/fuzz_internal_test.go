package consume

import (
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/inventory/stock"
)

// FuzzDecode feeds arbitrary AMQP types and bodies to decode. Whatever the
// input, it must not panic, every refusal must be rabbit.Permanent
// (dead-lettered at once rather than retried for a minute), and what it
// accepts must be whole: a reserve, commit or release (only a reserve
// with lines and an expiry, unset or a valid time), and no SKU PostgreSQL
// would refuse (the book refuses the other bad SKUs and quantities, as
// permanent, once it has locked the rows).
func FuzzDecode(f *testing.F) {
	const id = "0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d"
	now := timestamppb.Now()
	rabbittest.AddSeeds(f,
		&eventsv1.OrderPlaced{OrderId: id, CustomerId: "alice", Items: []*eventsv1.LineItem{{Sku: "MUG-1", Quantity: 2, UnitPriceCents: 1299}},
			TotalCents: 2598, Currency: "EUR", PaymentMethod: "pm_card_ok", PlacedAt: now, ExpiresAt: now},
		&eventsv1.OrderPlaced{OrderId: id, Items: []*eventsv1.LineItem{{Sku: "MUG-1", Quantity: -1}, {Sku: "mug\x00"}}},
		&eventsv1.OrderPlaced{OrderId: id, ExpiresAt: &timestamppb.Timestamp{Seconds: 1 << 40}},
		&eventsv1.OrderPlaced{},
		&eventsv1.CommitReservation{OrderId: id, RequestedAt: now},
		&eventsv1.CommitReservation{OrderId: "not-a-uuid"},
		&eventsv1.ReleaseReservation{OrderId: id, RequestedAt: now},
		&eventsv1.ReleaseReservation{OrderId: "{" + id + "}"},
		&eventsv1.StockReserved{OrderId: id},
	)
	f.Add(eventsv1.TypeOrderPlaced, []byte{0x1a, 0x03, 0x0a, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, typ string, body []byte) {
		st, err := decode(&amqp.Delivery{Type: typ, Body: body})
		if err != nil {
			if !rabbit.IsPermanent(err) {
				t.Fatalf("decode(%q, %x) = %v, not permanent", typ, body, err)
			}
			return
		}
		switch {
		case st.Kind != stock.StepReserve && st.Kind != stock.StepCommit && st.Kind != stock.StepRelease,
			st.Kind != stock.StepReserve && (len(st.Lines) > 0 || !st.ExpiresAt.IsZero()),
			!st.ExpiresAt.IsZero() && !timestamppb.New(st.ExpiresAt).IsValid():
			t.Fatalf("decode(%q, %x) accepted %+v", typ, body, st)
		}
		for _, l := range st.Lines {
			if err := httpx.CheckText(l.SKU); err != nil {
				t.Fatalf("decode(%q, %x) accepted SKU %q: %v", typ, body, l.SKU, err)
			}
		}
	})
}
