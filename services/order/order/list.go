package order

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Page sizes of the order lists.
const (
	DefaultListLimit = 20
	MaxListLimit     = 100
	// MaxCustomerIDLen is authn.MaxSubjectLen: a customer id is a token
	// subject, so a longer one matches no order.
	MaxCustomerIDLen = 255
)

// ListQuery is one page of an order list: the filters, the page size and
// where the page starts. The filters apply to every page, whatever the
// cursor says, so following a cursor never shows an order outside them;
// a cursor sent with other filters than the ones it came from just starts
// that list at its position.
type ListQuery struct {
	// CustomerID keeps only that customer's orders; "" keeps everyone's.
	CustomerID string
	// Status keeps only orders in that status; "" keeps every status.
	Status Status
	// CreatedAfter and CreatedBefore bound created_at to [after, before);
	// a zero time leaves that side open. Both are at microseconds, the
	// precision created_at is stored at, rounded up so that the bounds
	// keep exactly the orders the client's (maybe finer) times do.
	CreatedAfter, CreatedBefore time.Time
	// Limit is the page size, 1..MaxListLimit.
	Limit int
	// After is where the page starts (exclusive); nil for the first page.
	After *Cursor
}

// CustomerList returns the query of GET /v1/orders: customer's orders,
// filtered by the parameters status, limit and cursor (others are not
// read). It returns a *ValidationError of kind ErrInvalidStatus,
// ErrInvalidQuery or ErrInvalidCursor naming the first bad parameter.
func CustomerList(customer string, params url.Values) (ListQuery, error) {
	q := ListQuery{CustomerID: customer}
	return q, q.readPage(params)
}

// AdminList returns the query of GET /v1/admin/orders, the admin's search
// across customers, from the parameters status, customer_id,
// created_after, created_before (RFC 3339), limit and cursor. It returns a
// *ValidationError of kind ErrInvalidStatus, ErrInvalidQuery or
// ErrInvalidCursor naming the first bad parameter.
func AdminList(params url.Values) (ListQuery, error) {
	var q ListQuery
	if err := q.readPage(params); err != nil {
		return ListQuery{}, err
	}
	if s, ok, err := single(params, "customer_id"); err != nil {
		return ListQuery{}, err
	} else if ok {
		if err := checkCustomerID(s); err != nil {
			return ListQuery{}, err
		}
		q.CustomerID = s
	}
	var err error
	if q.CreatedAfter, err = timeParam(params, "created_after"); err != nil {
		return ListQuery{}, err
	}
	if q.CreatedBefore, err = timeParam(params, "created_before"); err != nil {
		return ListQuery{}, err
	}
	if !q.CreatedAfter.IsZero() && !q.CreatedBefore.IsZero() && !q.CreatedAfter.Before(q.CreatedBefore) {
		return ListQuery{}, invalid(ErrInvalidQuery, "created_after must be before created_before: the range is [created_after, created_before)")
	}
	return q, nil
}

// readPage reads what both lists take: status, limit and cursor.
func (q *ListQuery) readPage(params url.Values) error {
	q.Limit = DefaultListLimit
	if s, ok, err := single(params, "status"); err != nil {
		return err
	} else if ok {
		if q.Status, err = ParseStatus(s); err != nil {
			return invalid(ErrInvalidStatus, "status %q is not one of pending, reserved, confirmed, shipped, delivered, cancelled", clip(s))
		}
	}
	if s, ok, err := single(params, "limit"); err != nil {
		return err
	} else if ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxListLimit {
			return invalid(ErrInvalidQuery, "limit must be an integer from 1 to %d", MaxListLimit)
		}
		q.Limit = n
	}
	if s, ok, err := single(params, "cursor"); err != nil {
		return err
	} else if ok {
		c, err := ParseCursor(s)
		if err != nil {
			return invalid(ErrInvalidCursor, "cursor is not one this API returned in next_cursor")
		}
		q.After = &c
	}
	return nil
}

// single returns the one value of parameter name and whether it was sent.
// A parameter sent twice is refused rather than read as its first value:
// "status=pending&status=shipped" would otherwise quietly list pending
// orders only.
func single(params url.Values, name string) (string, bool, error) {
	switch vs := params[name]; len(vs) {
	case 0:
		return "", false, nil
	case 1:
		return vs[0], true, nil
	default:
		return "", false, invalid(ErrInvalidQuery, "%s must be given at most once", name)
	}
}

// timeParam returns the RFC 3339 time of parameter name, rounded up to a
// microsecond, or the zero time when it is absent.
func timeParam(params url.Values, name string) (time.Time, error) {
	s, ok, err := single(params, name)
	if err != nil || !ok {
		return time.Time{}, err
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid(ErrInvalidQuery, "%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z (send a + offset as %%2B)", name, clip(s))
	}
	t = t.UTC()
	if r := t.Truncate(time.Microsecond); !r.Equal(t) {
		t = r.Add(time.Microsecond)
	}
	return t, nil
}

// checkCustomerID refuses a customer_id no token subject could be, so that
// a search for it is a clear 400 rather than an empty page.
func checkCustomerID(s string) error {
	switch {
	case s == "":
		return invalid(ErrInvalidQuery, "customer_id must not be empty")
	case len(s) > MaxCustomerIDLen:
		return invalid(ErrInvalidQuery, "customer_id must be at most %d bytes", MaxCustomerIDLen)
	case !utf8.ValidString(s):
		return invalid(ErrInvalidQuery, "customer_id must be UTF-8")
	case strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return invalid(ErrInvalidQuery, "customer_id must not contain control characters")
	}
	return nil
}

// clip bounds what an error repeats of a client's input.
func clip(s string) string {
	const n = 32
	if len(s) > n {
		return fmt.Sprintf("%s…", s[:n])
	}
	return s
}
