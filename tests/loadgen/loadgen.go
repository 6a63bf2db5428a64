// Package loadgen drives Orderly the way shoppers use it, at a fixed rate:
// each order is placed through the order API (POST /v1/orders, a
// customer's JWT, a fresh Idempotency-Key) and then followed on the
// notification service's WebSocket until it is confirmed or cancelled.
//
// It is an open-loop generator: order i starts at start + i/rate in its own
// goroutine whether or not earlier orders have finished, so a slow system
// cannot slow the load down and hide its own latency (the "coordinated
// omission" of closed-loop generators). Its own CPU counts in end-to-end
// figures, so it keeps HTTP connections alive in a large idle pool, builds
// request bodies by appending bytes, and holds one WebSocket per order and
// nothing else.
//
// A run offers one rate for a while, or several phases one after the other
// on the same open-loop schedule (RunPhases: an overload, then a recovery).
// Per order it records the POST latency (request sent → whole 201
// response read), the placed→confirmed latency (request sent → the
// confirmed message read from the WebSocket), how the order ended and, for
// a refused POST, its status, Retry-After and problem type; a Result sums
// them up, over the whole run or (Timeline) window by window. Benchmarks
// and fault tests share it.
package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/orderly/orderly/pkg/authn"
)

// Config describes the system under load and the orders to send.
type Config struct {
	// OrderURL and NotificationURL are the services' base URLs
	// ("http://127.0.0.1:8080").
	OrderURL, NotificationURL string
	// Secret is the services' AUTH_JWT_SECRET; customers' tokens are
	// minted with it.
	Secret []byte
	// SKUs are the products orders choose from; every one must be in the
	// order service's catalog, with enough stock for the whole run.
	SKUs []string
	// Customers is how many customers place the orders (default 500).
	Customers int
	// PaymentMethod is every order's payment method (default pm_card_ok).
	PaymentMethod string
	// DeclineEvery, when positive, makes every DeclineEvery-th order
	// (index 0, n, 2n…) pay with pm_card_declined instead, so that the
	// saga's decline path (payment declined, stock released) runs too.
	DeclineEvery int
	// Deadline bounds one order, from sending its POST to its terminal
	// status (default 60s).
	Deadline time.Duration
	// Seed makes the orders' composition reproducible.
	Seed uint64
	// TokenTTL is how long the customers' tokens stay valid (default 3h;
	// the services refuse more than AUTH_JWT_MAX_TTL, 24h by default).
	TokenTTL time.Duration
	// MaxIdleConns bounds the keep-alive connections kept to the order
	// service (default 4096: every POST in flight at a high rate).
	MaxIdleConns int
	// Replicas, when set, returns the base URLs of the running order and
	// notification replicas, and takes the place of OrderURL and
	// NotificationURL. It is asked anew for every POST and every WebSocket,
	// since a restarted replica may listen elsewhere: order i is placed on
	// order[i mod len] and watched on notification[(i+attempt) mod len], so
	// the load spreads over every replica and a watcher that lost its
	// replica resumes on the next one.
	Replicas func() (order, notification []string)
	// Resume makes a watcher read its order from the first status (since=0)
	// and, when its WebSocket fails before a terminal status, connect again
	// with since = the last seq it read, until the deadline, as the tracking
	// page does. Without it a failed WebSocket ends the watch, and a watcher
	// starts from the current status.
	Resume bool
}

// Generator sends orders as Config says. Its methods may be called from
// several goroutines, but runs that overlap share the machine and the
// system under load, which is rarely what a measurement wants.
type Generator struct {
	cfg       Config
	orders    string   // POST URL
	wsBase    string   // ws://host:port/v1/orders/
	auth      []string // "Bearer <jwt>" per customer
	skuJSON   [][]byte // each SKU as a JSON string
	pmJSON    []byte
	declined  []byte // pm_card_declined as JSON
	client    *http.Client
	dialer    ws.Dialer
	next      atomic.Int64 // first composition index of the next run
	transport *http.Transport
}

