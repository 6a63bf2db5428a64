package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/security"
	"github.com/chromedp/chromedp"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
	"github.com/orderly/orderly/tests/stack"
)

// settle bounds every wait for the page; generous, since the machine is
// shared with other tests.
const settle = 60 * time.Second

// step is one entry of the page's timeline as the page shows it.
type step struct {
	Seq     string `json:"seq"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Name    string `json:"name"`
	Time    string `json:"time"`
	Current bool   `json:"current"`
}

// view is what the page shows: the connection indicator, the current
// status, the timeline, a problem message, and the marker the test left in
// the page's window (gone if the page was reloaded).
type view struct {
	State   string `json:"state"`
	StateUI string `json:"stateText"`
	Current string `json:"current"`
	Steps   []step `json:"steps"`
	Problem string `json:"problem"`
	Marker  string `json:"marker"`
}

const readView = `(() => {
	const $ = (id) => document.getElementById(id);
	const problem = $('problem');
	return {
		state: $('connection').dataset.state || '',
		stateText: $('connection-text').textContent,
		current: $('current').textContent,
		steps: [...document.querySelectorAll('#timeline > li')].map((li) => ({
			seq: li.dataset.seq || '',
			status: li.dataset.status || '',
			reason: li.dataset.reason || '',
			name: li.querySelector('.step-name')?.textContent || '',
			time: li.querySelector('time')?.getAttribute('datetime') || '',
			current: li.getAttribute('aria-current') === 'step',
		})),
		problem: problem.hidden ? '' : problem.textContent,
		marker: String(window.__orderlyMarker || ''),
	};
})()`

// recorder runs in the page before its own script and logs every change of
// the connection indicator and of the timeline, so that the test sees
// states too short-lived to poll for. The log lives in the page's window:
// a reload would start it anew.
const recorder = `(() => {
	const log = [];
	window.__orderlyLog = log;
	let last = '';
	const snap = () => {
		const c = document.getElementById('connection');
		const items = [...document.querySelectorAll('#timeline > li')].map((li) => li.dataset.status);
		const s = (c ? c.dataset.state : '') + '|' + items.join(',');
		if (s !== last) {
			last = s;
			log.push({ state: c ? c.dataset.state : '', statuses: items });
		}
	};
	new MutationObserver(snap).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
})()`

// entry is one record of the recorder.
type entry struct {
	State    string   `json:"state"`
	Statuses []string `json:"statuses"`
}

func readPage(t *testing.T, ctx context.Context) view {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[view](readView))
	if err != nil {
		t.Fatalf("read the page: %v", err)
	}
	return v
}

func statuses(v view) []string {
	out := make([]string, 0, len(v.Steps))
	for _, s := range v.Steps {
		out = append(out, s.Status)
	}
	return out
}

// waitPage polls the page until cond returns nil and returns what it
// showed then.
func waitPage(t *testing.T, ctx context.Context, what string, cond func(view) error) view {
	t.Helper()
	var v view
	poll.UntilNil(t, settle, "the page to show "+what, func() error {
		v = readPage(t, ctx)
		if err := cond(v); err != nil {
			return fmt.Errorf("%w; page shows %s %v (current %q, problem %q)", err, v.State, statuses(v), v.Current, v.Problem)
		}
		return nil
	})
	return v
}

// showing waits until the timeline is exactly want and the indicator reads
// state ("" for any).
func showing(t *testing.T, ctx context.Context, state string, want ...string) view {
	t.Helper()
	return waitPage(t, ctx, fmt.Sprintf("%v, %s", want, state), func(v view) error {
		if !slices.Equal(statuses(v), want) || (state != "" && v.State != state) {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestTrackingPage follows one order from placement to delivery on its
// tracking page, in one page load, while the notification replica serving
// it is restarted (SIGTERM: close 1012), the browser goes offline and back,
// and the replica it reconnected to is killed (SIGKILL: a dropped
// connection): the page reconnects by itself each time, resumes where it
// was, and shows every status exactly once, in order, ending with the
// indicator at "final". Then it checks the Server-Sent Events fallback
// behind a proxy that refuses WebSockets, and a link with a bad token.
func TestTrackingPage(t *testing.T) {
	s := stack.New(t, stack.Options{
		Notification:   true,
		GatewayLatency: time.Second, // keeps "reserved" on screen for a while
	})
	replicaB, _ := startReplica(t, s, "replica-b", nil)
	lb := newBalancer(t)
	lb.Route(s.Notification.URL(), replicaB)

	ctx := newBrowser(t)
	exceptions := watchConsole(ctx)
	if _, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: recorder})
	}); err != nil {
		t.Fatalf("install the recorder: %v", err)
	}

	sku := fmt.Sprintf("LAMP-%d", time.Now().UnixNano()%1e9)
	s.Seed(t, stack.Product{SKU: sku, Name: "Desk lamp", PriceCents: 2490, Stock: 5})
	_, token := s.NewCustomer(t)
	admin := s.AdminToken(t)
	o := s.PlaceOrder(t, token, stack.OrderRequest{Items: []stack.Item{{SKU: sku, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
	if o.TrackingToken == "" {
		t.Fatalf("order %s has no tracking token", o.ID)
	}
	trackURL := lb.URL() + "/track/" + o.ID + "?token=" + url.QueryEscape(o.TrackingToken)

	if err := chromedp.Do(ctx, chromedp.Navigate(trackURL)); err != nil {
		t.Fatalf("open %s: %v", trackURL, err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[string](`window.__orderlyMarker = 'first-load'`)); err != nil {
		t.Fatalf("mark the page: %v", err)
	}

	// The saga runs on its own: pending → reserved → confirmed.
	showing(t, ctx, "live", "pending", "reserved", "confirmed")

	// The replica restarts (SIGTERM: it closes the WebSocket with 1012).
	// While no replica is ready, the order ships; the page must catch up
	// by itself once one is back.
	lb.Route() // the balancer sees no ready replica
	s.Notification.Stop(t)
	waitPage(t, ctx, "reconnecting…", func(v view) error {
		if v.State != "reconnecting" || v.StateUI != "reconnecting…" {
			return errors.New("not reconnecting")
		}
		return nil
	})
	act(t, s, admin, o.ID, "ship")
	s.WaitStatus(t, token, o.ID, "shipped", "", settle)
	s.Notification.Start(t)
	lb.Route(s.Notification.URL(), replicaB)
	showing(t, ctx, "live", "pending", "reserved", "confirmed", "shipped")

	// The browser goes offline, then online again.
	setOffline(t, ctx, true)
	waitPage(t, ctx, "offline", func(v view) error {
		if v.State != "offline" || v.StateUI != "offline" {
			return errors.New("not offline")
		}
		return nil
	})
	setOffline(t, ctx, false)
	showing(t, ctx, "live", "pending", "reserved", "confirmed", "shipped")

	// The replica dies (SIGKILL: the connection just drops); the page
	// reconnects to the other one, which delivers the last status.
	lb.Route(replicaB)
	s.Notification.Kill(t)
	act(t, s, admin, o.ID, "deliver")
	v := showing(t, ctx, "final", "pending", "reserved", "confirmed", "shipped", "delivered")

	// Exactly once, in seq order, with names, times and the last one
	// current; and the same page load throughout.
	for i, st := range v.Steps {
		if st.Seq != fmt.Sprint(i+1) {
			t.Errorf("step %d (%s) has seq %q, want %d", i, st.Status, st.Seq, i+1)
		}
		if st.Name == "" || st.Time == "" {
			t.Errorf("step %d (%s) shows name %q and time %q, want both", i, st.Status, st.Name, st.Time)
		}
		if st.Current != (i == len(v.Steps)-1) {
			t.Errorf("step %d (%s) current = %v", i, st.Status, st.Current)
		}
	}
	if v.Current != "Delivered" || v.StateUI != "final" || v.Problem != "" {
		t.Errorf("page shows current %q, indicator %q, problem %q; want Delivered, final, none", v.Current, v.StateUI, v.Problem)
	}
	if v.Marker != "first-load" {
		t.Errorf("the page was reloaded (marker %q)", v.Marker)
	}
	checkLog(t, ctx)

	// After "final" the page stays quiet: no more connections.
	before := lb.Streams()
	time.Sleep(3 * time.Second) // longer than the first backoff step; an absence has nothing to poll for
	if after := lb.Streams(); after["ws"] != before["ws"] || after["events"] != before["events"] {
		t.Errorf("the page kept connecting after final: %v then %v", before, after)
	}

	screenshot(t, ctx, "tracking-page.png", "the delivered order's page")

	if errs := exceptions(); len(errs) > 0 {
		t.Errorf("uncaught exceptions on the page:\n%s", strings.Join(errs, "\n"))
	}

	t.Run("server-sent events when WebSockets are refused", func(t *testing.T) {
		lb.BlockWebSockets(true)
		defer lb.BlockWebSockets(false)
		before := lb.Streams()
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		if err := chromedp.Do(tab, chromedp.Navigate(trackURL)); err != nil {
			t.Fatalf("open %s: %v", trackURL, err)
		}
		showing(t, tab, "final", "pending", "reserved", "confirmed", "shipped", "delivered")
		after := lb.Streams()
		if after["events"] <= before["events"] || after["ws"] < before["ws"]+2 {
			t.Errorf("stream requests %v then %v: want at least two refused WebSockets, then an event stream", before, after)
		}
	})

	t.Run("over HTTPS the page streams over WSS", func(t *testing.T) {
		ca := tlstest.NewCA(t)
		base, _ := startReplica(t, s, "replica-tls", ca)
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		// The browser does not know the test's CA; the page's own
		// choice of ws: or wss: is what is under test, and a ws: from
		// an https: page would be blocked as mixed content.
		if err := chromedp.Do(tab, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, security.SetIgnoreCertificateErrors, security.SetIgnoreCertificateErrorsParams{Ignore: true})
			return err
		})); err != nil {
			t.Fatalf("ignore certificate errors: %v", err)
		}
		u := base + "/track/" + o.ID + "?token=" + url.QueryEscape(o.TrackingToken)
		if err := chromedp.Do(tab, chromedp.Navigate(u)); err != nil {
			t.Fatalf("open %s: %v", u, err)
		}
		showing(t, tab, "final", "pending", "reserved", "confirmed", "shipped", "delivered")
		if n := sentOver(t, ca.Client(), base, "websocket"); n == 0 {
			t.Errorf("the HTTPS replica sent nothing over WebSocket; the page did not use wss:")
		}
	})

	t.Run("a bad token shows that the link is not valid", func(t *testing.T) {
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		bad := lb.URL() + "/track/" + o.ID + "?token=not-a-token"
		if err := chromedp.Do(tab, chromedp.Navigate(bad)); err != nil {
			t.Fatalf("open %s: %v", bad, err)
		}
		v := waitPage(t, tab, "the link refused", func(v view) error {
			if v.State != "denied" || v.Problem == "" {
				return errors.New("not refused")
			}
			return nil
		})
		if len(v.Steps) != 0 {
			t.Errorf("a refused link shows statuses %v", statuses(v))
		}
	})
}

// sentOver returns how many messages the notification replica at base has
// sent over transport ("websocket" or "sse"), from its metrics.
func sentOver(t *testing.T, client *http.Client, base, transport string) int {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("GET %s/metrics: %v", base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s/metrics: %v", base, err)
	}
	n := 0
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, "notification_messages_sent_total{") && strings.Contains(line, `transport="`+transport+`"`) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(strings.TrimSpace(line), ' ')+1:], &v); err == nil {
				n += int(v)
			}
		}
	}
	return n
}

// act runs an admin action (ship, deliver) on the order.
func act(t *testing.T, s *stack.Stack, admin, id, action string) {
	t.Helper()
	r := s.Do(t, http.MethodPost, s.Order.URL(), "/v1/orders/"+id+"/"+action, admin, nil)
	if r.Status != http.StatusOK && r.Status != http.StatusAccepted {
		t.Fatalf("POST /v1/orders/%s/%s = %s, want 200 or 202", id, action, r)
	}
}

// setOffline makes the browser report itself offline (navigator.onLine
// false, an "offline" event) or online again.
func setOffline(t *testing.T, ctx context.Context, offline bool) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, network.OverrideNetworkState, network.OverrideNetworkStateParams{
			Offline: offline, Latency: 0, DownloadThroughput: -1, UploadThroughput: -1,
		})
		return err
	})); err != nil {
		t.Fatalf("set offline %v: %v", offline, err)
	}
}

// checkLog checks what the recorder saw over the page's life: the timeline
// only ever grew by appending one new status after another (no duplicate,
// nothing reordered or removed), and the indicator went through each
// reconnection and ended at "final".
func checkLog(t *testing.T, ctx context.Context) {
	t.Helper()
	log, err := chromedp.Run(ctx, chromedp.Evaluate[[]entry](`window.__orderlyLog`))
	if err != nil {
		t.Fatalf("read the recorder's log: %v", err)
	}
	var prev []string
	var states []string
	for _, e := range log {
		if len(e.Statuses) < len(prev) || !slices.Equal(e.Statuses[:len(prev)], prev) {
			t.Errorf("timeline went from %v to %v", prev, e.Statuses)
		}
		for i, s := range e.Statuses {
			if slices.Index(e.Statuses, s) != i {
				t.Errorf("timeline %v shows %s twice", e.Statuses, s)
			}
		}
		prev = e.Statuses
		if e.State != "" && (len(states) == 0 || states[len(states)-1] != e.State) { // "": not parsed yet
			states = append(states, e.State)
		}
	}
	// Each outage shows as a run of reconnecting/offline between two
	// live runs: the restart, going offline, the kill.
	var outages int
	for i := 1; i < len(states); i++ {
		if states[i-1] == "live" && (states[i] == "reconnecting" || states[i] == "offline") {
			outages++
		}
	}
	if outages < 3 || len(states) == 0 || states[len(states)-1] != "final" {
		t.Errorf("indicator went %v: want three outages after being live, ending final", states)
	}
	t.Logf("indicator: %s", strings.Join(states, " → "))
}
