package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/google/go-cmp/cmp"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// ramp returns 1 ms, 2 ms, …, n ms.
func ramp(n int) []time.Duration {
	d := make([]time.Duration, n)
	for i := range d {
		d[i] = ms(i + 1)
	}
	return d
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		sorted []time.Duration
		q      float64
		want   time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one value, median", []time.Duration{ms(7)}, 0.5, ms(7)},
		{"one value, max", []time.Duration{ms(7)}, 1, ms(7)},
		{"two values, median is the lower", []time.Duration{ms(1), ms(9)}, 0.5, ms(1)},
		{"100 values, p50", ramp(100), 0.50, ms(50)},
		{"100 values, p90", ramp(100), 0.90, ms(90)},
		{"100 values, p99 is rank 99 (no float round-up)", ramp(100), 0.99, ms(99)},
		{"100 values, max", ramp(100), 1, ms(100)},
		{"10 values, p99 rounds up to the max", ramp(10), 0.99, ms(10)},
		{"1000 values, p99", ramp(1000), 0.99, ms(990)},
		{"q near zero is the minimum", ramp(10), 0.0001, ms(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Percentile(tt.sorted, tt.q); got != tt.want {
				t.Errorf("Percentile(%d values, %v) = %v, want %v", len(tt.sorted), tt.q, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	got := Summarize(ramp(200))
	want := Latency{P50: ms(100), P90: ms(180), P99: ms(198), Max: ms(200)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Summarize mismatch (-want +got):\n%s", diff)
	}
	if got := Summarize(nil); got != (Latency{}) {
		t.Errorf("Summarize(nil) = %+v, want zero", got)
	}
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		i    int
		rate float64
		want time.Duration // after start
	}{
		{"first order is due at the start", 0, 100, 0},
		{"100/s: order 1 at 10 ms", 1, 100, 10 * time.Millisecond},
		{"100/s: order 250 at 2.5 s", 250, 100, 2500 * time.Millisecond},
		{"3/s: order 1 at a third of a second", 1, 3, 333333333},
		{"3/s: order 3 at exactly 1 s", 3, 3, time.Second},
		{"fractional rate 0.5/s: order 2 at 4 s", 2, 0.5, 4 * time.Second},
		{"300/s: order 8999 just before 30 s", 8999, 300, 29996666666},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := At(start, tt.i, tt.rate).Sub(start); got != tt.want {
				t.Errorf("At(start, %d, %v) = start + %v, want + %v", tt.i, tt.rate, got, tt.want)
			}
		})
	}
}

func TestCount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate float64
		d    time.Duration
		want int
	}{
		{25, 30 * time.Second, 750},
		{300, 30 * time.Second, 9000},
		{100, 20 * time.Second, 2000},
		{2.5, 3 * time.Second, 8}, // 7.5 rounds to 8
		{1, 400 * time.Millisecond, 0},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v/s for %v", tt.rate, tt.d), func(t *testing.T) {
			t.Parallel()
			if got := Count(tt.rate, tt.d); got != tt.want {
				t.Errorf("Count(%v, %v) = %d, want %d", tt.rate, tt.d, got, tt.want)
			}
		})
	}
}

