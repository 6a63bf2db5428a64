package status_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/orderly/orderly/proto/orderly/events/v1"
	"github.com/orderly/orderly/services/notification/status"
)

func TestFromEvent(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 12, 0, 0, 500000000, time.UTC)
	ok := func() *eventsv1.OrderStatusChanged {
		return &eventsv1.OrderStatusChanged{
			OrderId: "0190A6B4-0000-7000-8000-000000000001", CustomerId: "alice",
			Status: eventsv1.OrderStatus_ORDER_STATUS_CANCELLED, Reason: eventsv1.CancelReason_CANCEL_REASON_OUT_OF_STOCK,
			Seq: 2, At: timestamppb.New(at),
		}
	}
	got, err := status.FromEvent(ok())
	if err != nil {
		t.Fatal(err)
	}
	want := status.Change{OrderID: "0190a6b4-0000-7000-8000-000000000001", CustomerID: "alice", Status: "cancelled", Reason: "out_of_stock", Seq: 2, At: at}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FromEvent (-want +got):\n%s", diff)
	}
	if !got.Terminal() {
		t.Error("cancelled is not terminal")
	}

	bad := map[string]func(e *eventsv1.OrderStatusChanged){
		"no order id":            func(e *eventsv1.OrderStatusChanged) { e.OrderId = "" },
		"order id not a uuid":    func(e *eventsv1.OrderStatusChanged) { e.OrderId = "42" },
		"no status":              func(e *eventsv1.OrderStatusChanged) { e.Status = 0 },
		"zero seq":               func(e *eventsv1.OrderStatusChanged) { e.Seq = 0 },
		"no at":                  func(e *eventsv1.OrderStatusChanged) { e.At = nil },
		"cancelled without why":  func(e *eventsv1.OrderStatusChanged) { e.Reason = 0 },
		"reason when not cancel": func(e *eventsv1.OrderStatusChanged) { e.Status = eventsv1.OrderStatus_ORDER_STATUS_PENDING },
	}
	for name, mutate := range bad {
		e := ok()
		mutate(e)
		if _, err := status.FromEvent(e); !errors.Is(err, status.ErrInvalidEvent) {
			t.Errorf("%s: err = %v, want ErrInvalidEvent", name, err)
		}
	}
}

func TestMessageIsTheDocumentedJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		c    status.Change
		want string
	}{
		{status.Change{OrderID: "0190a6b4-0000-7000-8000-000000000001", Status: "pending", Seq: 1, At: at},
			`{"type":"status","order_id":"0190a6b4-0000-7000-8000-000000000001","status":"pending","reason":null,"seq":1,"at":"2026-03-01T11:00:00Z"}`},
		{status.Change{OrderID: "0190a6b4-0000-7000-8000-000000000001", Status: "cancelled", Reason: "timeout", Seq: 3, At: at.Add(1500 * time.Millisecond)},
			`{"type":"status","order_id":"0190a6b4-0000-7000-8000-000000000001","status":"cancelled","reason":"timeout","seq":3,"at":"2026-03-01T11:00:01.5Z"}`},
	}
	for _, tt := range tests {
		got := string(tt.c.Message())
		if got != tt.want {
			t.Errorf("Message() = %s\nwant        %s", got, tt.want)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil {
			t.Errorf("Message() is not JSON: %v", err)
		}
	}
}
