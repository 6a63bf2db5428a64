package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

// settle bounds the waits for a saga or a scrape; generous, since the
// machine is shared with other tests.
const settle = 60 * time.Second

// TestQueriedMetricsExported runs every service, drives orders through
// each way the dashboard shows (confirmed and shipped while a shopper
// watches over WebSocket, declined, out of stock) and then requires, on
// the services' /metrics:
//
//   - every metric the alert rules and the dashboard name, on some service;
//   - on every service, the pool's statistics, and the consumer metrics
//     and queue depths of each of its queues (by messaging_destination_name,
//     queue depth by kind);
//   - on the order service, the saga step durations by step and the
//     timeouts by awaited step.
func TestQueriedMetricsExported(t *testing.T) {
	s := stack.New(t, stack.Options{Notification: true})
	admin := s.AdminToken(t)
	sku := "OPS-" + strings.ToUpper(stack.NewUUID()[:8])
	scarce := "OPS-SCARCE-" + strings.ToUpper(stack.NewUUID()[:8])
	s.Seed(t, stack.Product{SKU: sku, PriceCents: 1000, Stock: 100}, stack.Product{SKU: scarce, PriceCents: 100, Stock: 1})

	_, token := s.NewCustomer(t)
	ok := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: sku, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
	ws := follow(t, s.Notification.URL(), ok.ID, ok.TrackingToken)
	declined := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: sku, Quantity: 1}}, PaymentMethod: "pm_card_declined"})
	short := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: scarce, Quantity: 2}}, PaymentMethod: "pm_card_ok"})
	s.WaitStatus(t, token, ok.ID, "confirmed", "", settle)
	s.WaitStatus(t, token, declined.ID, "cancelled", "payment_declined", settle)
	s.WaitStatus(t, token, short.ID, "cancelled", "out_of_stock", settle)
	ws.waitSeq(t, 1)
	// Shipping is a change the watcher surely gets live, not in the
	// snapshot it may have started with: it has a delivery latency.
	if r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+ok.ID+"/ship", admin, nil); r.Status != http.StatusOK {
		t.Fatalf("ship = %s", r)
	}
	ws.waitSeq(t, 4)

	var rules, board []query
	rules, _ = ruleQueries(t)
	board, _ = dashboardQueries(t)
	queried := map[string][]string{} // metric → where it is queried
	for _, q := range append(rules, board...) {
		for _, vs := range selectors(t, q) {
			if n := metricName(vs); n != "" && !slices.Contains(queried[n], q.where) {
				queried[n] = append(queried[n], q.where)
			}
		}
	}

	poll.UntilNil(t, settle, "every queried metric and every labeled series on /metrics", func() error {
		scrapes := map[string]stack.Metrics{}
		for _, spec := range stack.Services {
			scrapes[spec.Name] = s.Service(spec.Name).Metrics(t)
		}
		var missing []string
		for name, where := range queried {
			if !slices.ContainsFunc(stack.Names(), func(svc string) bool { return has(scrapes[svc], name) }) {
				missing = append(missing, fmt.Sprintf("%s (used by %s)", name, strings.Join(where, ", ")))
			}
		}
		for svc, m := range scrapes {
			missing = append(missing, everyService(svc, m)...)
		}
		missing = append(missing, orderService(scrapes["order"])...)
		if len(missing) > 0 {
			slices.Sort(missing)
			return errors.New("missing:\n  " + strings.Join(missing, "\n  "))
		}
		return nil
	})
}

// everyService returns what service svc's scrape m lacks of what every
// service exports: the pool's statistics, and per queue it owns (named
// svc.…) the consumer's outcomes and handling duration and the queue's
// depth of each kind.
func everyService(svc string, m stack.Metrics) []string {
	var missing []string
	for _, name := range []string{
		"pgxpool_acquired_connections", "pgxpool_idle_connections", "pgxpool_total_connections", "pgxpool_max_connections",
		"pgxpool_acquires_total", "pgxpool_acquire_duration_nanoseconds_total",
		"pgxpool_empty_acquire_total", "pgxpool_empty_acquire_wait_time_nanoseconds_total",
		"orderly_build_info",
	} {
		if !has(m, name) {
			missing = append(missing, svc+": "+name)
		}
	}
	queues := m.By("messaging_client_consumed_messages_total", "messaging_destination_name")
	if len(queues) == 0 {
		missing = append(missing, svc+": messaging_client_consumed_messages_total by messaging_destination_name")
	}
	for q := range queues {
		if !strings.HasPrefix(q, svc+".") {
			missing = append(missing, fmt.Sprintf("%s: consumes %s, which is not one of its queues", svc, q))
		}
		for _, outcome := range []string{"ack", "retry", "dead_letter", "requeue"} {
			if !hasSeries(m, "messaging_client_consumed_messages_total", "messaging_destination_name", q, "outcome", outcome) {
				missing = append(missing, fmt.Sprintf("%s: messaging_client_consumed_messages_total{messaging_destination_name=%q,outcome=%q}", svc, q, outcome))
			}
		}
		for _, kind := range []string{"main", "retry", "dlq"} {
			if !hasSeries(m, "messaging_queue_depth", "messaging_destination_name", q, "kind", kind) {
				missing = append(missing, fmt.Sprintf("%s: messaging_queue_depth{messaging_destination_name=%q,kind=%q}", svc, q, kind))
			}
		}
	}
	// Handling durations exist for the queues that had messages; every
	// service got some (its catalog, requests or status changes).
	if len(m.By("messaging_process_duration_seconds", "messaging_destination_name")) == 0 {
		missing = append(missing, svc+": messaging_process_duration_seconds by messaging_destination_name")
	}
	return missing
}

