package postgres_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/services/payment/payment"
	"github.com/orderly/orderly/services/payment/postgres"
)

func newTestDB(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	pool, _ := pgtest.NewDB(tb,
		boot.Messaging,
		postgres.Migration)
	return pool
}

func inTx(tb testing.TB, pool *pgxpool.Pool, fn func(ctx context.Context, tx pgx.Tx) error) error {
	tb.Helper()
	ctx := context.Background()
	return pg.Transact(ctx, pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

func authorized(orderID uuid.UUID) *payment.Payment {
	return &payment.Payment{
		ID: uuid.New(), OrderID: orderID, AmountCents: 700, Currency: "EUR", Method: "pm_card_ok",
		Status: payment.StatusAuthorized, GatewayReference: "sim_auth_x",
	}
}

// insert saves one payment in its own transaction.
func insert(tb testing.TB, pool *pgxpool.Pool, p *payment.Payment) error {
	tb.Helper()
	return inTx(tb, pool, func(ctx context.Context, tx pgx.Tx) error {
		return postgres.New(pool).Save(ctx, tx, postgres.Changes{Payments: []*payment.Payment{p}})
	})
}

func TestSaveRefusesSecondPaymentOfAnOrder(t *testing.T) {
	t.Parallel()
	pool := newTestDB(t)
	order := uuid.New()
	if err := insert(t, pool, authorized(order)); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := insert(t, pool, authorized(order)); !errors.Is(err, payment.ErrExists) {
		t.Errorf("second Save = %v, want ErrExists", err)
	}
	var book map[uuid.UUID]payment.Payment
	err := inTx(t, pool, func(ctx context.Context, tx pgx.Tx) error {
		var err error
		book, err = postgres.New(pool).Lock(ctx, tx, []uuid.UUID{uuid.New(), order, order})
		return err
	})
	if err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if p, ok := book[order]; len(book) != 1 || !ok || p.Status != payment.StatusAuthorized || p.AmountCents != 700 || p.CreatedAt.IsZero() {
		t.Errorf("Lock = %+v, want the one authorized payment", book)
	}
}

// A change of a stored payment is written only while the payment is still
// in the status it was decided from: a refund recorded twice, or the
// release of a claim someone else settled, is refused.
func TestChangesOnlyFromTheStatusDecidedOn(t *testing.T) {
	t.Parallel()
	pool := newTestDB(t)
	p := authorized(uuid.New())
	save := func(c postgres.Changes) error {
		return inTx(t, pool, func(ctx context.Context, tx pgx.Tx) error { return postgres.New(pool).Save(ctx, tx, c) })
	}
	refunded := *p
	refunded.Status = payment.StatusRefunded
	refund := postgres.Changes{
		Updates: []*payment.Update{{Payment: refunded, From: payment.StatusAuthorized}},
		Refunds: []*payment.Refund{{ID: uuid.New(), PaymentID: p.ID, AmountCents: p.AmountCents, Currency: p.Currency, GatewayReference: "sim_refund_x"}},
	}
	if err := insert(t, pool, p); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if err := save(refund); err != nil {
		t.Fatalf("Refund: %v", err)
	}
	refund.Refunds[0].ID = uuid.New()
	if err := save(refund); !errors.Is(err, postgres.ErrStale) {
		t.Errorf("second Refund = %v, want ErrStale", err)
	}
	list, err := postgres.New(pool).ListByOrder(context.Background(), p.OrderID)
	if err != nil || len(list) != 1 || list[0].Status != payment.StatusRefunded {
		t.Errorf("ListByOrder = %+v, %v; want one refunded payment", list, err)
	}

	// A claim of a charge is not a payment the API lists; released, it is
	// gone, and only once.
	claim := authorized(uuid.New())
	claim.Status, claim.GatewayReference = payment.StatusAuthorizing, ""
	if err := insert(t, pool, claim); err != nil {
		t.Fatalf("Save the claim: %v", err)
	}
	if list, err := postgres.New(pool).ListByOrder(context.Background(), claim.OrderID); err != nil || len(list) != 0 {
		t.Errorf("ListByOrder of a charge in flight = %+v, %v; want nothing", list, err)
	}
	if err := save(postgres.Changes{Released: []uuid.UUID{claim.ID}}); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := save(postgres.Changes{Released: []uuid.UUID{claim.ID}}); !errors.Is(err, postgres.ErrStale) {
		t.Errorf("second Release = %v, want ErrStale", err)
	}
}

func TestSchemaRejectsInconsistentRows(t *testing.T) {
	t.Parallel()
	pool := newTestDB(t)
	bad := []*payment.Payment{
		{ID: uuid.New(), OrderID: uuid.New(), Currency: "EUR", Status: "pending"},
		{ID: uuid.New(), OrderID: uuid.New(), Currency: "EUR", Status: payment.StatusDeclined},                                   // no reason
		{ID: uuid.New(), OrderID: uuid.New(), Currency: "EUR", Status: payment.StatusAuthorized, DeclineReason: "card_declined"}, // reason without decline
		{ID: uuid.New(), OrderID: uuid.New(), Currency: "EUR", Status: payment.StatusAuthorized, AmountCents: -1},
	}
	for _, p := range bad {
		if err := insert(t, pool, p); err == nil {
			t.Errorf("Save(%+v) = nil, want a constraint violation", p)
		}
	}
}
