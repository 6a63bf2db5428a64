package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

// board is what the dashboard shows.
type board struct {
	State       string           `json:"state"`
	Problem     string           `json:"problem"`
	LoginShown  bool             `json:"loginShown"`
	BoardShown  bool             `json:"boardShown"`
	Counts      map[string]int64 `json:"counts"`
	Latest      []string         `json:"latest"` // order ids, newest first
	RateSum     float64          `json:"rateSum"`
	ChartPoints int              `json:"chartPoints"`
	DeadLetters int64            `json:"deadLetters"`
	DLQRows     int              `json:"dlqRows"`
	Outboxes    []string         `json:"outboxes"`
	Sources     []string         `json:"sources"` // "name:ok" or "name:failed"
}

const readBoard = `(() => {
	const $ = (id) => document.getElementById(id);
	const shown = (e) => getComputedStyle(e).display !== 'none';
	const counts = {};
	for (const d of document.querySelectorAll('#counts > div')) counts[d.dataset.status] = Number(d.querySelector('dd').textContent);
	return {
		state: $('connection').dataset.state || '',
		problem: shown($('problem')) ? $('problem').textContent : '',
		loginShown: shown($('login')),
		boardShown: shown($('board')),
		counts,
		latest: [...document.querySelectorAll('#latest > tr')].map((tr) => tr.dataset.order || ''),
		rateSum: Number($('rate-now').dataset.sum || 0),
		chartPoints: Number($('chart').dataset.points || 0),
		deadLetters: Number($('dlq-total').dataset.total || 0),
		dlqRows: document.querySelectorAll('#dlq > tr').length,
		outboxes: [...document.querySelectorAll('#outbox > tr[data-service]')].map((tr) => tr.dataset.service),
		sources: [...document.querySelectorAll('#sources > li')].map((li) => li.textContent.split(':')[0] + ':' + (li.dataset.ok === 'true' ? 'ok' : 'failed')),
	};
})()`

// waitBoard polls the dashboard until cond returns nil and returns what it
// showed then.
func waitBoard(t *testing.T, ctx context.Context, what string, cond func(board) error) board {
	t.Helper()
	var b board
	poll.UntilNil(t, settle, "the dashboard to show "+what, func() error {
		var err error
		if b, err = chromedp.Run(ctx, chromedp.Evaluate[board](readBoard)); err != nil {
			t.Fatalf("read the dashboard: %v", err)
		}
		if err := cond(b); err != nil {
			js, _ := json.Marshal(b)
			return fmt.Errorf("%w; it shows %s", err, js)
		}
		return nil
	})
	return b
}

// signIn pastes token into the login form and submits it.
func signIn(t *testing.T, ctx context.Context, token string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.SetValue("#token", token), chromedp.Click("#sign-in")); err != nil {
		t.Fatalf("sign in: %v", err)
	}
}

func total(counts map[string]int64) int64 {
	var n int64
	for _, v := range counts {
		n += v
	}
	return n
}

