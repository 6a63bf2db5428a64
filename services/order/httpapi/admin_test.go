package httpapi_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/order/order"
)

// search is GET /v1/admin/orders?query as tok, checked against the contract.
func (s *testServer) search(tok, query string) response {
	s.tb.Helper()
	return s.get(tok, "/v1/admin/orders?"+query)
}

// mustSearch returns the ids of every page of the search, newest first,
// following next_cursor with the same filters; between pages it calls
// between (may be nil).
func (s *testServer) mustSearch(tok, query string, between func()) []string {
	s.tb.Helper()
	ids := []string{}
	seen := map[string]bool{}
	path := query
	for pages := 0; ; pages++ {
		if pages > 100 {
			s.tb.Fatalf("?%s: pagination does not end", query)
		}
		r := s.search(tok, path)
		if r.status != http.StatusOK {
			s.tb.Fatalf("?%s = %s", path, r)
		}
		page := decode[listBody](s.tb, r)
		for _, o := range page.Orders {
			if seen[o.ID] {
				s.tb.Fatalf("?%s: order %s listed twice", query, o.ID)
			}
			seen[o.ID] = true
			ids = append(ids, o.ID)
		}
		if page.NextCursor == nil {
			return ids
		}
		if len(page.Orders) == 0 {
			s.tb.Fatalf("?%s: empty page with a next_cursor", path)
		}
		if between != nil {
			between()
		}
		path = query + "&cursor=" + url.QueryEscape(*page.NextCursor)
	}
}

// setCreated moves an order's created_at, for time ranges that do not
// depend on how fast the test runs.
func (s *testServer) setCreated(id string, at time.Time) {
	s.tb.Helper()
	if _, err := s.pool.Exec(context.Background(), `UPDATE orders SET created_at = $2 WHERE id = $1`, id, at); err != nil {
		s.tb.Fatal(err)
	}
}

func TestSearchIsForAdmins(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	alice := tokens.For(t, "alice", "")
	s.mustPlace(alice)

	r := s.do(request{method: http.MethodGet, path: "/v1/admin/orders"})
	if r.status != http.StatusUnauthorized || problemOf(t, r).Type != authn.TypeUnauthorized {
		t.Errorf("no token = %s, want 401", r)
	}
	for _, q := range []string{"", "customer_id=alice", "status=paid"} {
		// A customer is refused before the query is read: even a bad one
		// is a 403, which tells nothing about the parameters.
		r := s.search(alice, q)
		if r.status != http.StatusForbidden || problemOf(t, r).Type != authn.TypeForbidden {
			t.Errorf("customer ?%s = %s, want 403", q, r)
		}
	}
	if r := s.search(tokens.For(t, "ops", authn.RoleAdmin), ""); r.status != http.StatusOK || len(decode[listBody](t, r).Orders) != 1 {
		t.Errorf("admin = %s", r)
	}
}

