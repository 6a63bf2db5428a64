package authn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
)

// FuzzVerify feeds arbitrary strings to the JWT verifier as a bearer token.
// Whatever the input, it must not panic, every refusal must wrap
// ErrUnauthorized (the middleware turns exactly that into a 401; anything
// else would be a 500), and nothing but a token signed with the secret may
// pass, with a subject that the identifiers' rule accepts.
func FuzzVerify(f *testing.F) {
	secret := []byte("fuzz-secret-0123456789abcdef-0123456789")
	v := authn.NewVerifier(secret, "https://id.example.test/", "orderly")
	valid, err := authn.Issue(secret, authn.Claims{Subject: "cust-1", ExpiresAt: time.Now().Add(time.Hour)}, "https://id.example.test/", "orderly")
	if err != nil {
		f.Fatal(err)
	}
	forged, err := authn.Issue([]byte("another-secret-0123456789abcdef-012345"), authn.Claims{Subject: "cust-1", ExpiresAt: time.Now().Add(time.Hour)}, "https://id.example.test/", "orderly")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		valid, forged, "", ".", "..", "a.b.c", valid + "x", strings.ToUpper(valid),
		"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJcdTAwMDAifQ.x",
		strings.Repeat("A", 9000),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, token string) {
		claims, err := v.Verify(token)
		if err != nil {
			if !errors.Is(err, authn.ErrUnauthorized) {
				t.Fatalf("Verify(%q) = %v, which does not wrap ErrUnauthorized", token, err)
			}
			return
		}
		// Only the seed token's header and payload carry the secret's
		// signature; the fuzzer cannot sign others without the key. (Its
		// signature may be spelled another way: base64 decoding ignores
		// the unused bits of the last character.)
		if signed := valid[:strings.LastIndexByte(valid, '.')+1]; !strings.HasPrefix(token, signed) || claims.Subject != "cust-1" {
			t.Fatalf("Verify accepted %q, which the secret did not sign (claims %+v)", token, claims)
		}
	})
}

// FuzzTrackingVerify feeds arbitrary tokens and order ids to the tracking
// token check: no panic, every refusal wraps ErrUnauthorized, and only the
// token minted for that order verifies.
func FuzzTrackingVerify(f *testing.F) {
	tokens := authn.NewTrackingTokens([]byte("fuzz-tracking-secret-0123456789abcdef"), nil, time.Hour)
	const order = "0192f0c4-5b6e-7a8b-9c0d-1e2f3a4b5c6d"
	valid := tokens.Token(order, time.Now())
	for _, seed := range []struct{ token, order string }{
		{valid, order},
		{valid, "another-order"},
		{valid[:len(valid)-1] + "A", order},
		{"", order},
		{valid, ""},
		{"a.b.c", order},
		{strings.Repeat("A", 60), order},
		{"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", order},
	} {
		f.Add(seed.token, seed.order)
	}
	f.Fuzz(func(t *testing.T, token, orderID string) {
		err := tokens.Verify(token, orderID)
		if err != nil {
			if !errors.Is(err, authn.ErrUnauthorized) {
				t.Fatalf("Verify(%q, %q) = %v, which does not wrap ErrUnauthorized", token, orderID, err)
			}
			return
		}
		if token != valid || orderID != order {
			t.Fatalf("Verify accepted %q for order %q; only %q for %q was minted", token, orderID, valid, order)
		}
	})
}
