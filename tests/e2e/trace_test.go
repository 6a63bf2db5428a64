package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

// span is one span as the services exported it, with what the test looks
// at.
type span struct {
	service    string
	trace, id  string
	parent     string
	name       string
	kind       tracepb.Span_SpanKind
	attrs      map[string]string
	links      []string // span ids
	events     []string // names
	start, end uint64
}

// collector is an OTLP/HTTP trace receiver that keeps every span in
// memory: what the services' OTEL_EXPORTER_OTLP_ENDPOINT points at here.
type collector struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []span
}

func newCollector(tb testing.TB) *collector {
	tb.Helper()
	c := &collector{}
	c.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.add(&req)
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	tb.Cleanup(c.srv.Close)
	return c
}

func (c *collector) add(req *collectortrace.ExportTraceServiceRequest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := flatten(rs.GetResource().GetAttributes())["service.name"]
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := span{
					service: service,
					trace:   hex.EncodeToString(s.GetTraceId()),
					id:      hex.EncodeToString(s.GetSpanId()),
					parent:  hex.EncodeToString(s.GetParentSpanId()),
					name:    s.GetName(),
					kind:    s.GetKind(),
					attrs:   flatten(s.GetAttributes()),
					start:   s.GetStartTimeUnixNano(),
					end:     s.GetEndTimeUnixNano(),
				}
				for _, l := range s.GetLinks() {
					sp.links = append(sp.links, hex.EncodeToString(l.GetSpanId()))
				}
				for _, e := range s.GetEvents() {
					sp.events = append(sp.events, e.GetName())
				}
				c.spans = append(c.spans, sp)
			}
		}
	}
}

func flatten(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[kv.GetKey()] = v.GetStringValue()
		case v.GetIntValue() != 0:
			m[kv.GetKey()] = fmt.Sprint(v.GetIntValue())
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}

// trace returns the spans received so far of trace id.
func (c *collector) trace(id string) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if s.trace == id {
			out = append(out, s)
		}
	}
	return out
}

// find returns the spans received so far that match.
func (c *collector) find(match func(span) bool) []span {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []span
	for _, s := range c.spans {
		if match(s) {
			out = append(out, s)
		}
	}
	return out
}

