package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSimulatedAuthorizeDecisions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		method string
		amount int64
		want   AuthorizeResult
	}{
		{"ok card authorizes", MethodOK, 1999, AuthorizeResult{Approved: true}},
		{"declined card", MethodDeclined, 1999, AuthorizeResult{DeclineReason: ReasonCardDeclined}},
		{"unsupported method", "pm_card_unknown", 1999, AuthorizeResult{DeclineReason: ReasonUnsupportedMethod}},
		{"empty method", "", 1999, AuthorizeResult{DeclineReason: ReasonUnsupportedMethod}},
		{"at the limit authorizes", MethodOK, AmountLimitCents, AuthorizeResult{Approved: true}},
		{"over the limit declines", MethodOK, AmountLimitCents + 1, AuthorizeResult{DeclineReason: ReasonAmountLimit}},
		{"over the limit declines any method", "pm_card_unknown", 5 * AmountLimitCents, AuthorizeResult{DeclineReason: ReasonAmountLimit}},
		{"zero amount", MethodOK, 0, AuthorizeResult{DeclineReason: ReasonInvalidAmount}},
		{"negative amount", MethodOK, -5, AuthorizeResult{DeclineReason: ReasonInvalidAmount}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := NewSimulated(0)
			got, err := g.Authorize(context.Background(), AuthorizeRequest{
				IdempotencyKey: "order-1", AmountCents: tt.amount, Currency: "EUR", PaymentMethod: tt.method,
			})
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			if tt.want.Approved {
				if !strings.HasPrefix(got.Reference, authPrefix) {
					t.Errorf("Reference = %q, want a %s… reference", got.Reference, authPrefix)
				}
				tt.want.Reference = got.Reference
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Authorize (-want +got):\n%s", diff)
			}
			wantCount := 0
			if tt.want.Approved {
				wantCount = 1
			}
			if n := g.Authorizations(); n != wantCount {
				t.Errorf("Authorizations() = %d, want %d", n, wantCount)
			}
		})
	}
}

func TestSimulatedFlakyFailsTwiceThenAuthorizes(t *testing.T) {
	t.Parallel()
	g := NewSimulated(0)
	ctx := context.Background()
	req := AuthorizeRequest{IdempotencyKey: "order-flaky", AmountCents: 500, Currency: "EUR", PaymentMethod: MethodFlaky}
	for i := 1; i <= FlakyFailures; i++ {
		if _, err := g.Authorize(ctx, req); !errors.Is(err, ErrTransient) {
			t.Fatalf("call %d: err = %v, want ErrTransient", i, err)
		}
	}
	first, err := g.Authorize(ctx, req)
	if err != nil || !first.Approved {
		t.Fatalf("call %d = %+v, %v; want approved", FlakyFailures+1, first, err)
	}
	// Later calls with the key repeat the result; nothing fails again.
	again, err := g.Authorize(ctx, req)
	if err != nil || again != first {
		t.Errorf("repeat = %+v, %v; want %+v", again, err, first)
	}
	// The counter is per key: another order starts from zero.
	other := req
	other.IdempotencyKey = "order-flaky-2"
	if _, err := g.Authorize(ctx, other); !errors.Is(err, ErrTransient) {
		t.Errorf("first call for another key: err = %v, want ErrTransient", err)
	}
	if n := g.Authorizations(); n != 1 {
		t.Errorf("Authorizations() = %d, want 1", n)
	}
}

func TestSimulatedAuthorizeIsIdempotentPerKey(t *testing.T) {
	t.Parallel()
	g := NewSimulated(0)
	ctx := context.Background()
	req := AuthorizeRequest{IdempotencyKey: "order-7", AmountCents: 1200, Currency: "EUR", PaymentMethod: MethodOK}
	first, err := g.Authorize(ctx, req)
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	for range 3 {
		got, err := g.Authorize(ctx, req)
		if err != nil || got != first {
			t.Fatalf("repeat = %+v, %v; want %+v", got, err, first)
		}
	}
	if n := g.Authorizations(); n != 1 {
		t.Errorf("Authorizations() = %d after repeats, want 1", n)
	}

	// The same key with another amount is a client bug, not a new charge.
	changed := req
	changed.AmountCents = 9999
	if _, err := g.Authorize(ctx, changed); !errors.Is(err, ErrIdempotencyConflict) {
		t.Errorf("reused key with another amount: err = %v, want ErrIdempotencyConflict", err)
	}

	// A declined key stays declined.
	declined := AuthorizeRequest{IdempotencyKey: "order-8", AmountCents: 1200, Currency: "EUR", PaymentMethod: MethodDeclined}
	d1, _ := g.Authorize(ctx, declined)
	d2, err := g.Authorize(ctx, declined)
	if err != nil || d1 != d2 || d2.Approved {
		t.Errorf("declined repeat = %+v, %v; want %+v", d2, err, d1)
	}

	// References are derived from the key: another simulator (a replica,
	// or this one after a restart) gives the same one, another key doesn't.
	replica, err := NewSimulated(0).Authorize(ctx, req)
	if err != nil || replica.Reference != first.Reference {
		t.Errorf("replica reference = %q, %v; want %q", replica.Reference, err, first.Reference)
	}
	otherKey := req
	otherKey.IdempotencyKey = "order-9"
	if got, _ := g.Authorize(ctx, otherKey); got.Reference == first.Reference {
		t.Errorf("two keys share reference %q", got.Reference)
	}
}

