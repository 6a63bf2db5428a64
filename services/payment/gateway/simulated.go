package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Payment methods Simulated knows; any other is declined with
// ReasonUnsupportedMethod.
const (
	// MethodOK authorizes.
	MethodOK = "pm_card_ok"
	// MethodDeclined is declined with ReasonCardDeclined.
	MethodDeclined = "pm_card_declined"
	// MethodFlaky fails with ErrTransient on the first FlakyFailures
	// Authorize calls for an idempotency key, then authorizes.
	MethodFlaky = "pm_card_flaky"
)

// Decline reasons of Simulated.
const (
	ReasonCardDeclined      = "card_declined"
	ReasonAmountLimit       = "amount_limit"
	ReasonUnsupportedMethod = "unsupported_method"
	ReasonInvalidAmount     = "invalid_amount"
)

// AmountLimitCents is the largest amount Simulated authorizes; above it every
// request is declined with ReasonAmountLimit.
const AmountLimitCents = 1_000_000

// FlakyFailures is how many Authorize calls per idempotency key fail with
// ErrTransient for MethodFlaky before it authorizes.
const FlakyFailures = 2

// Reference prefixes of Simulated; the rest is derived from the idempotency
// key, so the same key gives the same reference in every replica and after
// a restart.
const (
	authPrefix   = "sim_auth_"
	refundPrefix = "sim_refund_"
)

// retention is how long Simulated remembers a key, like a provider's
// idempotency window; sweepEvery is how often it forgets older ones. Two
// minutes covers the payment service's own retries (in the handler, then
// 1 s, 5 s and 30 s later) with room to spare, and keeps a replica's memory
// flat after two minutes of traffic: at 200 payments a second it holds
// some 24,000 keys, about 16 MiB (ten minutes held five times that, and a
// ten-minute soak saw the service grow for all of it). Forgetting a key
// changes no result (results are derived from the request), only the
// counts and a flaky method's failures.
const (
	retention  = 2 * time.Minute
	sweepEvery = 15 * time.Second
)

// Simulated is a deterministic payment provider for development, tests and
// demos. Its decision depends only on the request:
//
//   - an amount of zero or less is declined (ReasonInvalidAmount), and one
//     above AmountLimitCents too (ReasonAmountLimit), whatever the method;
//   - MethodOK authorizes, MethodDeclined is declined (ReasonCardDeclined),
//     MethodFlaky authorizes after FlakyFailures transient failures, and any
//     other method is declined (ReasonUnsupportedMethod).
//
// It is idempotent per key: a repeated key gets the first result (or
// ErrIdempotencyConflict if the request differs) and counts no second
// authorization. Authorization and refund references are derived from the
// key, so they are the same in every replica.
//
// Attempt counters and remembered results live in memory, for two minutes
// (see retention): a real
// provider keeps them on its side, while each replica of the payment service
// simulates its own provider, and a restart forgets them (a MethodFlaky key
// then fails twice again; results are unchanged since they are
// deterministic). A refund of a reference it has not seen (authorized by
// another replica or before a restart) is accepted if the reference is one
// Simulated issues.
//
// It is safe for concurrent use.
type Simulated struct {
	latency time.Duration
	now     func() time.Time

	mu        sync.Mutex
	attempts  map[string]flaky   // MethodFlaky failures so far, by key
	auths     map[string]*auth   // decided authorizations, by key
	byRef     map[string]*auth   // approved authorizations, by reference
	refunds   map[string]*refund // refunds, by key
	approved  int                // approved authorizations since start
	refunded  int                // refunds since start
	lastSweep time.Time
}

type flaky struct {
	failures int
	at       time.Time // of the first failure
}

type auth struct {
	req      AuthorizeRequest
	result   AuthorizeResult
	refunded int64 // cents refunded so far
	at       time.Time
}

type refund struct {
	req    RefundRequest
	result RefundResult
	at     time.Time
}

// NewSimulated returns a simulated provider that takes latency to answer
// each call (0 answers at once).
func NewSimulated(latency time.Duration) *Simulated {
	return &Simulated{
		latency:   latency,
		now:       time.Now,
		attempts:  make(map[string]flaky),
		auths:     make(map[string]*auth),
		byRef:     make(map[string]*auth),
		refunds:   make(map[string]*refund),
		lastSweep: time.Now(),
	}
}

