// Package invariants checks, after a load run against the real services,
// the promises Orderly makes whatever went wrong during the run (crashes,
// restarts, broker or database trouble), and prints one line per promise
// with its counts:
//
//   - orders: every order a client got a 201 for ends confirmed, or
//     cancelled with a reason, within a bound; no order exists that no
//     client was given;
//   - retries: every failed POST failed as the API promises (a
//     problem+json 503 or 504, or no answer at all), and its retry with the
//     same Idempotency-Key after recovery returned one order, never a second;
//   - charges: one authorization, for the total, per sold order; none left
//     on a cancelled one; nothing in flight;
//   - stock: per SKU, initial stock = stock + units sold, nothing reserved,
//     never below zero while the run went on (Sampler);
//   - websockets: every watcher read every status of its order once, in
//     seq order, without a gap, across the replicas it had to resume on;
//   - dlq: every dead-letter queue empty, unless the scenario expects
//     messages there;
//   - drain: every outbox empty and every queue without ready or
//     unacknowledged messages (the check waits for that before counting).
//
// Scenarios (tests/faults) call Check once the faults have stopped. The
// counting is in pure functions (TallyOrders, TallyCharges, TallyStock,
// CheckSeqs), tested on their own; Check only gathers their input from the
// databases, the broker and the generator's result.
package invariants

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
	"github.com/orderly/orderly/tests/loadgen"
	"github.com/orderly/orderly/tests/stack"
)

// Run is what a scenario hands the checker.
type Run struct {
	// Stack is the system that ran.
	Stack *stack.Stack
	// Generator and Result are the load generator and its run; failed
	// POSTs are retried through Generator.
	Generator *loadgen.Generator
	Result    *loadgen.Result
	// OrderURL returns the base URL of a running order replica, for the
	// retries.
	OrderURL func() string
	// InitialStock is every SKU's stock before the run.
	InitialStock map[string]int64
	// Sampler watched the stock during the run; nil when nobody did.
	Sampler *Sampler
	// DLQ is the number of messages the scenario expects in each
	// dead-letter queue (by name); a queue not named must be empty.
	DLQ map[string]int
	// Placed are orders the scenario placed itself, outside the load
	// (probes of recovery): they count as asked for.
	Placed []string
	// Drops are the ways a shopper's open WebSocket may end before its
	// order's terminal status ("ws closed 1012": a replica going away);
	// nil allows any, since a crash breaks connections without a word.
	Drops []string
	// Settle bounds the wait for every order to end and every outbox and
	// queue to drain (default 3 minutes: generous, the machine is shared).
	Settle time.Duration
}

// Report is the checker's verdict: one line per invariant, and what broke.
type Report struct {
	Lines      []string
	Violations []string
}