func TestCompose(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name            string
		customers, skus int
	}{
		{"the benchmark's shape", 500, 20},
		{"one SKU: always one line", 3, 1},
		{"two SKUs: at most two lines", 1, 2},
		{"three SKUs", 7, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			lines := map[int]int{}
			customers := map[int]bool{}
			for i := range 2000 {
				p := Compose(42, i, tt.customers, tt.skus)
				if again := Compose(42, i, tt.customers, tt.skus); !cmp.Equal(p, again) {
					t.Fatalf("order %d: %+v then %+v: not deterministic", i, p, again)
				}
				if p.Customer < 0 || p.Customer >= tt.customers {
					t.Fatalf("order %d: customer %d out of [0,%d)", i, p.Customer, tt.customers)
				}
				customers[p.Customer] = true
				if n := len(p.Lines); n < 1 || n > min(MaxLines, tt.skus) {
					t.Fatalf("order %d: %d lines, want 1..%d", i, n, min(MaxLines, tt.skus))
				}
				lines[len(p.Lines)]++
				seen := map[int]bool{}
				for _, l := range p.Lines {
					if l.SKU < 0 || l.SKU >= tt.skus || seen[l.SKU] {
						t.Fatalf("order %d: lines %+v: SKU out of range or repeated", i, p.Lines)
					}
					seen[l.SKU] = true
					if l.Quantity < 1 || l.Quantity > 3 {
						t.Fatalf("order %d: quantity %d, want 1..3", i, l.Quantity)
					}
				}
			}
			// Every possible line count and (for a few customers) every
			// customer shows up in 2,000 orders: the choices are spread.
			for n := 1; n <= min(MaxLines, tt.skus); n++ {
				if lines[n] == 0 {
					t.Errorf("no order with %d lines in 2,000", n)
				}
			}
			if tt.customers <= 10 && len(customers) != tt.customers {
				t.Errorf("%d of %d customers used", len(customers), tt.customers)
			}
		})
	}
}