// New checks cfg, mints a token per customer and returns a generator. It
// returns an error for a missing URL, secret or SKU, or when a token cannot
// be minted.
func New(cfg Config) (*Generator, error) {
	if cfg.Customers <= 0 {
		cfg.Customers = 500
	}
	if cfg.PaymentMethod == "" {
		cfg.PaymentMethod = "pm_card_ok"
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 60 * time.Second
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = 3 * time.Hour
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 4096
	}
	if cfg.Replicas != nil && cfg.OrderURL == "" && cfg.NotificationURL == "" {
		// Only to pass the checks below: every URL comes from Replicas.
		cfg.OrderURL, cfg.NotificationURL = "http://replicas", "http://replicas"
	}
	switch {
	case cfg.OrderURL == "" || cfg.NotificationURL == "":
		return nil, errors.New("loadgen: OrderURL and NotificationURL (or Replicas) are required")
	case len(cfg.Secret) == 0:
		return nil, errors.New("loadgen: Secret is required")
	case len(cfg.SKUs) == 0:
		return nil, errors.New("loadgen: at least one SKU is required")
	}
	wsBase, err := wsOrdersURL(cfg.NotificationURL)
	if err != nil {
		return nil, err
	}
	g := &Generator{
		cfg:    cfg,
		orders: ordersURL(cfg.OrderURL),
		wsBase: wsBase,
	}
	exp := time.Now().Add(cfg.TokenTTL)
	g.auth = make([]string, cfg.Customers)
	for i := range g.auth {
		tok, err := authn.Issue(cfg.Secret, authn.Claims{Subject: customerID(cfg.Seed, i), ExpiresAt: exp}, "", "")
		if err != nil {
			return nil, fmt.Errorf("loadgen: mint token: %w", err)
		}
		g.auth[i] = "Bearer " + tok
	}
	for _, s := range cfg.SKUs {
		b, _ := json.Marshal(s) // a string always marshals
		g.skuJSON = append(g.skuJSON, b)
	}
	g.pmJSON, _ = json.Marshal(cfg.PaymentMethod)
	g.declined, _ = json.Marshal("pm_card_declined")

	g.transport = &http.Transport{
		Proxy:               nil, // never through an environment proxy: the system is local
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.MaxIdleConns,
		MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	g.client = &http.Client{Transport: g.transport} // each request is bounded by its order's deadline
	return g, nil
}

// ordersURL is the POST URL of the order service at base.
func ordersURL(base string) string { return strings.TrimSuffix(base, "/") + "/v1/orders" }

// wsOrdersURL turns the notification service's base URL into the prefix
// of its WebSocket URLs ("ws://host:port/v1/orders/"). It returns an error
// for a URL that is not http or https.
func wsOrdersURL(base string) (string, error) {
	n, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("loadgen: notification URL: %w", err)
	}
	switch n.Scheme {
	case "http":
		n.Scheme = "ws"
	case "https":
		n.Scheme = "wss"
	default:
		return "", fmt.Errorf("loadgen: notification URL %q: want http or https", base)
	}
	return strings.TrimSuffix(n.String(), "/") + "/v1/orders/", nil
}

// orderTarget returns the POST URL for order i.
func (g *Generator) orderTarget(i int) string {
	if g.cfg.Replicas == nil {
		return g.orders
	}
	order, _ := g.cfg.Replicas()
	return ordersURL(order[i%len(order)])
}

// watchTarget returns the WebSocket URL prefix for order i's attempt-th
// connection (0 for the first).
func (g *Generator) watchTarget(i, attempt int) (string, error) {
	if g.cfg.Replicas == nil {
		return g.wsBase, nil
	}
	_, notification := g.cfg.Replicas()
	return wsOrdersURL(notification[(i+attempt)%len(notification)])
}

