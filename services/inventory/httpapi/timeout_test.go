package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/services/inventory/postgres"
)

// A request whose statement outlasts the pool's statement timeout, or waits
// for a lock longer than its lock timeout, gets a 503 with Retry-After,
// not a 500, and changes nothing.
func TestDatabaseTimeoutIs503(t *testing.T) {
	t.Parallel()
	holder, url := pgtest.NewDB(t, boot.Messaging, postgres.Migration)
	admin := token(t, authn.RoleAdmin)
	ctx := context.Background()
	const good = `{"name":"Mug","price_cents":1299,"currency":"EUR","stock":10}`
	if r := newTestServerOn(t, holder, 0).do(http.MethodPut, "/v1/products/MUG-1", admin, good); r.status != http.StatusCreated {
		t.Fatalf("create = %d %s", r.status, r.body)
	}

	for _, tt := range []struct {
		name     string
		timeouts pg.Timeouts
	}{
		// A lock wait is cut by whichever comes first.
		{"lock timeout", pg.Timeouts{Statement: 10 * time.Second, Lock: 200 * time.Millisecond}},
		{"statement timeout", pg.Timeouts{Statement: 200 * time.Millisecond}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := pg.Connect(ctx, url, pg.WithTimeouts(tt.timeouts))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(pool.Close)
			s := newTestServerOn(t, pool, 0)

			// Another transaction holds the product's row.
			tx, err := holder.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, `SELECT * FROM products WHERE sku = 'MUG-1' FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			events := s.outboxCount()

			start := time.Now()
			r := s.do(http.MethodPut, "/v1/products/MUG-1", admin, `{"name":"Mug","price_cents":1,"currency":"EUR","stock":99}`)
			took := time.Since(start)
			p := wantProblem(t, r, http.StatusServiceUnavailable, httpx.TypeUnavailable)
			if p.Detail == "" || p.Detail == "internal error" {
				t.Errorf("detail = %q, want it to say to retry", p.Detail)
			}
			if n, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || n < 1 {
				t.Errorf("Retry-After = %q, want a number of seconds", r.header.Get("Retry-After"))
			}
			if took > 3*time.Second {
				t.Errorf("the request took %v, want it cut after about 200ms", took)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if got := decode[product](t, s.do(http.MethodGet, "/v1/products/MUG-1", "", "")); got.Stock != 10 || got.PriceCents != 1299 {
				t.Errorf("product after the 503 = %+v, want it unchanged", got)
			}
			if n := s.outboxCount(); n != events {
				t.Errorf("the refused request wrote %d events", n-events)
			}
		})
	}
}
