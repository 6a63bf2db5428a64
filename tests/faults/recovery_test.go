package faults

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"testing"
	"time"

	"github.com/orderly/orderly/tests/stack"
)

// recovered waits until every replica answers /readyz with 200 and a
// probe order, placed once they do, is confirmed; it returns how long that
// took from since (when the fault ended). It fails t when that takes more
// than bound, and records the probe as an order the scenario placed.
func (f *faultRun) recovered(t *testing.T, since time.Time, bound time.Duration) time.Duration {
	t.Helper()
	deadline := since.Add(bound)
	s := f.c.s
	token := s.Token(t, "chaos-probe")
	key := stack.NewUUID()
	var id string
	var last error
	for time.Now().Before(deadline) {
		last = f.probe(token, key, &id)
		if last == nil {
			took := time.Since(since)
			t.Logf("recovered %v after the fault ended (at %s)", took.Round(10*time.Millisecond), f.since())
			return took
		}
		time.Sleep(100 * time.Millisecond) // the poll
	}
	t.Errorf("not recovered %v after the fault ended: %v", bound, last)
	return time.Since(since)
}

// probe takes the probe one step further: every replica ready, the order
// placed (with key, so a lost answer makes no second order), the order
// confirmed. It returns nil once the order is confirmed.
func (f *faultRun) probe(token, key string, id *string) error {
	s := f.c.s
	if *id == "" {
		f.c.mu.Lock()
		all := []*stack.Service{}
		for _, rs := range f.c.replicas {
			all = append(all, rs...)
		}
		f.c.mu.Unlock()
		for _, svc := range all {
			if !f.c.isServing(svc) {
				continue // removed on purpose
			}
			r, err := s.Call(http.MethodGet, svc.URL(), "/readyz", "", nil)
			if err != nil {
				return fmt.Errorf("%s %s: %w", svc.Name, svc.URL(), err)
			}
			if r.Status != http.StatusOK {
				return fmt.Errorf("%s %s: /readyz answered %s", svc.Name, svc.URL(), r)
			}
		}
		order, _ := f.c.Replicas()
		if len(order) == 0 {
			return errors.New("no order replica is serving")
		}
		body := stack.OrderRequest{Items: []stack.Item{{SKU: "CHAOS-19", Quantity: 1}}, PaymentMethod: "pm_card_ok"}
		r, err := s.Call(http.MethodPost, order[0], "/v1/orders", token, body, stack.Header{Key: "Idempotency-Key", Value: key})
		if err != nil {
			return fmt.Errorf("probe POST: %w", err)
		}
		if r.Status != http.StatusCreated {
			return fmt.Errorf("probe POST answered %s", r)
		}
		var o stack.Order
		if err := json.Unmarshal(r.Body, &o); err != nil {
			return err
		}
		*id = o.ID
		f.mu.Lock()
		f.placed = append(f.placed, o.ID)
		f.mu.Unlock()
	}
	order, _ := f.c.Replicas()
	r, err := s.Call(http.MethodGet, order[0], "/v1/orders/"+*id, token, nil)
	if err != nil {
		return fmt.Errorf("probe GET: %w", err)
	}
	var o stack.Order
	if r.Status != http.StatusOK {
		return fmt.Errorf("probe GET answered %s", r)
	}
	if err := json.Unmarshal(r.Body, &o); err != nil {
		return err
	}
	if o.Status != "confirmed" {
		return fmt.Errorf("probe order %s is %s %s", o.ID, o.Status, o.Reason)
	}
	return nil
}

// samePIDs fails t when a replica's process is not the one it was: the
// system had to recover by itself, not by being restarted.
func samePIDs(t *testing.T, before, after map[*stack.Service]int) {
	t.Helper()
	if !maps.Equal(before, after) {
		for svc, pid := range before {
			if after[svc] != pid {
				t.Errorf("%s replica pid %d is now %d: it was restarted", svc.Name, pid, after[svc])
			}
		}
	}
}
