// Package gateway is the payment service's port to a payment provider: the
// Gateway interface a provider adapter implements, the errors it classifies
// its failures with, and Simulated, the deterministic provider Orderly runs
// in development, tests and demos.
//
// Every call carries an idempotency key. A provider answers a repeated key
// with the first call's result and never authorizes or refunds twice, which
// is what makes retrying a call (after a timeout, a crash, a redelivered
// message) safe.
package gateway

import (
	"context"
	"errors"
)

// Gateway authorizes and refunds payments at a provider.
//
// Authorize returns a result for a request the provider decided on, approved
// or declined. It returns an error matching ErrTransient when the outcome is
// unknown or the provider is briefly unavailable (a timeout, a 5xx, a
// network error): the same request may be retried with the same key. Any
// other error is permanent (a malformed request, a key reused with different
// parameters) and retrying it cannot help.
//
// Refund returns the refund of an authorization, with the same error
// classification.
type Gateway interface {
	Authorize(ctx context.Context, req AuthorizeRequest) (AuthorizeResult, error)
	Refund(ctx context.Context, req RefundRequest) (RefundResult, error)
}

// AuthorizeRequest asks the provider to authorize AmountCents on a payment
// method.
type AuthorizeRequest struct {
	// IdempotencyKey identifies the authorization: the same key never
	// authorizes twice. Orderly uses the order id.
	IdempotencyKey string
	AmountCents    int64
	Currency       string
	// PaymentMethod is the provider's token for the card or account
	// ("pm_card_ok").
	PaymentMethod string
}

// AuthorizeResult is the provider's decision.
type AuthorizeResult struct {
	Approved bool
	// Reference is the provider's id of an approved authorization; refunds
	// name it.
	Reference string
	// DeclineReason says why a request was declined, as a short
	// machine-readable word ("card_declined").
	DeclineReason string
}

// RefundRequest asks the provider to refund (part of) an authorization.
type RefundRequest struct {
	// IdempotencyKey identifies the refund: the same key never refunds
	// twice. Orderly uses "refund:" + the order id.
	IdempotencyKey string
	// Reference is the authorization's AuthorizeResult.Reference.
	Reference   string
	AmountCents int64
	Currency    string
}

// RefundResult is a refund the provider made.
type RefundResult struct {
	// Reference is the provider's id of the refund.
	Reference string
}

// Errors a Gateway classifies its failures with; match them with errors.Is.
var (
	// ErrTransient marks a failure worth retrying with the same
	// idempotency key: the provider did not decide, or its answer was lost.
	ErrTransient = errors.New("gateway: transient failure")
	// ErrInvalidRequest means the request is malformed (no idempotency
	// key, a negative amount); it is permanent.
	ErrInvalidRequest = errors.New("gateway: invalid request")
	// ErrIdempotencyConflict means the idempotency key was used before for
	// a different request; it is permanent.
	ErrIdempotencyConflict = errors.New("gateway: idempotency key reused with different parameters")
	// ErrUnknownAuthorization means a refund names no approved
	// authorization; it is permanent.
	ErrUnknownAuthorization = errors.New("gateway: no such authorization")
	// ErrRefundExceedsAuthorization means a refund would return more than
	// the authorization holds (less what was refunded); it is permanent.
	ErrRefundExceedsAuthorization = errors.New("gateway: refund exceeds the authorized amount")
)