// Check retries the run's failed POSTs, waits (up to Settle) until every
// order has ended and every outbox and queue is drained, then checks each
// invariant, logs its line and fails tb (without stopping it) for each
// violation. It stops tb only when the databases or the broker cannot be
// read.
func Check(tb testing.TB, r Run) Report {
	tb.Helper()
	if r.Settle == 0 {
		r.Settle = 3 * time.Minute
	}
	var rep Report
	violate := func(format string, args ...any) {
		rep.Violations = append(rep.Violations, fmt.Sprintf(format, args...))
	}

	retries := retryFailed(tb, r, violate)
	drained := waitQuiet(tb, r, violate)

	orders := readOrders(tb, r.Stack.Order.DB)
	created := slices.Concat(retries.ids, r.Placed)
	for _, o := range r.Result.Orders {
		if o.HTTPStatus == 201 && o.ID != "" {
			created = append(created, o.ID)
		}
	}

	// orders
	ot := TallyOrders(created, orders)
	reasons := make([]string, 0, len(ot.Reasons))
	for _, k := range sortedKeys(ot.Reasons) {
		reasons = append(reasons, fmt.Sprintf("%d %s", ot.Reasons[k], orEmpty(k)))
	}
	rep.Lines = append(rep.Lines, fmt.Sprintf("orders: %d created, %d terminal (%d confirmed, %d cancelled%s), %d stuck, %d lost, %d unasked-for",
		ot.Created, ot.Terminal, ot.Confirmed, ot.Cancelled, parens(strings.Join(reasons, ", ")), len(ot.Stuck), len(ot.Lost), len(ot.Unasked)))
	if len(ot.Stuck) > 0 {
		violate("%d orders not terminal %v after the run: %v", len(ot.Stuck), r.Settle, head(ot.Stuck))
	}
	if len(ot.Lost) > 0 {
		violate("%d orders answered 201 are not in the order database: %v", len(ot.Lost), head(ot.Lost))
	}
	if len(ot.Unasked) > 0 {
		violate("%d orders in the database were given to no client (a second order for one request?): %v", len(ot.Unasked), head(ot.Unasked))
	}
	if n := ot.Reasons[""]; n > 0 {
		violate("%d orders cancelled without a reason", n)
	}

	// retries
	rep.Lines = append(rep.Lines, retries.line())
	keyed := readKeys(tb, r.Stack.Order.DB)
	var keyless []string
	for id := range orders {
		if keyed[id] == 0 {
			keyless = append(keyless, id)
		}
	}
	if len(keyless) > 0 {
		violate("%d orders have no Idempotency-Key row: %v", len(keyless), head(keyless))
	}

	// charges
	ct := TallyCharges(orders, readPayments(tb, r.Stack.Payment.DB))
	var by []string
	for _, k := range sortedKeys(ct.CancelledBy) {
		by = append(by, fmt.Sprintf("%d %s", ct.CancelledBy[k], k))
	}
	rep.Lines = append(rep.Lines, fmt.Sprintf("charges: %d sold orders, %d authorized once, %d duplicated, %d missing, %d wrong amount; cancelled: %d left authorized%s; %d in flight, %d orphans",
		ct.Sold, ct.Charged, len(ct.Duplicated), len(ct.Missing), len(ct.WrongAmount), len(ct.ChargedCancelled), parens(strings.Join(by, ", ")), len(ct.InFlight), len(ct.Orphans)))
	for what, ids := range map[string][]string{
		"sold orders charged more than once": ct.Duplicated, "sold orders without an authorization": ct.Missing,
		"authorizations for another amount than the order's total": ct.WrongAmount, "cancelled orders left authorized": ct.ChargedCancelled,
		"payments still in flight": ct.InFlight, "payments for orders the order service does not have": ct.Orphans,
	} {
		if len(ids) > 0 {
			violate("%d %s: %v", len(ids), what, head(ids))
		}
	}

	// stock
	levels, held := readStock(tb, r.Stack.Inventory.DB)
	st := TallyStock(r.InitialStock, levels, orders)
	line := fmt.Sprintf("stock: %d SKUs, %d units sold = %d taken from stock, %d oversold, %d leaked reservations (%d reservations held), %d mismatched",
		st.SKUs, st.Sold, st.Taken, len(st.Oversold), len(st.Leaked), held, len(st.Mismatched))
	if r.Sampler != nil {
		s := r.Sampler.Stop()
		line += fmt.Sprintf("; sampled %d times (%d reads failed), lowest stock %d, reserved %d, available %d", s.Samples, s.Failed, s.MinStock, s.MinReserved, s.MinAvailable)
		if s.MinStock < 0 || s.MinReserved < 0 || s.MinAvailable < 0 {
			violate("stock went negative during the run: %+v", s)
		}
		// A read fails while the database is down, which some scenarios
		// cause; a sampler that never read anything has proved nothing.
		if s.Samples == 0 {
			violate("stock sampler never read the stock: %v", s.Err)
		}
	}
	rep.Lines = append(rep.Lines, line)
	for what, v := range map[string][]string{"oversold": st.Oversold, "with units still reserved": st.Leaked, "whose stock is not initial − sold": st.Mismatched} {
		if len(v) > 0 {
			violate("%d SKUs %s: %v", len(v), what, head(v))
		}
	}
	if held > 0 {
		violate("%d reservations still held", held)
	}

	// websockets
	rep.Lines = append(rep.Lines, checkWatchers(r, orders, violate))

	// dlq and drain
	rep.Lines = append(rep.Lines, checkDLQ(tb, r, violate), drained)

	for _, l := range rep.Lines {
		tb.Log(l)
	}
	for _, v := range rep.Violations {
		tb.Error(v)
	}
	return rep
}