func TestSearchFilters(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "ops", authn.RoleAdmin)
	alice, bob := tokens.For(t, "alice", ""), tokens.For(t, "bob", "")
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	// a[i] and b[i] are created at t0+i hours (b[i] a minute later), so
	// newest first is b3 a3 b2 a2 b1 a1 b0 a0.
	var a, b []string
	for i := range 4 {
		a = append(a, s.mustPlace(alice).ID)
		b = append(b, s.mustPlace(bob).ID)
		s.setCreated(a[i], t0.Add(time.Duration(i)*time.Hour))
		s.setCreated(b[i], t0.Add(time.Duration(i)*time.Hour+time.Minute))
	}
	if r := s.post(alice, "/v1/orders/"+a[1]+"/cancel", ""); r.status != http.StatusAccepted {
		t.Fatalf("cancel = %s", r)
	}
	s.post(bob, "/v1/orders/"+b[2]+"/cancel", "")
	s.advance(a[3], order.EventStockReserved)

	at := func(d time.Duration) string { return url.QueryEscape(t0.Add(d).Format(time.RFC3339Nano)) }
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{b[3], a[3], b[2], a[2], b[1], a[1], b[0], a[0]}},
		{"customer_id=alice", []string{a[3], a[2], a[1], a[0]}},
		{"customer_id=carol", []string{}},
		{"status=cancelled", []string{b[2], a[1]}},
		{"status=reserved", []string{a[3]}},
		{"status=pending", []string{b[3], a[2], b[1], b[0], a[0]}},
		{"status=delivered", []string{}},
		// [after, before): a[1] at exactly 1h is in, a[3] at exactly 3h out.
		{"created_after=" + at(time.Hour) + "&created_before=" + at(3*time.Hour), []string{b[2], a[2], b[1], a[1]}},
		{"created_after=" + at(time.Hour+time.Nanosecond), []string{b[3], a[3], b[2], a[2], b[1]}},
		{"created_before=" + at(time.Minute), []string{a[0]}},
		{"created_before=" + at(time.Minute+time.Nanosecond), []string{b[0], a[0]}},
		// The same instant in another offset.
		{"created_after=" + url.QueryEscape("2026-03-01T15:00:00+01:00"), []string{b[3], a[3], b[2], a[2]}},
		{"customer_id=bob&status=pending", []string{b[3], b[1], b[0]}},
		{"customer_id=bob&status=pending&created_after=" + at(time.Hour) + "&created_before=" + at(4*time.Hour), []string{b[3], b[1]}},
		{"status=pending&created_before=" + at(2*time.Hour+time.Minute), []string{a[2], b[1], b[0], a[0]}},
	} {
		for _, limit := range []string{"", "&limit=1", "&limit=3"} {
			got := s.mustSearch(admin, tt.query+limit, nil)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("?%s%s (-want +got):\n%s", tt.query, limit, diff)
			}
		}
	}
	// A customer's own list still shows only theirs.
	if page := decode[listBody](t, s.get(alice, "/v1/orders?customer_id=bob")); len(page.Orders) != 4 || page.Orders[0].CustomerID != "alice" {
		t.Errorf("alice's /v1/orders?customer_id=bob = %+v", page.Orders)
	}
}

// Orders placed while an admin pages through a search neither shift nor
// repeat the pages: they are newer than every cursor handed out.
func TestSearchPagesWhileOrdersArrive(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "ops", authn.RoleAdmin)
	customers := []string{tokens.For(t, "alice", ""), tokens.For(t, "bob", ""), tokens.For(t, "carol", "")}
	var want []string
	for i := range 23 {
		want = append([]string{s.mustPlace(customers[i%3]).ID}, want...)
	}
	// Ties on created_at are broken by id: give a run of orders one time.
	tie := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond)
	for _, id := range want[10:15] {
		s.setCreated(id, tie)
	}
	// Moving orders 10..14 back in time moves them in the list, but all
	// five now share one created_at and sort by id among themselves.
	var reordered []string
	reordered = append(reordered, want[:10]...)
	reordered = append(reordered, want[15:]...)
	sortedTie := append([]string(nil), want[10:15]...) // UUIDv7: newest is the largest
	reordered = append(reordered, sortedTie...)

	n := 0
	arrive := func() {
		s.mustPlace(customers[n%3])
		n++
	}
	if got := s.mustSearch(admin, "limit=4", arrive); !cmp.Equal(reordered, got) {
		t.Errorf("pages while orders arrive (-want +got):\n%s", cmp.Diff(reordered, got))
	}
	if n < 5 {
		t.Errorf("only %d orders arrived between pages", n)
	}
	// The orders that arrived during that search are there now: the want
	// of the next one is read straight from the table.
	rows, err := s.pool.Query(context.Background(), `SELECT id::text FROM orders WHERE customer_id = 'alice' AND status = 'pending' ORDER BY created_at DESC, id DESC`)
	if err != nil {
		t.Fatal(err)
	}
	wantAlice, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if got := s.mustSearch(admin, "customer_id=alice&status=pending&limit=2", arrive); !cmp.Equal(wantAlice, got) {
		t.Errorf("alice's pending orders while orders arrive (-want +got):\n%s", cmp.Diff(wantAlice, got))
	}
}

