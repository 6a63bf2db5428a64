package invariants

import (
	"fmt"
	"maps"
	"slices"
)

// terminal says which order statuses end the saga: a 201 must lead to one
// of them. shipped and delivered come after confirmed, so they count.
var terminal = map[string]bool{"confirmed": true, "cancelled": true, "shipped": true, "delivered": true}

// sold says which statuses keep the units and the charge of an order.
var sold = map[string]bool{"confirmed": true, "shipped": true, "delivered": true}

// OrderRow is what the checker reads of an order from the order database.
type OrderRow struct {
	ID, Status, Reason string
	Version            int64
	TotalCents         int64
	Lines              map[string]int64 // SKU → quantity
}

// OrderTally counts the orders that got a 201 by how they ended.
type OrderTally struct {
	Created, Terminal, Confirmed, Cancelled int
	// Reasons counts the cancelled orders by reason ("" for none, which
	// breaks the contract).
	Reasons map[string]int
	// Stuck are created orders not in a terminal status, Lost created
	// orders missing from the database, Unasked orders in the database
	// that no client was given (a second order for one request).
	Stuck, Lost, Unasked []string
}

// TallyOrders compares the ids the clients got a 201 for with the orders
// in the database.
func TallyOrders(created []string, rows map[string]OrderRow) OrderTally {
	t := OrderTally{Reasons: map[string]int{}}
	asked := make(map[string]bool, len(created))
	for _, id := range created {
		if asked[id] {
			continue // a retry given the same order again
		}
		asked[id] = true
		t.Created++
		r, ok := rows[id]
		switch {
		case !ok:
			t.Lost = append(t.Lost, id)
			continue
		case !terminal[r.Status]:
			t.Stuck = append(t.Stuck, id)
			continue
		}
		t.Terminal++
		if r.Status == "cancelled" {
			t.Cancelled++
			t.Reasons[r.Reason]++
		} else {
			t.Confirmed++
		}
	}
	for _, id := range slices.Sorted(maps.Keys(rows)) {
		if !asked[id] {
			t.Unasked = append(t.Unasked, id)
		}
	}
	return t
}

// PaymentRow is one row of the payment database's payments.
type PaymentRow struct {
	OrderID, Status string
	AmountCents     int64
}

// ChargeTally checks money against the orders' outcomes.
type ChargeTally struct {
	// Sold is how many orders kept their units (confirmed or later) and
	// Charged how many of them hold exactly one authorization.
	Sold, Charged int
	// Duplicated: more than one authorization for an order; Missing: a
	// sold order without one; WrongAmount: an authorization for another
	// amount than the order's total; ChargedCancelled: a cancelled order
	// left authorized; InFlight: a payment still authorizing or refunding;
	// Orphans: a payment for an order the order database does not have.
	Duplicated, Missing, WrongAmount, ChargedCancelled, InFlight, Orphans []string
	// CancelledBy counts the cancelled orders by what their payment became
	// ("none" when there is no payment row).
	CancelledBy map[string]int
}

