package apitest

import (
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
)

// Tokens issues the bearer tokens that an authn.Verifier with the same
// secret, issuer and audience accepts.
type Tokens struct {
	Secret []byte
	// Issuer and Audience are left out of the tokens when empty, as the
	// verifier then does not check them.
	Issuer, Audience string
}

// For returns a token for subject with role ("" for a customer), valid for
// an hour.
func (k Tokens) For(tb testing.TB, subject, role string) string {
	tb.Helper()
	tok, err := authn.Issue(k.Secret, authn.Claims{Subject: subject, Role: role, ExpiresAt: time.Now().Add(time.Hour)}, k.Issuer, k.Audience)
	if err != nil {
		tb.Fatalf("issue a token for %s: %v", subject, err)
	}
	return tok
}
