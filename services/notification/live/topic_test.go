package live_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/orderly/orderly/services/notification/live"
)

// TestTopicSendsTheLatestThenNewerOnes follows a topic (the operators'
// dashboard): a follower gets the latest message first, then each newer
// one, or only the newest of those it fell behind on, never an older one;
// a topic is neither an order nor a status in the metrics.
func TestTopicSendsTheLatestThenNewerOnes(t *testing.T) {
	t.Parallel()
	h := newTestHub(t, newMemStore(), live.Options{})
	body := func(seq int64) []byte { return fmt.Appendf(nil, `{"type":"dashboard","seq":%d}`, seq) }
	if h.Watching("board") {
		t.Fatal("Watching before anyone follows")
	}
	h.PublishTopic("board", 1, body(1)) // nobody follows yet: kept for the first follower
	c := dial(t, h.wsURL("none", "topic=board&sub=ops"))
	read := func() int64 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m struct{ Seq int64 }
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("message %s: %v", b, err)
		}
		return m.Seq
	}
	if got := read(); got != 1 {
		t.Fatalf("first message seq %d, want the latest, 1", got)
	}
	if !h.Watching("board") || h.Watching("other") {
		t.Error("Watching does not tell the followed topic")
	}
	for seq := int64(2); seq <= 40; seq++ { // more than the send queue holds
		h.PublishTopic("board", seq, body(seq))
	}
	for last := int64(1); last != 40; {
		got := read()
		if got <= last {
			t.Fatalf("seq %d after %d", got, last)
		}
		last = got
	}
	if n := h.counter(t, "notification.messages.sent"); n != 0 {
		t.Errorf("%d topic messages counted as statuses sent", n)
	}
	if o := h.Orders(); len(o) != 0 {
		t.Errorf("Orders() = %v, want no order", o)
	}
	if st := h.Stats(); st.WebSocket != 1 || st.Owners != 1 {
		t.Errorf("stats %+v, want one WebSocket counted against its subject", st)
	}
}