func TestComposeDependsOnSeed(t *testing.T) {
	t.Parallel()
	same := 0
	for i := range 100 {
		if cmp.Equal(Compose(1, i, 500, 20), Compose(2, i, 500, 20)) {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 100 orders equal under seeds 1 and 2", same)
	}
}

func TestBody(t *testing.T) {
	t.Parallel()
	g, err := New(Config{OrderURL: "http://127.0.0.1:1", NotificationURL: "http://127.0.0.1:2", Secret: []byte("s"),
		SKUs: []string{"A-1", `B"2`}, Customers: 2})
	if err != nil {
		t.Fatal(err)
	}
	b := g.body(Pick{Customer: 1, Lines: []Line{{SKU: 1, Quantity: 3}, {SKU: 0, Quantity: 1}}})
	var got struct {
		Items []struct {
			SKU      string `json:"sku"`
			Quantity int    `json:"quantity"`
		} `json:"items"`
		PaymentMethod string `json:"payment_method"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("body %s: %v", b, err)
	}
	want := `{[{B"2 3} {A-1 1}] pm_card_ok}`
	if s := fmt.Sprint(got); s != want {
		t.Errorf("body %s decodes to %s, want %s", b, s, want)
	}
	if g.wsBase != "ws://127.0.0.1:2/v1/orders/" || g.orders != "http://127.0.0.1:1/v1/orders" {
		t.Errorf("URLs %q, %q", g.orders, g.wsBase)
	}
	b = g.body(Pick{Lines: []Line{{SKU: 0, Quantity: 2}}, Declined: true})
	if err := json.Unmarshal(b, &got); err != nil || got.PaymentMethod != "pm_card_declined" {
		t.Errorf("declined body %s: %v, want payment_method pm_card_declined", b, err)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	t.Parallel()
	ok := Config{OrderURL: "http://a", NotificationURL: "http://b", Secret: []byte("s"), SKUs: []string{"X"}}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"no order URL", func(c *Config) { c.OrderURL = "" }},
		{"no secret", func(c *Config) { c.Secret = nil }},
		{"no SKUs", func(c *Config) { c.SKUs = nil }},
		{"notification URL not HTTP", func(c *Config) { c.NotificationURL = "ftp://b" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.change(&c)
			if _, err := New(c); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}

func TestResultSummary(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &Result{Rate: 2, Window: 2 * time.Second, Orders: []Order{
		{Index: 0, Sent: t0, HTTPStatus: 201, POST: ms(5), ToConfirmed: ms(300), Outcome: Confirmed},
		{Index: 1, Sent: t0.Add(500 * time.Millisecond), HTTPStatus: 201, POST: ms(3), ToConfirmed: 4 * time.Second, Outcome: Confirmed},
		{Index: 2, Sent: t0.Add(time.Second), HTTPStatus: 503, POST: ms(1), Outcome: HTTPError, Kind: "http 503 (Retry-After)"},
		{Index: 3, Sent: t0.Add(1500 * time.Millisecond), HTTPStatus: 201, POST: ms(4), Outcome: Cancelled, Kind: "cancelled: timeout", Reason: "timeout"},
		{Index: 4, Outcome: Aborted, Kind: "aborted"},
	}}
	r.summarize()
	got := struct {
		Sent, Created, Confirmed, Cancelled int
		Errors                              map[string]int
		POST, ToConfirmed                   []time.Duration
		FirstSent, LastConfirmed            time.Time
	}{r.Sent, r.Created, r.Confirmed, r.Cancelled, r.Errors, r.POST, r.ToConfirmed, r.FirstSent, r.LastConfirmed}
	want := got
	want.Sent, want.Created, want.Confirmed, want.Cancelled = 5, 3, 2, 1
	want.Errors = map[string]int{"http 503 (Retry-After)": 1, "cancelled: timeout": 1, "aborted": 1}
	want.POST = []time.Duration{ms(3), ms(4), ms(5)}
	want.ToConfirmed = []time.Duration{ms(300), 4 * time.Second}
	want.FirstSent, want.LastConfirmed = t0, t0.Add(4500*time.Millisecond)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("summary mismatch (-want +got):\n%s", diff)
	}
	// 2 confirmed over 4.5 s (first POST → last confirmation; longer than
	// the 2 s window).
	if got, want := r.Achieved(), 2/4.5; got != want {
		t.Errorf("Achieved = %v, want %v", got, want)
	}
	if got, want := r.ConfirmedShare(), 0.4; got != want {
		t.Errorf("ConfirmedShare = %v, want %v", got, want)
	}
}

func TestAchievedNeverBeatsTheWindow(t *testing.T) {
	t.Parallel()
	t0 := time.Now()
	r := &Result{Rate: 10, Window: 10 * time.Second, Orders: []Order{
		{Sent: t0, HTTPStatus: 201, ToConfirmed: ms(10), Outcome: Confirmed},
		{Sent: t0.Add(ms(100)), HTTPStatus: 201, ToConfirmed: ms(10), Outcome: Confirmed},
	}}
	r.summarize()
	if got := r.Achieved(); got != 0.2 {
		t.Errorf("Achieved = %v, want 2 orders / 10 s window = 0.2", got)
	}
	if got := (&Result{}).Achieved(); got != 0 {
		t.Errorf("Achieved of an empty result = %v, want 0", got)
	}
}

func TestNewUUID(t *testing.T) {
	t.Parallel()
	u := newUUID()
	if len(u) != 36 || u[8] != '-' || u[13] != '-' || u[14] != '4' || u[18] != '-' || u[23] != '-' {
		t.Errorf("newUUID() = %q, not a version 4 UUID", u)
	}
	if newUUID() == u {
		t.Error("two UUIDs are equal")
	}
}

func TestOutcomeJSON(t *testing.T) {
	t.Parallel()
	b, err := json.Marshal(Order{Outcome: WSRefused, Kind: "ws refused 429"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"outcome":"ws refused"`) {
		t.Errorf("order JSON %s lacks the outcome's name", b)
	}
}

func TestPhaseSchedule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		phases     []Phase
		wantDue    []time.Duration
		wantPhase  []int
		wantWindow time.Duration
	}{
		{
			name:       "one phase is At's schedule",
			phases:     []Phase{{Rate: 4, Duration: time.Second}},
			wantDue:    []time.Duration{0, ms(250), ms(500), ms(750)},
			wantPhase:  []int{0, 0, 0, 0},
			wantWindow: time.Second,
		},
		{
			name:       "the second phase starts when the first one's window ends",
			phases:     []Phase{{Rate: 2, Duration: time.Second}, {Rate: 1, Duration: 2 * time.Second}},
			wantDue:    []time.Duration{0, ms(500), time.Second, 2 * time.Second},
			wantPhase:  []int{0, 0, 1, 1},
			wantWindow: 3 * time.Second,
		},
		{
			name:       "a rounded count makes the window",
			phases:     []Phase{{Rate: 2.5, Duration: 3 * time.Second}, {Rate: 10, Duration: ms(100)}},
			wantDue:    []time.Duration{0, ms(400), ms(800), ms(1200), ms(1600), ms(2000), ms(2400), ms(2800), ms(3200)},
			wantPhase:  []int{0, 0, 0, 0, 0, 0, 0, 0, 1},
			wantWindow: ms(3300), // 8 orders at 2.5/s, then 1 at 10/s
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			slots, window := Schedule(tt.phases...)
			var due []time.Duration
			var phase []int
			for _, s := range slots {
				due, phase = append(due, s.Due), append(phase, s.Phase)
			}
			if diff := cmp.Diff(tt.wantDue, due); diff != "" {
				t.Errorf("due (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPhase, phase); diff != "" {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
			if window != tt.wantWindow {
				t.Errorf("window = %v, want %v", window, tt.wantWindow)
			}
		})
	}
	// A single phase is exactly what At schedules.
	start := time.Now()
	slots, _ := Schedule(Phase{Rate: 300, Duration: 30 * time.Second})
	for i, s := range slots {
		if got, want := start.Add(s.Due), At(start, i, 300); !got.Equal(want) {
			t.Fatalf("slot %d due at %v, At says %v", i, got, want)
		}
	}
}

func TestTimeline(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	r := &Result{Start: t0, Orders: []Order{
		// Window 0: two confirmed (one of them only in window 2), a 503.
		{Sent: at(ms(100)), HTTPStatus: 201, POST: ms(10), Outcome: Confirmed, ToConfirmed: ms(200)},
		{Sent: at(ms(900)), HTTPStatus: 201, POST: ms(30), Outcome: Confirmed, ToConfirmed: ms(1500)},
		{Sent: at(ms(950)), HTTPStatus: 503, POST: ms(1), Outcome: HTTPError, Kind: "http 503 (Retry-After)", RetryAfter: "5"},
		// Window 1: a cancelled order, a transport error, a 500.
		{Sent: at(ms(1000)), HTTPStatus: 201, POST: ms(20), Outcome: Cancelled, Kind: "cancelled: timeout", Reason: "timeout"},
		{Sent: at(ms(1200)), Outcome: TransportError, Kind: "transport"},
		{Sent: at(ms(1300)), HTTPStatus: 500, Outcome: HTTPError, Kind: "http 500"},
		// Never sent.
		{Outcome: Aborted, Kind: "aborted"},
	}}
	got := r.Timeline(time.Second)
	want := []Bucket{
		{Start: 0, Width: time.Second, Sent: 3, Created: 2, Refused: 1,
			POST: Latency{P50: ms(10), P90: ms(30), P99: ms(30), Max: ms(30)}, Confirmed: 1,
			PlacedConfirmed: 2, ToConfirmed: Latency{P50: ms(200), P90: ms(1500), P99: ms(1500), Max: ms(1500)}},
		{Start: time.Second, Width: time.Second, Sent: 3, Created: 1, Failed: 2,
			POST: Latency{P50: ms(20), P90: ms(20), P99: ms(20), Max: ms(20)}, PlacedCancelled: 1},
		{Start: 2 * time.Second, Width: time.Second, Confirmed: 1}, // 0.9 s + 1.5 s
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Timeline mismatch (-want +got):\n%s", diff)
	}
	if got := (&Result{Start: t0}).Timeline(time.Second); got != nil {
		t.Errorf("timeline of an empty run = %+v, want nil", got)
	}
	if got := r.Timeline(0); got != nil {
		t.Errorf("timeline of width 0 = %+v, want nil", got)
	}
}

// TestRefusalsRecorded runs the generator against a stand-in order service
// that refuses every order, and checks what a refusal leaves in the result.
func TestRefusalsRecorded(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/orders" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"https://orderly.example/problems/overloaded","title":"Overloaded","status":503,"detail":"later"}`)
	}))
	t.Cleanup(srv.Close)
	g, err := New(Config{OrderURL: srv.URL, NotificationURL: srv.URL, Secret: []byte("s"), SKUs: []string{"A"}, Customers: 3, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	res, err := g.RunPhases(context.Background(), Phase{Rate: 100, Duration: ms(50)}, Phase{Rate: 50, Duration: ms(60)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 8 || res.Errors["http 503 (Retry-After)"] != 8 {
		t.Fatalf("sent %d, errors %v; want 8 refused with Retry-After", res.Sent, res.Errors)
	}
	for _, o := range res.Orders {
		if o.RetryAfter != "7" || o.Problem != "https://orderly.example/problems/overloaded" || o.HTTPStatus != 503 {
			t.Errorf("order %d: status %d, Retry-After %q, problem %q", o.Index, o.HTTPStatus, o.RetryAfter, o.Problem)
		}
	}
	if res.Orders[4].Phase != 0 || res.Orders[5].Phase != 1 {
		t.Errorf("phases of orders 4 and 5: %d, %d; want 0, 1", res.Orders[4].Phase, res.Orders[5].Phase)
	}
	if want := []Phase{{100, ms(50)}, {50, ms(60)}}; !cmp.Equal(res.Phases, want) {
		t.Errorf("Phases = %v, want %v", res.Phases, want)
	}
	if got, want := g.CustomerIDs(), []string{"loadgen-9-0000", "loadgen-9-0001", "loadgen-9-0002"}; !cmp.Equal(got, want) {
		t.Errorf("CustomerIDs = %v, want %v", got, want)
	}
	if _, err := g.RunPhases(context.Background()); err == nil {
		t.Error("RunPhases without a phase: no error")
	}
	if _, err := g.RunPhases(context.Background(), Phase{Rate: 10, Duration: time.Second}, Phase{Rate: 1, Duration: ms(100)}); err == nil {
		t.Error("RunPhases with a phase that offers no order: no error")
	}
}

// A close with 1012 (a replica going away) is a close with that code, not
// the protocol error gobwas makes of codes outside RFC 6455's own list;
// it is answered with the same code.
func TestReadServerDataServiceRestart(t *testing.T) {
	t.Parallel()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	go func() {
		_ = ws.WriteFrame(server, ws.NewTextFrame([]byte(`{"type":"status"}`)))
		_ = ws.WriteFrame(server, ws.NewCloseFrame(ws.NewCloseFrameBody(1012, "restart")))
	}()
	answer := make(chan ws.StatusCode, 1)
	go func() {
		h, err := ws.ReadHeader(server)
		if err != nil || h.OpCode != ws.OpClose {
			answer <- 0
			return
		}
		p := make([]byte, h.Length)
		_, _ = io.ReadFull(server, p)
		ws.Cipher(p, h.Mask, 0)
		code, _ := ws.ParseCloseFrameData(p)
		answer <- code
	}()
	data, op, err := readServerData(client)
	if err != nil || op != ws.OpText || string(data) != `{"type":"status"}` {
		t.Fatalf("first read = %q, %v, %v; want the text frame", data, op, err)
	}
	_, _, err = readServerData(client)
	var ce wsutil.ClosedError
	if !errors.As(err, &ce) || ce.Code != 1012 {
		t.Fatalf("second read = %v, want a ClosedError with code 1012", err)
	}
	if got := <-answer; got != 1012 {
		t.Errorf("client answered the close with %d, want 1012", got)
	}
}