func TestSearchRefusesBadInput(t *testing.T) {
	t.Parallel()
	s := newTestServer(t, 0)
	admin := tokens.For(t, "ops", authn.RoleAdmin)
	for range 3 {
		s.mustPlace(tokens.For(t, "alice", ""))
	}
	cursor := *decode[listBody](t, s.search(admin, "limit=1")).NextCursor
	tampered := []string{
		cursor[:len(cursor)-1],  // cut
		cursor + "A",            // grown
		strings.ToUpper(cursor), // another encoding of the same bytes it is not
		"djIu" + cursor[4:],     // v2.
	}
	before := s.count("orders")
	for _, tt := range []struct{ query, typ, detail string }{
		{"status=paid", httpx.TypeInvalidQuery, "status"},
		{"status=", httpx.TypeInvalidQuery, "status"},
		{"status=pending&status=shipped", httpx.TypeInvalidQuery, "status must be given at most once"},
		{"customer_id=", httpx.TypeInvalidQuery, "customer_id must not be empty"},
		{"customer_id=" + strings.Repeat("c", 256), httpx.TypeInvalidQuery, "customer_id must be at most 255 bytes"},
		{"customer_id=a&customer_id=b", httpx.TypeInvalidQuery, "customer_id must be given at most once"},
		// Control characters and broken UTF-8 are refused for every
		// parameter before the handler (httpx.ValidInput).
		{"customer_id=a%00b", httpx.TypeInvalidParameter, `"customer_id" contains a control character`},
		{"customer_id=a%0Ab", httpx.TypeInvalidParameter, `"customer_id" contains a control character`},
		{"customer_id=a%7F", httpx.TypeInvalidParameter, `"customer_id" contains a control character`},
		{"customer_id=%FF", httpx.TypeInvalidParameter, "UTF-8"},
		{"created_after=yesterday", httpx.TypeInvalidQuery, "created_after"},
		{"created_after=2026-03-01", httpx.TypeInvalidQuery, "RFC 3339"},
		{"created_before=2026-03-01T12:00:00", httpx.TypeInvalidQuery, "created_before"},
		{"created_before=2026-03-01T12:00:00+01:00", httpx.TypeInvalidQuery, "%2B"},
		{"created_after=2026-03-01T12:00:00Z&created_before=2026-03-01T12:00:00Z", httpx.TypeInvalidQuery, "created_after must be before created_before"},
		{"created_after=2026-03-02T00:00:00Z&created_before=2026-03-01T00:00:00Z", httpx.TypeInvalidQuery, "created_after must be before created_before"},
		{"created_after=2026-03-01T00:00:00Z&created_after=2026-03-02T00:00:00Z", httpx.TypeInvalidQuery, "once"},
		{"limit=0", httpx.TypeInvalidQuery, "limit must be an integer from 1 to 100"},
		{"limit=101", httpx.TypeInvalidQuery, "limit must be an integer from 1 to 100"},
		{"limit=x", httpx.TypeInvalidQuery, "limit"},
		{"limit=", httpx.TypeInvalidQuery, "limit"},
		{"cursor=", httpx.TypeInvalidQuery, "cursor"},
		{"cursor=garbage", httpx.TypeInvalidQuery, "cursor"},
		{"cursor=" + tampered[0], httpx.TypeInvalidQuery, "cursor"},
		{"cursor=" + tampered[1], httpx.TypeInvalidQuery, "cursor"},
		{"cursor=" + tampered[2], httpx.TypeInvalidQuery, "cursor"},
		{"cursor=" + tampered[3], httpx.TypeInvalidQuery, "cursor"},
		{"cursor=" + cursor + "&cursor=" + cursor, httpx.TypeInvalidQuery, "cursor must be given at most once"},
	} {
		r := s.search(admin, tt.query)
		if r.status != http.StatusBadRequest {
			t.Errorf("?%s = %s, want 400", tt.query, r)
			continue
		}
		if p := problemOf(t, r); p.Type != tt.typ || !strings.Contains(p.Detail, tt.detail) {
			t.Errorf("?%s = %s %q, want %s naming %q", tt.query, p.Type, p.Detail, tt.typ, tt.detail)
		}
	}
	if n := s.count("orders"); n != before {
		t.Errorf("orders = %d after refused searches, want %d", n, before)
	}
}