// orderService returns what the order service's scrape m lacks of the
// saga's metrics, for the orders the test drove.
func orderService(m stack.Metrics) []string {
	var missing []string
	for _, want := range [][]string{
		{"order_saga_step_duration_seconds", "step", "pending_to_reserved"},
		{"order_saga_step_duration_seconds", "step", "reserved_to_confirmed"},
		{"order_saga_step_duration_seconds", "step", "reserved_to_cancelled", "reason", "payment_declined"},
		{"order_saga_step_duration_seconds", "step", "pending_to_cancelled", "reason", "out_of_stock"},
		{"order_saga_step_duration_seconds", "step", "confirmed_to_shipped"},
		{"order_saga_duration_seconds", "outcome", "confirmed"},
		{"order_saga_duration_seconds", "outcome", "cancelled", "reason", "payment_declined"},
		{"order_timeouts_total", "step", "pending_to_reserved"},
		{"order_timeouts_total", "step", "reserved_to_confirmed"},
	} {
		if !hasSeries(m, want[0], want[1:]...) {
			missing = append(missing, fmt.Sprintf("order: %s%v", want[0], want[1:]))
		}
	}
	return missing
}

// has reports whether m has the series name names, as a query would: a
// family of that name, or a histogram's _bucket, _sum or _count.
func has(m stack.Metrics, name string) bool {
	if _, ok := m[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := m[base]; ok && f.GetType() == dto.MetricType_HISTOGRAM {
				return true
			}
		}
	}
	return false
}

// hasSeries reports whether family has a series with every label pair of
// match (name, value, …); a histogram's only once it has observations.
func hasSeries(m stack.Metrics, family string, match ...string) bool {
	for _, s := range m[family].GetMetric() {
		if h := s.GetHistogram(); h != nil && h.GetSampleCount() == 0 {
			continue
		}
		labels := map[string]string{}
		for _, l := range s.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		all := true
		for i := 0; i+1 < len(match); i += 2 {
			all = all && labels[match[i]] == match[i+1]
		}
		if all {
			return true
		}
	}
	return false
}

// watcher follows one order's status over WebSocket, as a shopper's
// tracking page does.
type watcher struct {
	seqs chan int64
	last int64
}

// follow connects to the notification service's WebSocket for order with
// its tracking token.
func follow(tb testing.TB, base, order, token string) *watcher {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/orders/" + order + "/ws?token=" + token + "&since=0"
	c, _, err := websocket.Dial(ctx, url, nil) //nolint:bodyclose // coder/websocket closes it
	if err != nil {
		tb.Fatalf("dial %s: %v", url, err)
	}
	w := &watcher{seqs: make(chan int64, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(w.seqs)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			var m struct {
				Seq int64 `json:"seq"`
			}
			if json.Unmarshal(b, &m) == nil {
				w.seqs <- m.Seq
			}
		}
	}()
	tb.Cleanup(func() { _ = c.CloseNow(); <-done })
	return w
}

// waitSeq waits until the watcher has received seq.
func (w *watcher) waitSeq(tb testing.TB, seq int64) {
	tb.Helper()
	timeout := time.After(settle)
	for w.last < seq {
		select {
		case s, ok := <-w.seqs:
			if !ok {
				tb.Fatalf("the WebSocket closed before seq %d (last %d)", seq, w.last)
			}
			w.last = max(w.last, s)
		case <-timeout:
			tb.Fatalf("no seq %d on the WebSocket within %v (last %d)", seq, settle, w.last)
		}
	}
}