// CustomerIDs returns the ids of the customers the orders are placed by
// (the subjects of their tokens, which the order service stores as the
// orders' customer_id), in the order Pick.Customer indexes them.
func (g *Generator) CustomerIDs() []string {
	ids := make([]string, g.cfg.Customers)
	for i := range ids {
		ids[i] = customerID(g.cfg.Seed, i)
	}
	return ids
}

// customerID is customer i's id under seed.
func customerID(seed uint64, i int) string { return fmt.Sprintf("loadgen-%d-%04d", seed, i) }

// Close closes the idle keep-alive connections.
func (g *Generator) Close() { g.transport.CloseIdleConnections() }

// Run offers rate orders per second for d (Count(rate, d) orders, order i
// due at start + i/rate, each in its own goroutine) and returns once every
// order has ended: terminal, failed, or past its deadline. Cancelling ctx
// stops the schedule and ends the orders in flight as Aborted. It returns
// an error only for a rate or duration that is not positive.
func (g *Generator) Run(ctx context.Context, rate float64, d time.Duration) (*Result, error) {
	return g.RunPhases(ctx, Phase{Rate: rate, Duration: d})
}

// RunPhases offers the phases one after the other, each as Run offers its
// rate for its duration, on one open-loop schedule (see Schedule): a phase
// starts when the previous one's window ends, whatever its orders are
// doing. It returns once every order of every phase has ended; Order.Phase
// says which phase an order belonged to. Cancelling ctx stops the schedule
// and ends the orders in flight as Aborted. It returns an error only when
// there is no phase or a phase offers no order.
func (g *Generator) RunPhases(ctx context.Context, phases ...Phase) (*Result, error) {
	if len(phases) == 0 {
		return nil, errors.New("loadgen: no phase to run")
	}
	for _, p := range phases {
		if p.Rate <= 0 || p.Duration <= 0 || Count(p.Rate, p.Duration) == 0 {
			return nil, fmt.Errorf("loadgen: rate %v for %v offers no order", p.Rate, p.Duration)
		}
	}
	slots, window := Schedule(phases...)
	n := len(slots)
	base := int(g.next.Add(int64(n))) - n
	res := &Result{Rate: phases[0].Rate, Window: window, Phases: append([]Phase(nil), phases...), Orders: make([]Order, n)}
	if len(phases) > 1 {
		res.Rate = float64(n) / window.Seconds() // the average
	}
	for i := range res.Orders {
		res.Orders[i].Index, res.Orders[i].Phase = i, slots[i].Phase
	}

	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	timer.Stop() // armed by the schedule below
	res.Start = time.Now()
schedule:
	for i := range n {
		if wait := time.Until(res.Start.Add(slots[i].Due)); wait > 0 {
			// The schedule is the only wait: nothing here depends on how
			// earlier orders are doing.
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() { g.place(ctx, &res.Orders[i], Compose(g.cfg.Seed, base+i, len(g.auth), len(g.skuJSON))) })
	}
	wg.Wait()
	for i := range res.Orders {
		if o := &res.Orders[i]; o.Sent.IsZero() {
			o.Outcome, o.Kind = Aborted, "aborted" // never sent: the run was cancelled
		}
	}
	res.Finished = time.Now()
	res.summarize()
	return res, nil
}

// created is what the generator needs from a 201 response.
type created struct {
	ID            string `json:"id"`
	TrackingToken string `json:"tracking_token"`
}