// retries are the failed POSTs of a run and what their retries got.
type retries struct {
	failed                                int
	unavailable, timeout, noAnswer, other int
	retried, oneOrder, replayed, bad      int
	ids                                   []string // orders the retries returned
}

func (r retries) line() string {
	return fmt.Sprintf("retries: %d POSTs failed (%d problem+json 503, %d problem+json 504, %d without an answer, %d otherwise), %d retried with their key after recovery: %d got one order (%d of them made by the failed try), %d bad answers",
		r.failed, r.unavailable, r.timeout, r.noAnswer, r.other, r.retried, r.oneOrder, r.replayed, r.bad)
}

// retryFailed sends every POST that got no 201 again, with its key, once
// the system is back; a 409 (the first try still in flight) or a 503 is
// asked again a little later, within a bound.
func retryFailed(tb testing.TB, r Run, violate func(string, ...any)) retries {
	tb.Helper()
	var rs retries
	for i := range r.Result.Orders {
		o := &r.Result.Orders[i]
		if o.HTTPStatus == 201 || o.Key == "" {
			continue // answered, or never sent
		}
		rs.failed++
		switch {
		case o.HTTPStatus == 503 && o.Problem != "":
			rs.unavailable++
		case o.HTTPStatus == 504 && o.Problem != "":
			rs.timeout++
		case o.HTTPStatus == 0:
			rs.noAnswer++
		default:
			rs.other++
			violate("POST of order %d failed with %d %q (%s), not a problem+json 503/504 or a lost connection", o.Index, o.HTTPStatus, o.Problem, o.Err)
		}
		rs.retried++
		var a loadgen.Answer
		poll.UntilNil(tb, time.Minute, fmt.Sprintf("the retry of order %d's POST to be answered", o.Index), func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var err error
			a, err = r.Generator.Retry(ctx, r.OrderURL(), o)
			switch {
			case err != nil:
				return err
			case a.Status == 409 || a.Status == 503:
				return fmt.Errorf("answered %d %s", a.Status, a.Problem)
			}
			return nil
		})
		if a.Status != 201 || a.ID == "" {
			rs.bad++
			violate("retry of order %d's POST answered %d %q, want 201", o.Index, a.Status, a.Problem)
			continue
		}
		rs.oneOrder++
		if a.Replayed {
			rs.replayed++
		}
		rs.ids = append(rs.ids, a.ID)
	}
	return rs
}

// waitQuiet waits until, twice in a row, every order has ended, every
// outbox is empty and no queue of the stack's vhost holds a ready or
// unacknowledged message (the second look guards against a message
// passing between the outbox and the queue while they were counted). It
// returns the drain line.
func waitQuiet(tb testing.TB, r Run, violate func(string, ...any)) string {
	tb.Helper()
	start := time.Now()
	var lastErr error
	var queues, outboxes int
	clean := 0
	for time.Since(start) < r.Settle {
		var err error
		outboxes, queues, err = quiet(tb, r)
		if err == nil {
			if clean++; clean == 2 {
				return fmt.Sprintf("drain: %d outboxes empty, %d queues with 0 ready and 0 unacked, %.1fs after the run", outboxes, queues, time.Since(start).Seconds())
			}
		} else {
			clean, lastErr = 0, err
		}
		time.Sleep(500 * time.Millisecond) // the poll
	}
	violate("not quiet %v after the run: %v", r.Settle, lastErr)
	return fmt.Sprintf("drain: NOT drained after %v: %v", r.Settle, lastErr)
}