func TestSimulatedRejectsMissingKey(t *testing.T) {
	t.Parallel()
	g := NewSimulated(0)
	if _, err := g.Authorize(context.Background(), AuthorizeRequest{AmountCents: 1, Currency: "EUR", PaymentMethod: MethodOK}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Authorize without key: err = %v, want ErrInvalidRequest", err)
	}
	if _, err := g.Refund(context.Background(), RefundRequest{Reference: authPrefix + "x", AmountCents: 1, Currency: "EUR"}); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("Refund without key: err = %v, want ErrInvalidRequest", err)
	}
}

func TestSimulatedLatencyHonoursContext(t *testing.T) {
	t.Parallel()
	req := AuthorizeRequest{IdempotencyKey: "order-slow", AmountCents: 100, Currency: "EUR", PaymentMethod: MethodOK}

	start := time.Now()
	if _, err := NewSimulated(30*time.Millisecond).Authorize(context.Background(), req); err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Errorf("Authorize took %v, want at least the 30ms latency", took)
	}

	slow := NewSimulated(time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := slow.Authorize(ctx, req)
	if !errors.Is(err, ErrTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Authorize past the deadline: err = %v, want ErrTransient wrapping DeadlineExceeded", err)
	}
	if _, err := slow.Refund(ctx, RefundRequest{IdempotencyKey: "r", Reference: authPrefix + "x", AmountCents: 1, Currency: "EUR"}); !errors.Is(err, ErrTransient) {
		t.Errorf("Refund past the deadline: err = %v, want ErrTransient", err)
	}
	if n := slow.Authorizations(); n != 0 {
		t.Errorf("Authorizations() = %d after a call that timed out, want 0", n)
	}
}

func TestSimulatedRefund(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := NewSimulated(0)
	auth, err := g.Authorize(ctx, AuthorizeRequest{IdempotencyKey: "order-r", AmountCents: 1000, Currency: "EUR", PaymentMethod: MethodOK})
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	req := RefundRequest{IdempotencyKey: "refund:order-r", Reference: auth.Reference, AmountCents: 1000, Currency: "EUR"}
	first, err := g.Refund(ctx, req)
	if err != nil || !strings.HasPrefix(first.Reference, refundPrefix) {
		t.Fatalf("Refund = %+v, %v; want a %s… reference", first, err, refundPrefix)
	}
	again, err := g.Refund(ctx, req)
	if err != nil || again != first {
		t.Errorf("repeated Refund = %+v, %v; want %+v", again, err, first)
	}
	if n := g.Refunds(); n != 1 {
		t.Errorf("Refunds() = %d, want 1", n)
	}

	tests := []struct {
		name string
		req  RefundRequest
		want error
	}{
		{"key reused for another amount", RefundRequest{IdempotencyKey: req.IdempotencyKey, Reference: auth.Reference, AmountCents: 1, Currency: "EUR"}, ErrIdempotencyConflict},
		{"more than what is left", RefundRequest{IdempotencyKey: "refund:again", Reference: auth.Reference, AmountCents: 1, Currency: "EUR"}, ErrRefundExceedsAuthorization},
		{"other currency", RefundRequest{IdempotencyKey: "refund:usd", Reference: auth.Reference, AmountCents: 1, Currency: "USD"}, ErrInvalidRequest},
		{"not a simulated reference", RefundRequest{IdempotencyKey: "refund:x", Reference: "ch_123", AmountCents: 1, Currency: "EUR"}, ErrUnknownAuthorization},
		{"zero amount", RefundRequest{IdempotencyKey: "refund:zero", Reference: auth.Reference, AmountCents: 0, Currency: "EUR"}, ErrInvalidRequest},
	}
	for _, tt := range tests {
		if _, err := g.Refund(ctx, tt.req); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}

	// An authorization made by another replica, or before a restart, is
	// refundable: the reference is one the simulator issues.
	if _, err := NewSimulated(0).Refund(ctx, req); err != nil {
		t.Errorf("Refund on a fresh simulator: %v", err)
	}
}

func TestSimulatedForgetsOldKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := NewSimulated(0)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	g.now = func() time.Time { return now }
	g.lastSweep = now
	req := AuthorizeRequest{IdempotencyKey: "order-old", AmountCents: 100, Currency: "EUR", PaymentMethod: MethodOK}
	if _, err := g.Authorize(ctx, req); err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	flaky := AuthorizeRequest{IdempotencyKey: "order-old-flaky", AmountCents: 100, Currency: "EUR", PaymentMethod: MethodFlaky}
	_, _ = g.Authorize(ctx, flaky)

	now = now.Add(retention + sweepEvery + time.Minute)
	changed := req
	changed.AmountCents = 200
	// Past the retention the key is free again (as at a provider whose
	// idempotency window has passed); the memory is released.
	if _, err := g.Authorize(ctx, changed); err != nil {
		t.Errorf("Authorize with an expired key: %v", err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.auths) != 1 || len(g.byRef) != 1 || len(g.attempts) != 0 {
		t.Errorf("after the sweep: %d auths, %d references, %d flaky counters; want 1, 1, 0", len(g.auths), len(g.byRef), len(g.attempts))
	}
}
