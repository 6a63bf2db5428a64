package order_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/orderly/orderly/services/order/order"
)

func TestParseCursorRejectsForgeries(t *testing.T) {
	t.Parallel()
	good := order.Cursor{CreatedAt: time.UnixMicro(1700000000123456).UTC(), ID: uuid.New()}
	back, err := order.ParseCursor(good.String())
	if err != nil || !back.CreatedAt.Equal(good.CreatedAt) || back.ID != good.ID {
		t.Fatalf("round trip = %+v, %v", back, err)
	}
	for _, bad := range []string{"", "x", "!!!", "djEuMTIz", good.String() + "A", "djIuMS4wMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDA"} {
		if _, err := order.ParseCursor(bad); !errors.Is(err, order.ErrInvalidCursor) {
			t.Errorf("ParseCursor(%q) err = %v, want ErrInvalidCursor", bad, err)
		}
	}
}

func TestAdminList(t *testing.T) {
	t.Parallel()
	c := order.Cursor{CreatedAt: time.UnixMicro(1700000000123456).UTC(), ID: uuid.MustParse("0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d")}
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v.UTC()
	}
	for _, tt := range []struct {
		query string
		want  order.ListQuery
	}{
		{"", order.ListQuery{Limit: order.DefaultListLimit}},
		{"status=shipped&customer_id=alice&limit=5&cursor=" + c.String(),
			order.ListQuery{Status: order.StatusShipped, CustomerID: "alice", Limit: 5, After: &c}},
		{"created_after=2026-01-02T03:04:05Z&created_before=2026-01-02T05:00:00%2B01:00",
			order.ListQuery{CreatedAfter: at("2026-01-02T03:04:05Z"), CreatedBefore: at("2026-01-02T04:00:00Z"), Limit: 20}},
		// Finer than a microsecond rounds up: [after, before) keeps the
		// same stored (microsecond) times.
		{"created_after=2026-01-02T03:04:05.0000001Z&created_before=2026-01-02T03:04:05.000002Z",
			order.ListQuery{CreatedAfter: at("2026-01-02T03:04:05.000001Z"), CreatedBefore: at("2026-01-02T03:04:05.000002Z"), Limit: 20}},
	} {
		params, _ := url.ParseQuery(tt.query)
		got, err := order.AdminList(params)
		if err != nil {
			t.Errorf("AdminList(%s) = %v", tt.query, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("AdminList(%s) (-want +got):\n%s", tt.query, diff)
		}
	}
}

func TestAdminListRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		query  string
		kind   error
		detail string
	}{
		{"status=paid", order.ErrInvalidStatus, "status"},
		{"status=", order.ErrInvalidStatus, "status"},
		{"status=pending&status=shipped", order.ErrInvalidQuery, "status must be given at most once"},
		{"limit=0", order.ErrInvalidQuery, "limit"},
		{"limit=101", order.ErrInvalidQuery, "limit"},
		{"limit=1e2", order.ErrInvalidQuery, "limit"},
		{"cursor=garbage", order.ErrInvalidCursor, "cursor"},
		{"cursor=", order.ErrInvalidCursor, "cursor"},
		{"customer_id=", order.ErrInvalidQuery, "customer_id must not be empty"},
		{"customer_id=a%00b", order.ErrInvalidQuery, "control"},
		{"customer_id=a%7F", order.ErrInvalidQuery, "control"},
		{"customer_id=%FF", order.ErrInvalidQuery, "UTF-8"},
		{"customer_id=" + strings.Repeat("c", 256), order.ErrInvalidQuery, "at most 255"},
		{"customer_id=a&customer_id=b", order.ErrInvalidQuery, "once"},
		{"created_after=yesterday", order.ErrInvalidQuery, "created_after"},
		{"created_after=2026-01-02", order.ErrInvalidQuery, "RFC 3339"},
		// An unescaped + arrives as a space.
		{"created_before=2026-01-02T03:04:05+01:00", order.ErrInvalidQuery, "%2B"},
		{"created_after=2026-01-02T03:04:05Z&created_before=2026-01-02T03:04:05Z", order.ErrInvalidQuery, "before created_before"},
		{"created_after=2026-01-03T00:00:00Z&created_before=2026-01-02T00:00:00Z", order.ErrInvalidQuery, "before created_before"},
	} {
		params, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		_, err = order.AdminList(params)
		var ve *order.ValidationError
		if !errors.Is(err, tt.kind) || !errors.As(err, &ve) || !strings.Contains(ve.Detail, tt.detail) {
			t.Errorf("AdminList(%s) = %v, want %v naming %q", tt.query, err, tt.kind, tt.detail)
		}
	}
}

func TestCustomerListIsTheCallers(t *testing.T) {
	t.Parallel()
	// A customer cannot widen the list to someone else: customer_id and
	// the time bounds are the admin's and are not read here.
	params, _ := url.ParseQuery("customer_id=bob&created_after=x&status=pending")
	got, err := order.CustomerList("alice", params)
	want := order.ListQuery{CustomerID: "alice", Status: order.StatusPending, Limit: order.DefaultListLimit}
	if err != nil || !cmp.Equal(want, got) {
		t.Errorf("CustomerList = %+v, %v; want %+v", got, err, want)
	}
}