// quiet returns the number of outboxes and queues when the system is
// quiet, else what is still moving.
func quiet(tb testing.TB, r Run) (outboxes, queues int, err error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var open int
	if err := r.Stack.Order.DB.QueryRow(ctx, `SELECT count(*) FROM orders WHERE status IN ('pending', 'reserved')`).Scan(&open); err != nil {
		return 0, 0, err
	}
	if open > 0 {
		return 0, 0, fmt.Errorf("%d orders not ended", open)
	}
	for _, svc := range []*stack.Service{r.Stack.Order, r.Stack.Inventory, r.Stack.Payment, r.Stack.Notification} {
		if svc == nil {
			continue
		}
		// Notification publishes nothing, so it has no outbox.
		var has bool
		if err := svc.DB.QueryRow(ctx, `SELECT to_regclass('outbox') IS NOT NULL`).Scan(&has); err != nil {
			return 0, 0, fmt.Errorf("%s outbox: %w", svc.Name, err)
		}
		if !has {
			continue
		}
		var n int
		if err := svc.DB.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
			return 0, 0, fmt.Errorf("%s outbox: %w", svc.Name, err)
		}
		if n > 0 {
			return 0, 0, fmt.Errorf("%s outbox holds %d events", svc.Name, n)
		}
		outboxes++
	}
	qs := listQueues(tb, r.Stack.AMQPURL)
	for _, q := range qs {
		if !strings.HasSuffix(q.name, ".dlq") && q.ready+q.unacked > 0 {
			return 0, 0, fmt.Errorf("queue %s: %d ready, %d unacked", q.name, q.ready, q.unacked)
		}
	}
	return outboxes, len(qs), nil
}

// checkDLQ compares every dead-letter queue with what the scenario
// expects and returns the dlq line.
func checkDLQ(tb testing.TB, r Run, violate func(string, ...any)) string {
	tb.Helper()
	var n, total, want int
	for _, w := range r.DLQ {
		want += w
	}
	for _, q := range listQueues(tb, r.Stack.AMQPURL) {
		if !strings.HasSuffix(q.name, ".dlq") {
			continue
		}
		n++
		got := q.ready + q.unacked
		total += got
		if got != r.DLQ[q.name] {
			violate("dead-letter queue %s holds %d messages, want %d", q.name, got, r.DLQ[q.name])
		}
	}
	return fmt.Sprintf("dlq: %d queues, %d messages (%d expected)", n, total, want)
}

// checkWatchers compares every watcher's seqs with its order's history
// and returns the websockets line.
func checkWatchers(r Run, orders map[string]OrderRow, violate func(string, ...any)) string {
	var watched, complete, statuses, resumed, unfinished int
	var sum SeqFaults
	drops := map[string]int{}
	for _, o := range r.Result.Orders {
		if o.HTTPStatus != 201 || o.ID == "" {
			continue // never watched
		}
		watched++
		statuses += len(o.Seqs)
		if o.Connections > 1 {
			resumed++
		}
		for _, d := range o.Drops {
			drops[d]++
			if r.Drops != nil && !slices.Contains(r.Drops, d) {
				violate("watcher of order %s lost its WebSocket with %q; only %v may end one here", o.ID, d, r.Drops)
			}
		}
		f := CheckSeqs(orders[o.ID].Version, o.Seqs)
		sum.Missing += f.Missing
		sum.Repeated += f.Repeated
		sum.OutOfOrder += f.OutOfOrder
		sum.Unknown += f.Unknown
		ended := o.Outcome == loadgen.Confirmed || o.Outcome == loadgen.Cancelled
		if !ended {
			unfinished++
			violate("watcher of order %s ended %q (%s) after seqs %v", o.ID, o.Kind, o.Err, o.Seqs)
		} else if !f.Clean() {
			violate("watcher of order %s read seqs %v of 1..%d: %+v", o.ID, o.Seqs, orders[o.ID].Version, f)
		}
		if ended && f.Clean() {
			complete++
		}
	}
	var dropped []string
	for _, k := range sortedKeys(drops) {
		dropped = append(dropped, fmt.Sprintf("%d %s", drops[k], k))
	}
	return fmt.Sprintf("websockets: %d watched, %d complete, %d statuses read, %d resumed on another connection%s, %d missing, %d repeated, %d out of order, %d unknown, %d unfinished",
		watched, complete, statuses, resumed, parens(strings.Join(dropped, ", ")), sum.Missing, sum.Repeated, sum.OutOfOrder, sum.Unknown, unfinished)
}

type queue struct {
	name           string
	ready, unacked int
}

