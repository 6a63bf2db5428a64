package stock

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orderly/orderly/pkg/outbox"
)

// Level is a product's units: on hand, and held for orders.
type Level struct {
	Stock, Reserved int64
}

// Change is what a saga step did to an order's reservation.
type Change struct {
	// Status is the reservation's status after the step.
	Status Status
	// Lines are the units the step moved: reserved, committed or released
	// (empty when it moved none).
	Lines []Line
	// Shortages are the lines that could not be reserved (rejected only).
	Shortages []Shortage
	// Applied is false when the step found nothing to do: a duplicate
	// OrderPlaced, a commit of a committed reservation, a release of a
	// released or rejected one. Nothing is written and no event published;
	// an applied step publishes one event (Events).
	Applied bool
}

// DefaultHold is how long a reservation is held when its order gives no
// expiry (a message from an older order service).
const DefaultHold = 10 * time.Minute

// Book is the part of the inventory a group of saga steps works on: the
// levels of the products they touch and the reservations of their orders,
// as loaded (and locked) from the store. Steps change the book in memory,
// in order, by the rules below, and each applied one adds the event that
// announces it; the store then writes what changed and the events in a
// few statements for the whole group (Moves, Created, Updated, Events),
// which is what lets one transaction carry many orders' steps under load.
// A step that fails leaves the book as it was.
//
// The rules are those of docs/saga.md, steps 2, 6a, 6b and 11: a
// reservation holds every line of an order or none; committing takes its
// units off stock and reserved; releasing gives held units back to
// available stock and committed units back to stock; an order released
// before it was placed leaves a tombstone that makes its late OrderPlaced
// reserve nothing.
type Book struct {
	levels       map[string]*Level
	reservations map[uuid.UUID]*Reservation
	moved        map[string]Level // per SKU: units added to stock and reserved
	created      []uuid.UUID      // reservations new in this book, in order
	updated      map[uuid.UUID]bool
	events       []outbox.Event
}

// NewBook returns a book of the given product levels (missing products
// have none) and existing reservations.
func NewBook(levels map[string]Level, reservations []Reservation) *Book {
	b := &Book{
		levels:       make(map[string]*Level, len(levels)),
		reservations: make(map[uuid.UUID]*Reservation, len(reservations)),
		moved:        map[string]Level{},
		updated:      map[uuid.UUID]bool{},
	}
	for sku, l := range levels {
		b.levels[sku] = &l
	}
	for _, r := range reservations {
		b.reservations[r.OrderID] = &r
	}
	return b
}

// Reserve holds every line of an order or none (docs/saga.md, step 2). An
// order that already has a reservation (held, final, or a release
// tombstone) reserves nothing. Otherwise the lines, normalized (merged and
// sorted by SKU), are held when every one fits in its product's available
// units, and the reservation is reserved until expiresAt (now plus
// DefaultHold when zero), publishing StockReserved; when any falls short
// nothing is held and the reservation is rejected with every shortage,
// publishing StockRejected. It returns an error matching ErrInvalid for
// lines NormalizeLines refuses.
func (b *Book) Reserve(orderID uuid.UUID, lines []Line, expiresAt, now time.Time) (Change, error) {
	lines, err := NormalizeLines(lines)
	if err != nil {
		return Change{}, err
	}
	if _, ok := b.reservations[orderID]; ok {
		return Change{}, nil
	}
	var shortages []Shortage
	for _, l := range lines {
		if avail := b.available(l.SKU); avail < int64(l.Quantity) {
			shortages = append(shortages, Shortage{SKU: l.SKU, Requested: l.Quantity, Available: max(avail, 0)})
		}
	}
	r := &Reservation{OrderID: orderID, Status: StatusRejected, Lines: lines}
	c := Change{Status: StatusRejected, Shortages: shortages, Applied: true}
	if len(shortages) == 0 {
		if expiresAt.IsZero() {
			expiresAt = now.Add(DefaultHold)
		}
		r.Status, r.ExpiresAt = StatusReserved, expiresAt
		c = Change{Status: StatusReserved, Lines: lines, Applied: true}
	}
	if err := b.emit(orderID, c, now); err != nil {
		return Change{}, err
	}
	b.reservations[orderID] = r
	b.created = append(b.created, orderID)
	for _, l := range c.Lines {
		b.move(l.SKU, 0, int64(l.Quantity))
	}
	return c, nil
}

// Commit takes a held reservation's units off stock and reserved for good
// (docs/saga.md, step 6a), publishing ReservationCommitted. Committing a
// committed reservation does nothing. It returns an error matching
// ErrNoReservation when the order holds no reservation, ErrNotCommittable
// when it was released or rejected (both break the saga and need an
// operator, not a retry), and ErrUnknownProduct when a held product is
// gone.
func (b *Book) Commit(orderID uuid.UUID, now time.Time) (Change, error) {
	r, ok := b.reservations[orderID]
	switch {
	case !ok:
		return Change{}, fmt.Errorf("commit %s: %w", orderID, ErrNoReservation)
	case r.Status == StatusCommitted:
		return Change{Status: StatusCommitted}, nil
	case r.Status != StatusReserved:
		return Change{}, fmt.Errorf("commit %s (%s): %w", orderID, r.Status, ErrNotCommittable)
	}
	if err := b.known(orderID, r.Lines); err != nil {
		return Change{}, err
	}
	c := Change{Status: StatusCommitted, Lines: r.Lines, Applied: true}
	if err := b.emit(orderID, c, now); err != nil {
		return Change{}, err
	}
	for _, l := range r.Lines {
		b.move(l.SKU, -int64(l.Quantity), -int64(l.Quantity))
	}
	b.setStatus(r, StatusCommitted)
	return c, nil
}

