package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/services/notification/status"
)

func TestDashboardReads(t *testing.T) {
	t.Parallel()
	store, pool := newTestStore(t)
	ctx := context.Background()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	a, b, c := "0190a6b4-0000-7000-8000-00000000000a", "0190a6b4-0000-7000-8000-00000000000b", "0190a6b4-0000-7000-8000-00000000000c"
	mustApply(t, pool,
		status.Change{OrderID: a, CustomerID: "x", Status: "pending", Seq: 1, At: at},
		status.Change{OrderID: a, CustomerID: "x", Status: "reserved", Seq: 2, At: at.Add(2 * time.Second)},
		status.Change{OrderID: b, CustomerID: "y", Status: "pending", Seq: 1, At: at.Add(500 * time.Millisecond)},
		status.Change{OrderID: b, CustomerID: "y", Status: "cancelled", Reason: "out_of_stock", Seq: 2, At: at.Add(3 * time.Second)},
		status.Change{OrderID: c, CustomerID: "z", Status: "pending", Seq: 1, At: at.Add(1500 * time.Millisecond)},
	)

	counts, err := store.CountByStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int64{"pending": 1, "reserved": 1, "cancelled": 1}, counts); diff != "" {
		t.Errorf("CountByStatus (-want +got):\n%s", diff)
	}

	latest, err := store.LatestChanges(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range latest {
		got = append(got, l.OrderID+" "+l.Status+" "+l.Reason)
	}
	want := []string{b + " cancelled out_of_stock", a + " reserved ", c + " pending "}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("LatestChanges (-want +got):\n%s", diff)
	}

	placed, err := store.PlacedPerSecond(ctx, at, at.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	sec := at.Unix()
	if diff := cmp.Diff(map[int64]int64{sec: 2, sec + 1: 1}, placed); diff != "" {
		t.Errorf("PlacedPerSecond (-want +got):\n%s", diff)
	}
	if placed, err := store.PlacedPerSecond(ctx, at.Add(time.Second), at.Add(time.Minute)); err != nil || len(placed) != 1 {
		t.Errorf("PlacedPerSecond from a second later = %v, %v; want the one order placed then", placed, err)
	}
}