// place places one order and follows it to its end, recording into o.
func (g *Generator) place(ctx context.Context, o *Order, p Pick) {
	p.Declined = g.cfg.DeclineEvery > 0 && o.Index%g.cfg.DeclineEvery == 0
	body := g.body(p)
	o.pick, o.Key = p, newUUID()
	o.Sent = time.Now()
	deadline := o.Sent.Add(g.cfg.Deadline)
	octx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	req, err := g.request(octx, g.orderTarget(o.Index), o, body)
	if err != nil {
		g.fail(ctx, o, TransportError, "transport", err)
		return
	}
	resp, err := g.client.Do(req)
	if err != nil {
		g.failPOST(ctx, octx, o, err)
		return
	}
	o.HTTPStatus = resp.StatusCode
	if resp.StatusCode != http.StatusCreated {
		o.Problem = problemType(resp)
		_, _ = io.Copy(io.Discard, resp.Body) // so the connection is reused
		_ = resp.Body.Close()
		o.POST = time.Since(o.Sent)
		o.Outcome, o.Kind = HTTPError, "http "+strconv.Itoa(resp.StatusCode)
		o.RetryAfter = resp.Header.Get("Retry-After")
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			if o.RetryAfter != "" {
				o.Kind += " (Retry-After)"
			} else {
				o.Kind += " (no Retry-After)"
			}
		}
		return
	}
	b, err := readBody(resp)
	_ = resp.Body.Close()
	if err != nil {
		o.HTTPStatus = 0 // no whole 201 was read
		g.failPOST(ctx, octx, o, err)
		return
	}
	o.POST = time.Since(o.Sent)
	var c created
	if err := json.Unmarshal(b, &c); err != nil || c.ID == "" || c.TrackingToken == "" {
		o.Outcome, o.Kind, o.Err = HTTPError, "http 201 without id or tracking_token", string(b)
		return
	}
	o.ID = c.ID
	g.watch(ctx, octx, o, c, deadline)
}

// request builds order o's POST to url.
func (g *Generator) request(ctx context.Context, url string, o *Order, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = http.Header{ // canonical keys set directly: no per-request canonicalization
		"Authorization":   {g.auth[o.pick.Customer]},
		"Content-Type":    {"application/json"},
		"Idempotency-Key": {o.Key},
	}
	return req, nil
}

// Answer is the order service's answer to a retried POST.
type Answer struct {
	// Status is the HTTP status, ID the order's id of a 201, Replayed
	// whether the 201 was the stored answer to an earlier try
	// (Idempotent-Replayed: true), Problem the type of a problem answer.
	Status   int
	ID       string
	Replayed bool
	Problem  string
}