// listQueues lists the vhost's queues with rabbitmqctl (the management
// plugin is not enabled on every broker).
func listQueues(tb testing.TB, amqpURL string) []queue {
	tb.Helper()
	u, err := url.Parse(amqpURL)
	if err != nil {
		tb.Fatalf("parse %s: %v", amqpURL, err)
	}
	out := rabbittest.Ctl(tb, "list_queues", "-p", strings.TrimPrefix(u.Path, "/"), "--no-table-headers", "name", "messages_ready", "messages_unacknowledged")
	var qs []queue
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 3 {
			continue
		}
		ready, err1 := strconv.Atoi(f[1])
		unacked, err2 := strconv.Atoi(f[2])
		if err1 != nil || err2 != nil {
			tb.Fatalf("rabbitmqctl list_queues: %q", l)
		}
		qs = append(qs, queue{f[0], ready, unacked})
	}
	return qs
}

func readOrders(tb testing.TB, db *pgxpool.Pool) map[string]OrderRow {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]OrderRow{}
	rows, err := db.Query(ctx, `SELECT id::text, status, reason, version, total_cents FROM orders`)
	if err != nil {
		tb.Fatalf("read orders: %v", err)
	}
	for rows.Next() {
		var o OrderRow
		if err := rows.Scan(&o.ID, &o.Status, &o.Reason, &o.Version, &o.TotalCents); err != nil {
			tb.Fatalf("read orders: %v", err)
		}
		o.Lines = map[string]int64{}
		out[o.ID] = o
	}
	if rows.Err() != nil {
		tb.Fatalf("read orders: %v", rows.Err())
	}
	rows, err = db.Query(ctx, `SELECT order_id::text, sku, quantity FROM order_items`)
	if err != nil {
		tb.Fatalf("read order items: %v", err)
	}
	for rows.Next() {
		var id, sku string
		var q int64
		if err := rows.Scan(&id, &sku, &q); err != nil {
			tb.Fatalf("read order items: %v", err)
		}
		out[id].Lines[sku] += q
	}
	if rows.Err() != nil {
		tb.Fatalf("read order items: %v", rows.Err())
	}
	return out
}

// readKeys returns how many Idempotency-Key rows point at each order.
func readKeys(tb testing.TB, db *pgxpool.Pool) map[string]int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT order_id::text FROM idempotency_keys`)
	if err != nil {
		tb.Fatalf("read idempotency keys: %v", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			tb.Fatalf("read idempotency keys: %v", err)
		}
		out[id]++
	}
	if rows.Err() != nil {
		tb.Fatalf("read idempotency keys: %v", rows.Err())
	}
	return out
}

func readPayments(tb testing.TB, db *pgxpool.Pool) []PaymentRow {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT order_id::text, status, amount_cents FROM payments`)
	if err != nil {
		tb.Fatalf("read payments: %v", err)
	}
	var out []PaymentRow
	for rows.Next() {
		var p PaymentRow
		if err := rows.Scan(&p.OrderID, &p.Status, &p.AmountCents); err != nil {
			tb.Fatalf("read payments: %v", err)
		}
		out = append(out, p)
	}
	if rows.Err() != nil {
		tb.Fatalf("read payments: %v", rows.Err())
	}
	return out
}

// readStock returns every product's levels and how many reservations are
// still held.
func readStock(tb testing.TB, db *pgxpool.Pool) (map[string]Level, int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT sku, stock, reserved FROM products`)
	if err != nil {
		tb.Fatalf("read products: %v", err)
	}
	out := map[string]Level{}
	for rows.Next() {
		var sku string
		var l Level
		if err := rows.Scan(&sku, &l.Stock, &l.Reserved); err != nil {
			tb.Fatalf("read products: %v", err)
		}
		out[sku] = l
	}
	if rows.Err() != nil {
		tb.Fatalf("read products: %v", rows.Err())
	}
	var held int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM reservations WHERE status = 'reserved'`).Scan(&held); err != nil {
		tb.Fatalf("count held reservations: %v", err)
	}
	return out, held
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func orEmpty(s string) string {
	if s == "" {
		return "without a reason"
	}
	return s
}

func parens(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}

// head returns at most the first five of ids, enough to start looking.
func head(ids []string) []string { return ids[:min(len(ids), 5)] }
