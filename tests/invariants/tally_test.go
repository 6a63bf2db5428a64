package invariants

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckSeqs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		n    int64
		got  []int64
		want SeqFaults
	}{
		{"every status once, in order", 3, []int64{1, 2, 3}, SeqFaults{}},
		{"nothing read", 3, nil, SeqFaults{Missing: 3}},
		{"a gap in the middle", 3, []int64{1, 3}, SeqFaults{Missing: 1}},
		{"the first statuses missed (a late watcher without since)", 3, []int64{3}, SeqFaults{Missing: 2}},
		{"a status repeated after resuming", 3, []int64{1, 2, 2, 3}, SeqFaults{Repeated: 1}},
		{"two statuses swapped", 3, []int64{1, 3, 2}, SeqFaults{OutOfOrder: 1}},
		{"resumed from the start again", 3, []int64{1, 2, 1, 2, 3}, SeqFaults{Repeated: 2, OutOfOrder: 1}},
		{"a seq the order never had", 3, []int64{1, 2, 3, 4}, SeqFaults{Unknown: 1}},
		{"seq 0", 2, []int64{0, 1, 2}, SeqFaults{Unknown: 1}},
		{"an order the database does not have", 0, []int64{1}, SeqFaults{Unknown: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := CheckSeqs(tt.n, tt.got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckSeqs(%d, %v) (-want +got):\n%s", tt.n, tt.got, diff)
			}
			if got.Clean() != (tt.want == SeqFaults{}) {
				t.Errorf("Clean() = %v", got.Clean())
			}
		})
	}
}

func TestTallyStock(t *testing.T) {
	t.Parallel()
	order := func(status string, lines map[string]int64) OrderRow {
		return OrderRow{Status: status, Lines: lines}
	}
	tests := []struct {
		name    string
		initial map[string]int64
		final   map[string]Level
		orders  map[string]OrderRow
		want    StockTally
	}{
		{
			name:    "sold units left the stock, cancelled ones came back",
			initial: map[string]int64{"A": 10, "B": 5},
			final:   map[string]Level{"A": {Stock: 7}, "B": {Stock: 4}},
			orders: map[string]OrderRow{
				"1": order("confirmed", map[string]int64{"A": 2, "B": 1}),
				"2": order("delivered", map[string]int64{"A": 1}),
				"3": order("cancelled", map[string]int64{"A": 5}),
			},
			want: StockTally{SKUs: 2, Sold: 4, Taken: 4},
		},
		{
			name:    "a reservation left held",
			initial: map[string]int64{"A": 10},
			final:   map[string]Level{"A": {Stock: 10, Reserved: 2}},
			orders:  map[string]OrderRow{"1": order("cancelled", map[string]int64{"A": 2})},
			want:    StockTally{SKUs: 1, Leaked: []string{"A (2 reserved)"}},
		},
		{
			name:    "a unit taken twice",
			initial: map[string]int64{"A": 10},
			final:   map[string]Level{"A": {Stock: 7}},
			orders:  map[string]OrderRow{"1": order("confirmed", map[string]int64{"A": 2})},
			want:    StockTally{SKUs: 1, Sold: 2, Taken: 3, Mismatched: []string{"A (initial 10 ≠ stock 7 + sold 2)"}},
		},
		{
			name:    "a cancelled order's units never returned",
			initial: map[string]int64{"A": 10},
			final:   map[string]Level{"A": {Stock: 8}},
			orders:  map[string]OrderRow{"1": order("cancelled", map[string]int64{"A": 2})},
			want:    StockTally{SKUs: 1, Taken: 2, Mismatched: []string{"A (initial 10 ≠ stock 8 + sold 0)"}},
		},
		{
			name:    "sold more than there was",
			initial: map[string]int64{"A": 1},
			final:   map[string]Level{"A": {Stock: 0}},
			orders: map[string]OrderRow{
				"1": order("confirmed", map[string]int64{"A": 1}),
				"2": order("confirmed", map[string]int64{"A": 1}),
			},
			want: StockTally{SKUs: 1, Sold: 2, Taken: 1,
				Oversold:   []string{"A (initial 1, sold 2, stock 0, reserved 0)"},
				Mismatched: []string{"A (initial 1 ≠ stock 0 + sold 2)"}},
		},
		{
			name:    "a SKU sold that was never stocked",
			initial: map[string]int64{},
			final:   map[string]Level{},
			orders:  map[string]OrderRow{"1": order("confirmed", map[string]int64{"Z": 1})},
			want: StockTally{SKUs: 1, Sold: 1,
				Oversold:   []string{"Z (initial 0, sold 1, stock 0, reserved 0)"},
				Mismatched: []string{"Z (initial 0 ≠ stock 0 + sold 1)"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tt.want, TallyStock(tt.initial, tt.final, tt.orders)); diff != "" {
				t.Errorf("TallyStock (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTallyCharges(t *testing.T) {
	t.Parallel()
	orders := map[string]OrderRow{
		"ok":       {ID: "ok", Status: "confirmed", TotalCents: 100},
		"shipped":  {ID: "shipped", Status: "shipped", TotalCents: 100},
		"missing":  {ID: "missing", Status: "confirmed", TotalCents: 100},
		"wrong":    {ID: "wrong", Status: "confirmed", TotalCents: 100},
		"twice":    {ID: "twice", Status: "confirmed", TotalCents: 100},
		"refunded": {ID: "refunded", Status: "cancelled", Reason: "customer_request", TotalCents: 100},
		"charged":  {ID: "charged", Status: "cancelled", Reason: "timeout", TotalCents: 100},
		"none":     {ID: "none", Status: "cancelled", Reason: "out_of_stock", TotalCents: 100},
		"flying":   {ID: "flying", Status: "cancelled", Reason: "timeout", TotalCents: 100},
	}
	payments := []PaymentRow{
		{"ok", "authorized", 100},
		{"shipped", "authorized", 100},
		{"wrong", "authorized", 99},
		{"twice", "authorized", 100},
		{"twice", "authorized", 100},
		{"refunded", "refunded", 100},
		{"charged", "authorized", 100},
		{"flying", "refunding", 100},
		{"ghost", "declined", 100},
	}
	got := TallyCharges(orders, payments)
	want := ChargeTally{
		Sold: 5, Charged: 3,
		Duplicated: []string{"twice"}, Missing: []string{"missing"}, WrongAmount: []string{"wrong"},
		ChargedCancelled: []string{"charged"}, InFlight: []string{"flying"}, Orphans: []string{"ghost"},
		CancelledBy: map[string]int{"authorized": 1, "none": 1, "refunded": 1, "refunding": 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TallyCharges (-want +got):\n%s", diff)
	}
}

func TestTallyOrders(t *testing.T) {
	t.Parallel()
	rows := map[string]OrderRow{
		"a": {ID: "a", Status: "confirmed"},
		"b": {ID: "b", Status: "cancelled", Reason: "out_of_stock"},
		"c": {ID: "c", Status: "reserved"},
		"d": {ID: "d", Status: "delivered"},
		"x": {ID: "x", Status: "confirmed"},
	}
	got := TallyOrders([]string{"a", "b", "c", "d", "a", "lost"}, rows)
	want := OrderTally{
		Created: 5, Terminal: 3, Confirmed: 2, Cancelled: 1,
		Reasons: map[string]int{"out_of_stock": 1},
		Stuck:   []string{"c"}, Lost: []string{"lost"}, Unasked: []string{"x"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TallyOrders (-want +got):\n%s", diff)
	}
}
