// Package stock is the inventory domain: products with units on hand and
// units reserved for orders, the reservations an order holds, and the rules
// that keep them consistent, and the events their changes publish. It does
// no I/O; the postgres package stores it, with its events, and enforces the
// same rules in SQL.
package stock

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Limits of a product's fields, checked by Validate and by the database.
const (
	MaxNameLen    = 200
	MaxPriceCents = 1_000_000_000
	MaxStock      = 1_000_000_000
)

// Sentinel errors; match them with errors.Is.
var (
	// ErrNotFound means no product has the SKU.
	ErrNotFound = errors.New("product not found")
	// ErrInvalid means a product, SKU or reservation line breaks a rule;
	// the *ValidationError carrying it names the field.
	ErrInvalid = errors.New("invalid input")
	// ErrStockBelowReserved means a change would set stock below the units
	// already reserved for orders.
	ErrStockBelowReserved = errors.New("stock cannot be set below the units reserved for orders")
	// ErrNoReservation means a commit arrived for an order that holds no
	// reservation: the saga contract was broken somewhere upstream.
	ErrNoReservation = errors.New("no reservation for the order")
	// ErrNotCommittable means a commit arrived for a reservation that was
	// released or rejected, so its units are no longer held.
	ErrNotCommittable = errors.New("reservation is not held")
	// ErrUnknownProduct means a reservation holds units of a product that
	// no longer exists.
	ErrUnknownProduct = errors.New("product of the reservation is gone")
)

// ValidationError says which field is wrong and why, in words meant for the
// client. It matches ErrInvalid.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + " " + e.Reason }

// ProblemDetail is the client-facing detail of the error.
func (e *ValidationError) ProblemDetail() string { return e.Error() }

// Unwrap makes the error match ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

var (
	skuPattern      = regexp.MustCompile(`^[A-Z0-9][A-Z0-9-]{0,63}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

// ValidateSKU returns a *ValidationError unless sku is 1 to 64 upper-case
// letters, digits and dashes, not starting with a dash.
func ValidateSKU(sku string) error {
	if !skuPattern.MatchString(sku) {
		return invalid("sku", "must be 1 to 64 upper-case letters, digits or dashes, starting with a letter or digit")
	}
	return nil
}

// Product is one SKU of the catalog with its stock.
type Product struct {
	SKU        string
	Name       string
	PriceCents int64
	Currency   string // ISO 4217, upper case
	Stock      int64  // units on hand
	Reserved   int64  // units held for orders not yet confirmed or cancelled
	Version    int64  // increases with every change
	UpdatedAt  time.Time
}

// Available is what new orders can still reserve.
func (p Product) Available() int64 { return p.Stock - p.Reserved }

// Validate checks the fields an administrator sets (SKU, name, price,
// currency, stock) and returns a *ValidationError for the first bad one.
func (p Product) Validate() error {
	if err := ValidateSKU(p.SKU); err != nil {
		return err
	}
	switch n := utf8.RuneCountInString(p.Name); {
	case strings.TrimSpace(p.Name) == "":
		return invalid("name", "must not be empty")
	case n > MaxNameLen:
		return invalid("name", "must be at most %d characters, not %d", MaxNameLen, n)
	case !utf8.ValidString(p.Name):
		return invalid("name", "must be valid UTF-8")
	}
	if p.PriceCents < 0 || p.PriceCents > MaxPriceCents {
		return invalid("price_cents", "must be between 0 and %d", MaxPriceCents)
	}
	if !currencyPattern.MatchString(p.Currency) {
		return invalid("currency", "must be three upper-case letters (ISO 4217)")
	}
	if p.Stock < 0 || p.Stock > MaxStock {
		return invalid("stock", "must be between 0 and %d", MaxStock)
	}
	return nil
}

// Status is where a reservation is in its life.
type Status string

// Reservation statuses. reserved → committed (the order was confirmed) or
// released (cancelled or expired); committed → released (a confirmed order
// cancelled before shipping returns its units). rejected is final: nothing
// was held.
const (
	StatusReserved  Status = "reserved"
	StatusCommitted Status = "committed"
	StatusReleased  Status = "released"
	StatusRejected  Status = "rejected"
)

// Line is a quantity of one SKU in a reservation.
type Line struct {
	SKU      string
	Quantity int32
}

// Shortage is a line that could not be reserved.
type Shortage struct {
	SKU       string
	Requested int32
	Available int64 // stock - reserved when it was tried; 0 for an unknown SKU
}

// Reservation is what inventory holds for one order.
type Reservation struct {
	OrderID   uuid.UUID
	Status    Status
	Lines     []Line
	ExpiresAt time.Time // zero for a tombstone
}

// MaxQuantity bounds one line: quantities above it cannot have come from a
// valid order.
const MaxQuantity = 1_000_000

// NormalizeLines returns lines with duplicate SKUs merged and sorted by SKU,
// the order in which every transaction locks product rows so that two of
// them never wait on each other. It returns a *ValidationError for an empty
// list, a bad SKU or a quantity outside 1..MaxQuantity.
func NormalizeLines(lines []Line) ([]Line, error) {
	if len(lines) == 0 {
		return nil, invalid("items", "must not be empty")
	}
	// Each quantity is at most MaxQuantity and so is every running sum, so
	// int32 cannot overflow here.
	merged := make(map[string]int32, len(lines))
	for i, l := range lines {
		if err := ValidateSKU(l.SKU); err != nil {
			return nil, invalid(fmt.Sprintf("items[%d].sku", i), "%q is not a valid SKU", l.SKU)
		}
		if l.Quantity <= 0 || l.Quantity > MaxQuantity {
			return nil, invalid(fmt.Sprintf("items[%d].quantity", i), "must be between 1 and %d, not %d", MaxQuantity, l.Quantity)
		}
		merged[l.SKU] += l.Quantity
		if q := merged[l.SKU]; q > MaxQuantity {
			return nil, invalid("items", "SKU %s totals %d units, more than %d", l.SKU, q, MaxQuantity)
		}
	}
	out := make([]Line, 0, len(merged))
	for sku, q := range merged {
		out = append(out, Line{SKU: sku, Quantity: q})
	}
	slices.SortFunc(out, func(a, b Line) int { return strings.Compare(a.SKU, b.SKU) })
	return out, nil
}