// TestOneTracePerOrder places an order through the four binaries, with
// their spans exported to an in-test collector, and follows it: the POST
// is the root of one trace that holds every service's work on the order,
// each publish is a producer span in it, each handling a consumer span
// under its producer (and linked to it), the database statements sit
// inside the request and the consumers, and the status pushed to the
// shopper's WebSocket is an event in it too.
func TestOneTracePerOrder(t *testing.T) {
	col := newCollector(t)
	s := stack.New(t, stack.Options{Notification: true, Env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + col.srv.URL,
		// The batch span processor exports every 5 s by default.
		"OTEL_BSP_SCHEDULE_DELAY=50",
	}})
	widget := stack.Product{SKU: sku("traced"), PriceCents: 500, Stock: 5}
	s.Seed(t, widget)
	customer, token := s.NewCustomer(t)

	// The payment service waits, so that the shopper is watching before the order is
	// confirmed: that status then goes out live, not in the snapshot.
	s.Payment.Stop(t)
	placed := s.PlaceOrder(t, token, stack.OrderRequest{
		Items:         []stack.Item{{SKU: widget.SKU, Quantity: 1}},
		PaymentMethod: "pm_card_ok",
	})
	if placed.CustomerID != customer {
		t.Fatalf("order placed for %s, want %s", placed.CustomerID, customer)
	}
	got := watchOrder(t, s.Notification.URL(), placed.ID, token)
	poll.Until(t, settle, "the shopper's first status", func() bool { return len(got()) > 0 })
	s.Payment.Start(t)
	poll.Until(t, settle, "the shopper to see the order confirmed", func() bool {
		return slices.Contains(got(), "confirmed")
	})

	// The POST's server span is the root of the order's trace.
	var root span
	poll.Until(t, settle, "the POST /v1/orders span", func() bool {
		rs := col.find(func(sp span) bool {
			return sp.service == "order" && sp.name == "POST /v1/orders" && sp.kind == tracepb.Span_SPAN_KIND_SERVER
		})
		if len(rs) == 1 {
			root = rs[0]
		}
		return len(rs) == 1
	})
	if root.parent != "" {
		t.Errorf("POST /v1/orders has parent %s, want it the root", root.parent)
	}

	// Wait for what the trace must hold: a deliver span with a WebSocket
	// send, every span's parent (database spans may lag: only the
	// structure below is asserted of them) and every span linked to.
	var spans []span
	byID := map[string]span{}
	poll.Until(t, settle, "the order's trace to reach the shopper's WebSocket", func() bool {
		spans = col.trace(root.trace)
		clear(byID)
		for _, sp := range spans {
			byID[sp.id] = sp
		}
		all := map[string]bool{}
		for _, sp := range col.find(func(span) bool { return true }) {
			all[sp.id] = true
		}
		delivered := false
		for _, sp := range spans {
			delivered = delivered || sp.name == "deliver status" && slices.Contains(sp.events, "websocket.send") && sp.attrs["orderly.order.status"] == "confirmed"
			if _, ok := byID[sp.parent]; sp.id != root.id && !ok && sp.kind != tracepb.Span_SPAN_KIND_CLIENT {
				return false
			}
			for _, l := range sp.links {
				if !all[l] {
					return false
				}
			}
		}
		return delivered
	})

	services := map[string]bool{}
	for _, sp := range spans {
		services[sp.service] = true
	}
	for _, name := range stack.Names() {
		if !services[name] {
			t.Errorf("trace %s has no span of %s (services: %v)", root.trace, name, services)
		}
	}

	// ancestor returns the nearest ancestor of sp (or sp) that matches.
	ancestor := func(sp span, match func(span) bool) (span, bool) {
		for seen := 0; seen < len(spans); seen++ {
			if match(sp) {
				return sp, true
			}
			p, ok := byID[sp.parent]
			if !ok {
				return span{}, false
			}
			sp = p
		}
		return span{}, false
	}

	// Batch spans are roots of their own traces: look them up by id.
	batches := map[string]bool{}
	for _, sp := range col.find(func(sp span) bool { return sp.attrs["messaging.batch.message_count"] != "" }) {
		batches[sp.id] = true
	}
	dbInBatch := map[string]bool{} // batch span ids with a database span
	for _, sp := range col.find(func(sp span) bool { return batches[sp.parent] && sp.attrs["db.system.name"] == "postgresql" }) {
		dbInBatch[sp.parent] = true
	}

	producers, consumers := 0, map[string]int{}
	dbUnder := map[string]int{} // "http", or the service whose consumer span holds it
	for _, sp := range spans {
		switch {
		case sp.kind == tracepb.Span_SPAN_KIND_PRODUCER:
			producers++
			if sp.attrs["messaging.system"] != "rabbitmq" || sp.attrs["messaging.operation.type"] != "send" ||
				sp.attrs["messaging.destination.name"] == "" || sp.attrs["messaging.message.id"] == "" {
				t.Errorf("producer span %q of %s attributes %v, want the messaging conventions'", sp.name, sp.service, sp.attrs)
			}
			// Published by the relay, in a batch whose span (a root of its
			// own) links to the event's writer, and to which it links.
			if !slices.ContainsFunc(sp.links, func(l string) bool {
				return len(col.find(func(b span) bool {
					return b.id == l && b.kind == tracepb.Span_SPAN_KIND_CLIENT && b.parent == "" && slices.Contains(b.links, sp.parent)
				})) == 1
			}) {
				t.Errorf("producer span %q of %s links %v, want one to a relay batch span linked to its parent %s", sp.name, sp.service, sp.links, sp.parent)
			}
			if sp.attrs["messaging.message.conversation_id"] != placed.ID {
				t.Errorf("producer span %q conversation id %q, want the order id %s", sp.name, sp.attrs["messaging.message.conversation_id"], placed.ID)
			}
		case sp.kind == tracepb.Span_SPAN_KIND_CONSUMER:
			consumers[sp.service]++
			p := byID[sp.parent]
			if p.kind != tracepb.Span_SPAN_KIND_PRODUCER || !slices.Contains(sp.links, p.id) {
				t.Errorf("consumer span %q of %s: parent %q (%v), links %v; want a producer as parent and a link to it", sp.name, sp.service, p.name, p.kind, sp.links)
			}
			if sp.attrs["messaging.operation.type"] != "process" || sp.attrs["messaging.destination.subscription.name"] == "" {
				t.Errorf("consumer span %q of %s attributes %v, want the messaging conventions'", sp.name, sp.service, sp.attrs)
			}
			// A message handled in a batch: its statements are the batch's.
			for _, l := range sp.links {
				if dbInBatch[l] {
					dbUnder[sp.service]++
				}
			}
		case sp.attrs["db.system.name"] == "postgresql":
			// Under the request or a consumer span, whichever is nearer.
			switch a, ok := ancestor(sp, func(a span) bool { return a.id == root.id || a.kind == tracepb.Span_SPAN_KIND_CONSUMER }); {
			case !ok:
			case a.id == root.id:
				dbUnder["http"]++
			default:
				dbUnder[a.service]++
			}
		}
	}
	statements := 0
	for _, n := range dbUnder {
		statements += n
	}
	t.Logf("trace %s: %d spans from %d services, %d producer, %d database spans under the request or a consumer", root.trace, len(spans), len(services), producers, statements)
	if producers == 0 {
		t.Error("no producer span in the trace")
	}
	if dbUnder["http"] == 0 {
		t.Errorf("no database span under POST /v1/orders (%v)", dbUnder)
	}
	// Every service consumes: the order service the saga's replies.
	for _, name := range stack.Names() {
		if consumers[name] == 0 {
			t.Errorf("no consumer span of %s in the trace (%v)", name, consumers)
		}
		if dbUnder[name] == 0 {
			t.Errorf("no database span under a consumer span of %s, or its batch's (%v)", name, dbUnder)
		}
	}
	if t.Failed() {
		for _, sp := range spans {
			t.Logf("%-12s %s %-30q parent %s kind %v links %v events %v", sp.service, sp.id, sp.name, sp.parent, sp.kind, sp.links, sp.events)
		}
	}
}

// watchOrder follows order over the live tracking WebSocket as
// its owner and returns a function giving the statuses received so far.
func watchOrder(tb testing.TB, base, order, token string) func() []string {
	tb.Helper()
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/orders/" + order + "/ws"
	var c *websocket.Conn
	// The stream is refused (404) until the order's first status has
	// reached the live tracking service.
	poll.UntilNil(tb, settle, "the order's live stream to open", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		c, _, err = websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}}) //nolint:bodyclose // coder/websocket closes it
		return err
	})
	var (
		mu   sync.Mutex
		seen []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				return
			}
			var m struct{ Status string }
			_ = json.Unmarshal(b, &m)
			mu.Lock()
			seen = append(seen, m.Status)
			mu.Unlock()
		}
	}()
	tb.Cleanup(func() { _ = c.CloseNow(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}
