package stack

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/pkg/rabbit/rabbittest"
)

// WaitCatalog waits until the order service's catalog replica (its
// catalog table, fed by ProductUpserted) holds sku at priceCents. The order
// API has no catalog endpoint, and probing it with a valid order would place
// one, so this looks in the order database.
func (s *Stack) WaitCatalog(tb testing.TB, sku string, priceCents int64) {
	tb.Helper()
	poll.UntilNil(tb, 30*time.Second, "the order service's catalog to know "+sku, func() error {
		ctx, cancel := callContext(5 * time.Second)
		defer cancel()
		var price int64
		err := s.Order.DB.QueryRow(ctx, "SELECT price_cents FROM catalog WHERE sku = $1", sku).Scan(&price)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return errors.New("not in the catalog")
		case err != nil:
			return err
		case price != priceCents:
			return fmt.Errorf("price %d, want %d", price, priceCents)
		}
		return nil
	})
}

// Counts returns the number of rows of every table in every service
// database of the stack, keyed "service.table" (the migration bookkeeping
// tables left out). Two equal snapshots mean nothing was written between
// them: no state, no outbox event, no inbox row.
func (s *Stack) Counts(tb testing.TB) map[string]int64 {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := map[string]int64{}
	for _, svc := range []*Service{s.Order, s.Inventory, s.Payment} {
		rows, err := svc.DB.Query(ctx, `
			SELECT table_name FROM information_schema.tables
			WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name NOT LIKE 'goose%'`)
		if err != nil {
			tb.Fatalf("list %s tables: %v", svc.Name, err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			tb.Fatalf("list %s tables: %v", svc.Name, err)
		}
		for _, t := range tables {
			var n int64
			if err := svc.DB.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{t}.Sanitize()).Scan(&n); err != nil {
				tb.Fatalf("count %s.%s: %v", svc.Name, t, err)
			}
			out[svc.Name+"."+t] = n
		}
	}
	return out
}

// DiffCounts describes how after differs from before, or returns "".
func DiffCounts(before, after map[string]int64) string {
	var diffs []string
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if before[k] != after[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %d → %d", k, before[k], after[k]))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			diffs = append(diffs, k+": gone")
		}
	}
	return strings.Join(diffs, ", ")
}

// QueueMessages returns how many messages the stack's queue holds, ready
// and unacknowledged together, as rabbitmqctl reports it.
func (s *Stack) QueueMessages(tb testing.TB, queue string) int {
	tb.Helper()
	u, err := url.Parse(s.AMQPURL)
	if err != nil {
		tb.Fatalf("parse %s: %v", s.AMQPURL, err)
	}
	out := rabbittest.Ctl(tb, "list_queues", "-p", strings.TrimPrefix(u.Path, "/"), "--no-table-headers", "name", "messages")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			if err != nil {
				tb.Fatalf("rabbitmqctl list_queues: %q", line)
			}
			return n
		}
	}
	tb.Fatalf("queue %s not found in:\n%s", queue, out)
	return 0
}