// TallyCharges checks every order's payments: one authorization for the
// total of each sold order, none left for a cancelled one, nothing in
// flight once the system is quiet.
func TallyCharges(orders map[string]OrderRow, payments []PaymentRow) ChargeTally {
	t := ChargeTally{CancelledBy: map[string]int{}}
	byOrder := map[string][]PaymentRow{}
	for _, p := range payments {
		byOrder[p.OrderID] = append(byOrder[p.OrderID], p)
		if _, ok := orders[p.OrderID]; !ok {
			t.Orphans = append(t.Orphans, p.OrderID)
		}
		if p.Status == "authorizing" || p.Status == "refunding" {
			t.InFlight = append(t.InFlight, p.OrderID)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(orders)) {
		o := orders[id]
		var auth []PaymentRow
		for _, p := range byOrder[id] {
			if p.Status == "authorized" {
				auth = append(auth, p)
			}
		}
		switch {
		case sold[o.Status]:
			t.Sold++
			switch len(auth) {
			case 0:
				t.Missing = append(t.Missing, id)
			case 1:
				t.Charged++
				if auth[0].AmountCents != o.TotalCents {
					t.WrongAmount = append(t.WrongAmount, id)
				}
			default:
				t.Duplicated = append(t.Duplicated, id)
			}
		case o.Status == "cancelled":
			if len(auth) > 0 {
				t.ChargedCancelled = append(t.ChargedCancelled, id)
			}
			ps := byOrder[id]
			if len(ps) == 0 {
				t.CancelledBy["none"]++
			}
			for _, p := range ps {
				t.CancelledBy[p.Status]++
			}
		}
	}
	return t
}

// Level is a product's stock and reserved units.
type Level struct{ Stock, Reserved int64 }

// StockTally checks stock conservation per SKU.
type StockTally struct {
	SKUs int
	// Sold is the units of the sold orders; Taken the units gone from
	// stock (initial − final), which must be equal.
	Sold, Taken int64
	// Oversold: SKUs that sold more than they had or ended below zero;
	// Leaked: SKUs with units still reserved; Mismatched: SKUs whose stock
	// is not initial − sold (units lost or made up), each with its numbers.
	Oversold, Leaked, Mismatched []string
}

// TallyStock checks, per SKU, initial = final stock + units of the sold
// orders, no unit reserved once the system is quiet, and none oversold.
// SKUs that were never stocked but sold count as mismatched.
func TallyStock(initial map[string]int64, final map[string]Level, orders map[string]OrderRow) StockTally {
	units := map[string]int64{}
	for _, o := range orders {
		if !sold[o.Status] {
			continue
		}
		for sku, q := range o.Lines {
			units[sku] += q
		}
	}
	skus := map[string]bool{}
	for s := range initial {
		skus[s] = true
	}
	for s := range units {
		skus[s] = true
	}
	t := StockTally{SKUs: len(skus)}
	for _, s := range slices.Sorted(maps.Keys(skus)) {
		init, l, u := initial[s], final[s], units[s]
		t.Sold += u
		t.Taken += init - l.Stock
		if u > init || l.Stock < 0 || l.Reserved < 0 {
			t.Oversold = append(t.Oversold, fmt.Sprintf("%s (initial %d, sold %d, stock %d, reserved %d)", s, init, u, l.Stock, l.Reserved))
		}
		if l.Reserved != 0 {
			t.Leaked = append(t.Leaked, fmt.Sprintf("%s (%d reserved)", s, l.Reserved))
		}
		if init != l.Stock+u {
			t.Mismatched = append(t.Mismatched, fmt.Sprintf("%s (initial %d ≠ stock %d + sold %d)", s, init, l.Stock, u))
		}
	}
	return t
}

// SeqFaults is how a watcher's stream differs from seq 1..n.
type SeqFaults struct {
	// Missing: seqs of 1..n never read; Repeated: reads of a seq read
	// before; OutOfOrder: reads of a seq lower than the previous read one;
	// Unknown: reads of a seq outside 1..n.
	Missing, Repeated, OutOfOrder, Unknown int
}

// Clean reports whether the stream was exactly 1..n.
func (f SeqFaults) Clean() bool { return f == SeqFaults{} }

// CheckSeqs compares the seqs a watcher read, in the order it read them,
// with the order's history 1..n: each must come once, in order, none
// missing.
func CheckSeqs(n int64, got []int64) SeqFaults {
	var f SeqFaults
	seen := map[int64]bool{}
	var prev int64
	for i, s := range got {
		switch {
		case s < 1 || s > n:
			f.Unknown++
		case seen[s]:
			f.Repeated++
		default:
			seen[s] = true
		}
		if i > 0 && s < prev {
			f.OutOfOrder++
		}
		prev = s
	}
	for s := int64(1); s <= n; s++ {
		if !seen[s] {
			f.Missing++
		}
	}
	return f
}