// Authorize decides req as described on Simulated. It returns
// ErrInvalidRequest without an idempotency key, ErrIdempotencyConflict for a
// key reused with a different request, ErrTransient for the first failures
// of MethodFlaky, and ErrTransient (wrapping ctx's error) when ctx ends
// during the simulated latency.
func (s *Simulated) Authorize(ctx context.Context, req AuthorizeRequest) (AuthorizeResult, error) {
	if err := s.wait(ctx); err != nil {
		return AuthorizeResult{}, err
	}
	if req.IdempotencyKey == "" {
		return AuthorizeResult{}, fmt.Errorf("%w: no idempotency key", ErrInvalidRequest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	if a, ok := s.auths[req.IdempotencyKey]; ok {
		if a.req != req {
			return AuthorizeResult{}, fmt.Errorf("%w: key %q", ErrIdempotencyConflict, req.IdempotencyKey)
		}
		return a.result, nil
	}
	if req.PaymentMethod == MethodFlaky {
		f, ok := s.attempts[req.IdempotencyKey]
		if !ok {
			f.at = s.now()
		}
		if f.failures < FlakyFailures {
			f.failures++
			s.attempts[req.IdempotencyKey] = f
			return AuthorizeResult{}, fmt.Errorf("%w: simulated provider outage (%s failure %d of %d)", ErrTransient, MethodFlaky, f.failures, FlakyFailures)
		}
		delete(s.attempts, req.IdempotencyKey)
	}
	a := &auth{req: req, result: decide(req), at: s.now()}
	s.auths[req.IdempotencyKey] = a
	if a.result.Approved {
		s.byRef[a.result.Reference] = a
		s.approved++
	}
	return a.result, nil
}

// decide is the simulated provider's verdict on req.
func decide(req AuthorizeRequest) AuthorizeResult {
	decline := func(reason string) AuthorizeResult { return AuthorizeResult{DeclineReason: reason} }
	switch {
	case req.AmountCents <= 0:
		return decline(ReasonInvalidAmount)
	case req.AmountCents > AmountLimitCents:
		return decline(ReasonAmountLimit)
	}
	switch req.PaymentMethod {
	case MethodOK, MethodFlaky:
		return AuthorizeResult{Approved: true, Reference: reference(authPrefix, req.IdempotencyKey)}
	case MethodDeclined:
		return decline(ReasonCardDeclined)
	default:
		return decline(ReasonUnsupportedMethod)
	}
}

// Refund refunds req.AmountCents of the authorization req.Reference. It
// returns ErrInvalidRequest without an idempotency key, for an amount of zero
// or less or a currency other than the authorization's,
// ErrIdempotencyConflict for a key reused with a different request,
// ErrUnknownAuthorization for a reference Simulated never issues,
// ErrRefundExceedsAuthorization when the refunds of a known authorization
// would add up to more than it, and ErrTransient (wrapping ctx's error) when
// ctx ends during the simulated latency.
func (s *Simulated) Refund(ctx context.Context, req RefundRequest) (RefundResult, error) {
	if err := s.wait(ctx); err != nil {
		return RefundResult{}, err
	}
	switch {
	case req.IdempotencyKey == "":
		return RefundResult{}, fmt.Errorf("%w: no idempotency key", ErrInvalidRequest)
	case req.AmountCents <= 0:
		return RefundResult{}, fmt.Errorf("%w: refund amount %d", ErrInvalidRequest, req.AmountCents)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	if r, ok := s.refunds[req.IdempotencyKey]; ok {
		if r.req != req {
			return RefundResult{}, fmt.Errorf("%w: key %q", ErrIdempotencyConflict, req.IdempotencyKey)
		}
		return r.result, nil
	}
	if !strings.HasPrefix(req.Reference, authPrefix) {
		return RefundResult{}, fmt.Errorf("%w: %q", ErrUnknownAuthorization, req.Reference)
	}
	if a, ok := s.byRef[req.Reference]; ok {
		if req.Currency != a.req.Currency {
			return RefundResult{}, fmt.Errorf("%w: refund in %s of an authorization in %s", ErrInvalidRequest, req.Currency, a.req.Currency)
		}
		if a.refunded+req.AmountCents > a.req.AmountCents {
			return RefundResult{}, fmt.Errorf("%w: %d + %d > %d cents", ErrRefundExceedsAuthorization, a.refunded, req.AmountCents, a.req.AmountCents)
		}
		a.refunded += req.AmountCents
	}
	r := &refund{req: req, result: RefundResult{Reference: reference(refundPrefix, req.IdempotencyKey)}, at: s.now()}
	s.refunds[req.IdempotencyKey] = r
	s.refunded++
	return r.result, nil
}

// Authorizations returns how many authorizations Simulated has approved
// since it started; a repeated idempotency key does not count again.
func (s *Simulated) Authorizations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.approved
}

// Refunds returns how many refunds Simulated has made since it started; a
// repeated idempotency key does not count again.
func (s *Simulated) Refunds() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refunded
}

// wait simulates the provider's latency. It fails with ErrTransient when ctx
// ends first: the caller cannot know whether the provider acted, which is
// exactly the case a retry with the same key resolves.
func (s *Simulated) wait(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrTransient, err)
	}
	if s.latency <= 0 {
		return nil
	}
	t := time.NewTimer(s.latency)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrTransient, ctx.Err())
	case <-t.C:
		return nil
	}
}

// sweep forgets keys older than retention, at most once per sweepEvery, so a
// long-running process does not grow without bound. s.mu must be held.
func (s *Simulated) sweep() {
	now := s.now()
	if now.Sub(s.lastSweep) < sweepEvery {
		return
	}
	s.lastSweep = now
	for k, a := range s.auths {
		if now.Sub(a.at) > retention {
			delete(s.auths, k)
			delete(s.byRef, a.result.Reference)
		}
	}
	for k, r := range s.refunds {
		if now.Sub(r.at) > retention {
			delete(s.refunds, k)
		}
	}
	for k, f := range s.attempts {
		if now.Sub(f.at) > retention {
			delete(s.attempts, k)
		}
	}
}

// reference derives a provider reference from an idempotency key.
func reference(prefix, key string) string {
	sum := sha256.Sum256([]byte(key))
	return prefix + hex.EncodeToString(sum[:12])
}