// TestDashboardPage signs in to the operators' dashboard on a notification
// replica that reads every service's metrics: a customer's token is
// refused, an admin's shows the figures. Orders placed through the stack
// then show up live — the counts, the latest changes, the chart — and so
// does a dead letter: a message the notification service cannot read.
// The page's URLs never hold the token. A screenshot is kept.
func TestDashboardPage(t *testing.T) {
	s := stack.New(t, stack.Options{Notification: true})
	var sources []string
	for _, name := range stack.Names() {
		sources = append(sources, name+"="+s.Service(name).URL()+"/metrics")
	}
	base, _ := startReplica(t, s, "dashboard replica", nil, "NOTIFICATION_DASHBOARD_SOURCES="+strings.Join(sources, ","))

	sku := fmt.Sprintf("DASH-%d", time.Now().UnixNano()%1e9)
	s.Seed(t, stack.Product{SKU: sku, Name: "Desk lamp", PriceCents: 2490, Stock: 100})
	_, customer := s.NewCustomer(t)
	admin := s.AdminToken(t)

	ctx := newBrowser(t)
	exceptions := watchConsole(ctx)
	// Every URL the page asks for, WebSockets included, to check that
	// none holds a token.
	var (
		mu   sync.Mutex
		urls []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			urls = append(urls, e.Request.URL)
		case *network.EventWebSocketCreated:
			urls = append(urls, e.URL)
		}
	}); err != nil {
		t.Fatalf("listen to the page's requests: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/dashboard")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	waitBoard(t, ctx, "the login form", func(b board) error {
		if !b.LoginShown || b.BoardShown || b.State != "signed-out" {
			return errors.New("no login form")
		}
		return nil
	})

	// A customer's token is not an operator's.
	signIn(t, ctx, customer)
	waitBoard(t, ctx, "the customer refused", func(b board) error {
		if b.State != "denied" || !strings.Contains(b.Problem, "admin role") || !b.LoginShown || b.BoardShown {
			return errors.New("not refused")
		}
		return nil
	})

	// An admin's is.
	signIn(t, ctx, admin)
	before := waitBoard(t, ctx, "the figures", func(b board) error {
		switch {
		case b.State != "live" || !b.BoardShown || b.LoginShown || b.Problem != "":
			return errors.New("not live")
		case len(b.Counts) != 6 || b.ChartPoints != 60:
			return errors.New("no counts or chart")
		case len(b.Sources) != len(sources) || slices.ContainsFunc(b.Sources, func(s string) bool { return !strings.HasSuffix(s, ":ok") }):
			return errors.New("not every service's metrics read")
		case len(b.Outboxes) == 0 || b.DLQRows == 0:
			return errors.New("no outbox or dead-letter queue reported")
		}
		return nil
	})
	if before.DeadLetters != 0 {
		t.Errorf("the dashboard shows %d dead letters before any", before.DeadLetters)
	}

	// Orders placed through the stack show up live.
	var placed []string
	for range 3 {
		o := s.PlaceOrder(t, customer, stack.OrderRequest{Items: []stack.Item{{SKU: sku, Quantity: 1}}, PaymentMethod: "pm_card_ok"})
		placed = append(placed, o.ID)
	}
	after := waitBoard(t, ctx, "the three orders confirmed", func(b board) error {
		switch {
		case total(b.Counts) != total(before.Counts)+3:
			return errors.New("not counted")
		case b.Counts["confirmed"] < before.Counts["confirmed"]+3:
			return errors.New("not confirmed yet")
		case b.RateSum <= before.RateSum:
			return errors.New("not on the chart")
		}
		for _, id := range placed {
			if !slices.Contains(b.Latest, id) {
				return errors.New("not among the latest changes")
			}
		}
		return nil
	})
	if after.State != "live" {
		t.Errorf("indicator %q, want live", after.State)
	}

	// A message the notification service cannot read is dead-lettered,
	// and counted.
	publishUnreadable(t, s.AMQPURL)
	waitBoard(t, ctx, "the dead letter", func(b board) error {
		if b.DeadLetters < 1 {
			return errors.New("no dead letter")
		}
		return nil
	})

	screenshot(t, ctx, "dashboard.png", "the operators' dashboard")
	mu.Lock()
	var streams int
	for _, u := range urls {
		if strings.Contains(u, admin) || strings.Contains(u, customer) {
			t.Errorf("a request's URL holds a JWT: %s", u)
		}
		if strings.Contains(u, "/v1/dashboard/ws?ticket=") {
			streams++
		}
	}
	if streams == 0 {
		t.Errorf("the page opened no stream with a ticket; its requests: %v", urls)
	}
	mu.Unlock()
	if errs := exceptions(); len(errs) > 0 {
		t.Errorf("uncaught exceptions on the page:\n%s", strings.Join(errs, "\n"))
	}

	// Signing out forgets the token: a reload shows the login form.
	if err := chromedp.Do(ctx, chromedp.Click("#sign-out"), chromedp.Reload()); err != nil {
		t.Fatalf("sign out and reload: %v", err)
	}
	waitBoard(t, ctx, "the login form again", func(b board) error {
		if !b.LoginShown || b.BoardShown {
			return errors.New("still signed in")
		}
		return nil
	})
}

// publishUnreadable publishes an order status change whose body is not
// protobuf, as a broken publisher would: the notification service
// dead-letters it.
func publishUnreadable(t *testing.T, amqpURL string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	err = ch.PublishWithContext(context.Background(), "order.events", "order.status_changed", false, false, amqp.Publishing{
		MessageId: stack.NewUUID(), Type: "orderly.events.v1.OrderStatusChanged", ContentType: "application/x-protobuf",
		DeliveryMode: amqp.Persistent, Body: []byte{0xff, 0xff},
	})
	if err != nil {
		t.Fatal(err)
	}
}