// Retry sends order o's POST again to the order service at base: the
// same customer, body and Idempotency-Key, as a client retries a POST that
// failed. It returns an error when no answer came, and never follows the
// order. o must have been sent by a run of g.
func (g *Generator) Retry(ctx context.Context, base string, o *Order) (Answer, error) {
	if o.Key == "" {
		return Answer{}, fmt.Errorf("loadgen: order %d was never sent", o.Index)
	}
	req, err := g.request(ctx, ordersURL(base), o, g.body(o.pick))
	if err != nil {
		return Answer{}, err
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return Answer{}, err
	}
	defer resp.Body.Close()
	a := Answer{Status: resp.StatusCode, Replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	if resp.StatusCode != http.StatusCreated {
		a.Problem = problemType(resp)
		return a, nil
	}
	b, err := readBody(resp)
	if err != nil {
		return a, err
	}
	var c created
	if err := json.Unmarshal(b, &c); err != nil {
		return a, fmt.Errorf("loadgen: 201 body %q: %w", b, err)
	}
	a.ID = c.ID
	return a, nil
}

// problemType returns the type of an application/problem+json answer
// (read from at most 4 KiB of its body), or "" for any other answer.
func problemType(resp *http.Response) string {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "application/problem+json" {
		return ""
	}
	var p struct {
		Type string `json:"type"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&p) != nil {
		return ""
	}
	return p.Type
}

// failPOST records a POST that got no (whole) answer.
func (g *Generator) failPOST(ctx, octx context.Context, o *Order, err error) {
	if ctx.Err() == nil && octx.Err() != nil {
		g.fail(ctx, o, TimedOut, "timed out (POST)", err)
		return
	}
	g.fail(ctx, o, TransportError, "transport", err)
}

// fail records a failure, or an abort when the run's context ended.
func (g *Generator) fail(ctx context.Context, o *Order, out Outcome, kind string, err error) {
	if ctx.Err() != nil {
		out, kind = Aborted, "aborted"
	}
	o.Outcome, o.Kind = out, kind
	if err != nil {
		o.Err = err.Error()
	}
}

// readBody reads a whole response body, sized by Content-Length when the
// server sent one.
func readBody(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n > 0 && n <= 1<<20 {
		b := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

// status is a live tracking message; the generator needs only these fields.
type status struct {
	Type   string `json:"type"`
	Status string `json:"status"`
	Reason string `json:"reason"`
	Seq    int64  `json:"seq"`
}

// watch follows the order on a WebSocket until a terminal status, a
// failure or deadline (octx is ctx bounded by it); with Config.Resume, on
// as many WebSockets as it takes.
func (g *Generator) watch(ctx, octx context.Context, o *Order, c created, deadline time.Time) {
	var last int64
	for attempt := 0; ; attempt++ {
		retry := g.watchOnce(ctx, octx, o, c, deadline, attempt, &last)
		if !retry || !g.cfg.Resume {
			return
		}
		// The replica may be gone for seconds: pace the reconnects (the
		// next try goes to the next replica anyway).
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-t.C:
		case <-octx.Done():
			t.Stop()
			g.fail(ctx, o, TimedOut, "timed out (WebSocket)", octx.Err())
			return
		}
	}
}

// watchOnce reads the order's statuses from one WebSocket, the attempt-th
// of its watch, after seq *last. It records the outcome into o and reports
// whether the failure it recorded is one a resuming watcher gets past by
// connecting again (a replica that went away, or was full).
func (g *Generator) watchOnce(ctx, octx context.Context, o *Order, c created, deadline time.Time, attempt int, last *int64) (retry bool) {
	base, err := g.watchTarget(o.Index, attempt)
	if err != nil {
		g.fail(ctx, o, WSClosed, "ws failed", err)
		return false
	}
	u := base + c.ID + "/ws?token=" + url.QueryEscape(c.TrackingToken)
	if g.cfg.Resume {
		u += "&since=" + strconv.FormatInt(*last, 10)
	}
	o.Connections++
	conn, br, _, err := g.dialer.Dial(octx, u)
	if err != nil {
		var se ws.StatusError
		switch {
		case errors.As(err, &se):
			g.fail(ctx, o, WSRefused, "ws refused "+strconv.Itoa(int(se)), err)
			return se == http.StatusServiceUnavailable && ctx.Err() == nil
		case ctx.Err() == nil && octx.Err() != nil:
			g.fail(ctx, o, TimedOut, "timed out (WebSocket)", err)
			return false
		default:
			g.fail(ctx, o, WSClosed, "ws failed", err)
			return ctx.Err() == nil
		}
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	// Reads are bounded by the deadline; a cancelled run cuts them short.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var src io.Reader = conn
	if br != nil {
		// The server's first frames arrived with the handshake.
		src = br
		defer ws.PutReader(br)
	}
	rw := struct {
		io.Reader
		io.Writer
	}{src, conn}

	for {
		data, op, err := readServerData(rw)
		if err != nil {
			var ce wsutil.ClosedError
			kind := "ws failed"
			switch {
			case errors.As(err, &ce):
				kind = "ws closed " + strconv.Itoa(int(ce.Code))
			case errors.Is(err, os.ErrDeadlineExceeded):
				g.fail(ctx, o, TimedOut, "timed out (WebSocket)", err)
				return false
			}
			g.fail(ctx, o, WSClosed, kind, err)
			if ctx.Err() == nil {
				o.Drops = append(o.Drops, kind)
			}
			return ctx.Err() == nil
		}
		if op != ws.OpText {
			continue
		}
		var m status
		if json.Unmarshal(data, &m) != nil || m.Type != "status" {
			continue
		}
		if o.Messages > 0 && m.Seq != *last+1 {
			o.SeqBreaks++
		}
		o.Messages++
		o.Seqs = append(o.Seqs, m.Seq)
		*last = m.Seq
		switch m.Status {
		case "confirmed":
			o.ToConfirmed = time.Since(o.Sent)
			o.Outcome, o.Kind, o.Err = Confirmed, "", ""
		case "cancelled":
			o.Outcome, o.Kind, o.Reason, o.Err = Cancelled, "cancelled: "+m.Reason, m.Reason, ""
		default:
			continue
		}
		closeWS(conn, src, deadline)
		return false
	}
}

// readServerData is wsutil.ReadServerData, except that a close frame
// with a code that RFC 6455 left to IANA's registry (1012 service restart,
// 1013 try again later) ends the read as a close with that code: gobwas
// checks codes against the RFC's own list only, and calls those a protocol
// error, while the notification service closes with 1012 when a replica
// goes away. The close is answered with the same code, as the RFC asks.
func readServerData(rw io.ReadWriter) ([]byte, ws.OpCode, error) {
	control := wsutil.ControlFrameHandler(rw, ws.StateClientSide)
	handle := func(h ws.Header, r io.Reader) error {
		if h.OpCode != ws.OpClose || h.Length < 2 {
			return control(h, r)
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r, payload); err != nil {
			return err
		}
		code, reason := ws.ParseCloseFrameData(payload)
		if err := wsutil.WriteClientMessage(rw, ws.OpClose, ws.NewCloseFrameBody(code, "")); err != nil {
			return err
		}
		return wsutil.ClosedError{Code: code, Reason: reason}
	}
	rd := &wsutil.Reader{Source: rw, State: ws.StateClientSide, CheckUTF8: true, OnIntermediate: handle}
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return nil, 0, err
		}
		if h.OpCode.IsControl() {
			if err := handle(h, rd); err != nil {
				return nil, 0, err
			}
			continue
		}
		if h.OpCode != ws.OpText && h.OpCode != ws.OpBinary {
			if err := rd.Discard(); err != nil {
				return nil, 0, err
			}
			continue
		}
		data, err := io.ReadAll(rd)
		return data, h.OpCode, err
	}
}

// closeWS ends the WebSocket with a close handshake, so the server sees
// a shopper leaving rather than a broken connection: it sends a normal
// close (a confirmed order's stream stays open for shipped and delivered)
// and reads until the server's close frame, for at most a few seconds.
func closeWS(conn net.Conn, src io.Reader, deadline time.Time) {
	if soon := time.Now().Add(3 * time.Second); soon.Before(deadline) {
		deadline = soon
	}
	_ = conn.SetDeadline(deadline)
	if wsutil.WriteClientMessage(conn, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "")) != nil {
		return
	}
	// Frames are skipped by hand: wsutil's readers would answer the
	// server's close with a second close of ours.
	for {
		h, err := ws.ReadHeader(src)
		if err != nil {
			return
		}
		if _, err := io.CopyN(io.Discard, src, h.Length); err != nil || h.OpCode == ws.OpClose {
			return
		}
	}
}

// body returns the JSON body of an order made of p.
func (g *Generator) body(p Pick) []byte {
	b := make([]byte, 0, 64+48*len(p.Lines))
	b = append(b, `{"items":[`...)
	for i, l := range p.Lines {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sku":`...)
		b = append(b, g.skuJSON[l.SKU]...)
		b = append(b, `,"quantity":`...)
		b = strconv.AppendInt(b, int64(l.Quantity), 10)
		b = append(b, '}')
	}
	b = append(b, `],"payment_method":`...)
	if p.Declined {
		return append(append(b, g.declined...), '}')
	}
	b = append(b, g.pmJSON...)
	return append(b, '}')
}

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