// Release gives an order's units back (docs/saga.md, steps 6b and 11): a
// held reservation returns its units to available stock, a committed one
// returns them to stock (a confirmed order cancelled before shipping), and
// an order with no reservation yet gets a released tombstone, so that a
// late OrderPlaced reserves nothing; each publishes ReservationReleased.
// Releasing a released or rejected reservation does nothing. It returns an
// error matching ErrUnknownProduct when a product of the reservation is
// gone.
func (b *Book) Release(orderID uuid.UUID, now time.Time) (Change, error) {
	r, ok := b.reservations[orderID]
	if !ok {
		c := Change{Status: StatusReleased, Applied: true}
		if err := b.emit(orderID, c, now); err != nil {
			return Change{}, err
		}
		b.reservations[orderID] = &Reservation{OrderID: orderID, Status: StatusReleased}
		b.created = append(b.created, orderID)
		return c, nil
	}
	var stockDelta, reservedDelta int64
	switch r.Status {
	case StatusReserved:
		reservedDelta = -1
	case StatusCommitted:
		stockDelta = 1
	default:
		return Change{Status: r.Status}, nil
	}
	if err := b.known(orderID, r.Lines); err != nil {
		return Change{}, err
	}
	c := Change{Status: StatusReleased, Lines: r.Lines, Applied: true}
	if err := b.emit(orderID, c, now); err != nil {
		return Change{}, err
	}
	for _, l := range r.Lines {
		b.move(l.SKU, stockDelta*int64(l.Quantity), reservedDelta*int64(l.Quantity))
	}
	b.setStatus(r, StatusReleased)
	return c, nil
}

// Moves returns the units each product gained (negative: lost) in stock
// and reserved, sorted by SKU, the order in which every transaction locks
// product rows.
func (b *Book) Moves() (skus []string, moves []Level) {
	skus = slices.Sorted(maps.Keys(b.moved))
	for _, sku := range skus {
		moves = append(moves, b.moved[sku])
	}
	return skus, moves
}

// Created returns the reservations that are new in this book, in the
// order their steps ran.
func (b *Book) Created() []Reservation {
	out := make([]Reservation, len(b.created))
	for i, id := range b.created {
		out[i] = *b.reservations[id]
	}
	return out
}

// Updated returns the reservations loaded into the book whose status
// changed, sorted by order id.
func (b *Book) Updated() []Reservation {
	ids := slices.SortedFunc(maps.Keys(b.updated), func(a, b uuid.UUID) int { return strings.Compare(a.String(), b.String()) })
	out := make([]Reservation, len(ids))
	for i, id := range ids {
		out[i] = *b.reservations[id]
	}
	return out
}

// Events returns the events of the steps applied to the book, in the order
// they ran, to be written to the outbox with what they changed.
func (b *Book) Events() []outbox.Event {
	return slices.Clone(b.events)
}

// emit records the event announcing c, an applied change to the order's
// reservation at now.
func (b *Book) emit(orderID uuid.UUID, c Change, now time.Time) error {
	ev, err := eventOf(orderID, c, now)
	if err != nil {
		return err
	}
	b.events = append(b.events, ev)
	return nil
}

func (b *Book) available(sku string) int64 {
	l, ok := b.levels[sku]
	if !ok {
		return 0
	}
	return l.Stock - l.Reserved
}

func (b *Book) move(sku string, stock, reserved int64) {
	l := b.levels[sku]
	l.Stock += stock
	l.Reserved += reserved
	m := b.moved[sku]
	m.Stock += stock
	m.Reserved += reserved
	b.moved[sku] = m
}

// known returns ErrUnknownProduct unless every line's product is loaded.
func (b *Book) known(orderID uuid.UUID, lines []Line) error {
	for _, l := range lines {
		if _, ok := b.levels[l.SKU]; !ok {
			return fmt.Errorf("order %s: product %s of the reservation is gone: %w", orderID, l.SKU, ErrUnknownProduct)
		}
	}
	return nil
}

// setStatus changes a reservation's status; one created in this book is
// written whole, so only loaded ones are marked updated.
func (b *Book) setStatus(r *Reservation, s Status) {
	r.Status = s
	if r.Status != StatusReserved {
		r.ExpiresAt = time.Time{}
	}
	if !slices.Contains(b.created, r.OrderID) {
		b.updated[r.OrderID] = true
	}
}

// StepKind names a saga command for a reservation.
type StepKind string

// The saga commands inventory applies.
const (
	StepReserve StepKind = "reserve"
	StepCommit  StepKind = "commit"
	StepRelease StepKind = "release"
)

// Step is one saga command for an order's reservation.
type Step struct {
	Kind    StepKind
	OrderID uuid.UUID
	// Lines and ExpiresAt are those of a reserve (zero ExpiresAt: now plus
	// DefaultHold).
	Lines     []Line
	ExpiresAt time.Time
}

// Apply runs step on the book (Reserve, Commit or Release).
func (b *Book) Apply(step Step, now time.Time) (Change, error) {
	switch step.Kind {
	case StepReserve:
		return b.Reserve(step.OrderID, step.Lines, step.ExpiresAt, now)
	case StepCommit:
		return b.Commit(step.OrderID, now)
	case StepRelease:
		return b.Release(step.OrderID, now)
	}
	return Change{}, fmt.Errorf("%w: unknown step %q", ErrInvalid, step.Kind)
}
