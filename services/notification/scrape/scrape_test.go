package scrape_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/orderly/orderly/services/notification/dashboard"
	"github.com/orderly/orderly/services/notification/scrape"
)

// What a publishing service's /metrics holds, among much else.
const orderMetrics = `# HELP outbox_oldest_pending_age_seconds Age of the oldest event not yet confirmed.
# TYPE outbox_oldest_pending_age_seconds gauge
outbox_oldest_pending_age_seconds{otel_scope_name="github.com/orderly/orderly/pkg/outbox"} 12.5
# TYPE outbox_pending gauge
outbox_pending{otel_scope_name="github.com/orderly/orderly/pkg/outbox"} 7
# TYPE messaging_queue_depth gauge
messaging_queue_depth{kind="main",messaging_destination_name="order.saga",otel_scope_name="github.com/orderly/orderly/pkg/rabbit"} 40
messaging_queue_depth{kind="retry",messaging_destination_name="order.saga",otel_scope_name="github.com/orderly/orderly/pkg/rabbit"} 2
messaging_queue_depth{kind="dlq",messaging_destination_name="order.saga",otel_scope_name="github.com/orderly/orderly/pkg/rabbit"} 3
messaging_queue_depth{kind="dlq",messaging_destination_name="order.catalog",otel_scope_name="github.com/orderly/orderly/pkg/rabbit"} 0
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{le="+Inf"} 1
http_server_request_duration_seconds_sum 0.1
http_server_request_duration_seconds_count 1
`

// And a consuming service's, which has no outbox.
const notificationMetrics = `# TYPE messaging_queue_depth gauge
messaging_queue_depth{kind="dlq",messaging_destination_name="notification.status"} 1
`

func TestRead(t *testing.T) {
	t.Parallel()
	serve := func(body string, status int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return srv.URL + "/metrics"
	}
	targets, err := scrape.ParseTargets([]string{
		"order=" + serve(orderMetrics, 200),
		" notification = " + serve(notificationMetrics, 200),
		"payment=" + serve("", 503),
		"inventory=" + serve("not { prometheus", 200),
	})
	if err != nil {
		t.Fatal(err)
	}
	got := scrape.New(targets, nil).Read(context.Background())
	want := dashboard.Remote{
		DeadLetters: []dashboard.DeadLetters{
			{Service: "order", Queue: "order.catalog", Messages: 0},
			{Service: "order", Queue: "order.saga", Messages: 3},
			{Service: "notification", Queue: "notification.status", Messages: 1},
		},
		Outboxes: []dashboard.Outbox{{Service: "order", OldestPendingSeconds: 12.5, Pending: 7}},
		Sources: []dashboard.SourceStatus{
			{Service: "order", OK: true}, {Service: "notification", OK: true},
			{Service: "payment"}, {Service: "inventory"},
		},
	}
	if diff := cmp.Diff(want, got, cmpopts.IgnoreFields(dashboard.SourceStatus{}, "At", "Error")); diff != "" {
		t.Errorf("Read (-want +got):\n%s", diff)
	}
	for _, s := range got.Sources {
		if s.OK != (s.Error == "") || s.At.IsZero() {
			t.Errorf("source %+v: an error exactly when not ok, and a time", s)
		}
	}
}

func TestParseTargets(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"order", "order=", "=http://x/metrics", "order=ftp://x/metrics", "order=x/metrics"} {
		if _, err := scrape.ParseTargets([]string{bad}); err == nil {
			t.Errorf("ParseTargets(%q) = nil error", bad)
		}
	}
	got, err := scrape.ParseTargets([]string{"", "order=http://order:9090/metrics", " "})
	if err != nil || len(got) != 1 || got[0] != (scrape.Target{Service: "order", URL: "http://order:9090/metrics"}) {
		t.Errorf("ParseTargets = %v, %v", got, err)
	}
}
