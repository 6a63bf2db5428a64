package postgres

import "testing"

// A replica reads the announcements of replicas both newer and older than
// itself: with the traceparent and without.
func TestDecodeNotificationWithAndWithoutTrace(t *testing.T) {
	t.Parallel()
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for payload, want := range map[string]string{
		`["0190a6b4-0000-7000-8000-00000000000a", 1, "pending", null, "2026-03-01T12:00:01+00:00"]`:               "",
		`["0190a6b4-0000-7000-8000-00000000000a", 1, "pending", null, "2026-03-01T12:00:01+00:00", null]`:         "",
		`["0190a6b4-0000-7000-8000-00000000000a", 1, "pending", null, "2026-03-01T12:00:01+00:00", "` + tp + `"]`: tp,
	} {
		c, err := decodeNotification(payload)
		if err != nil || c.Seq != 1 || c.Traceparent != want {
			t.Errorf("decodeNotification(%s) = %+v, %v; want seq 1 and traceparent %q", payload, c, err, want)
		}
	}
	if _, err := decodeNotification(`["0190a6b4-0000-7000-8000-00000000000a", 1, "pending", null, "2026-03-01T12:00:01+00:00", null, 7]`); err == nil {
		t.Error("a payload of seven fields decoded")
	}
}
