package authn_test

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

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
		// Only tokens the secret signed can pass: the seed, or one like it
		// minted by a fuzzing worker (another process, so another "iat"),
		// the signature perhaps spelled another way (base64 decoding
		// ignores the unused bits of the last character). golang-jwt
		// checks that signature on its own here.
		signed := func(*jwt.Token) (any, error) { return secret, nil }
		if _, err := jwt.Parse(token, signed, jwt.WithValidMethods([]string{"HS256"}), jwt.WithoutClaimsValidation()); err != nil || claims.Subject != "cust-1" {
			t.Fatalf("Verify accepted %q, which the secret did not sign (claims %+v, golang-jwt: %v)", token, claims, err)
		}
	})
}

// FuzzTrackingVerify feeds arbitrary tokens and order ids to the tracking
// token check: no panic, every refusal wraps ErrUnauthorized, and only the
// token minted for that order verifies.
func FuzzTrackingVerify(f *testing.F) {
	tokens := authn.NewTrackingTokens([]byte("fuzz-tracking-secret-0123456789abcdef"), nil, trackingTTL)
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
		// A fuzzing worker is another process than the one that minted
		// the seed, and may mint at another second: the expiry inside the
		// token says which one to compare with.
		if minted := mintedLike(tokens, token, order); token != minted || orderID != order {
			t.Fatalf("Verify accepted %q for order %q; only %q (seed %q) for %q was minted", token, orderID, minted, valid, order)
		}
	})
}

// mintedLike returns the token tokens mint for order with token's expiry
// (bytes 5 to 13 of the format v2 layout, see tracking.go), or "" when
// token is too short to hold one.
func mintedLike(tokens *authn.TrackingTokens, token, order string) string {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) < 13 {
		return ""
	}
	expiry := time.Unix(int64(binary.BigEndian.Uint64(b[5:13])), 0) //nolint:gosec // a Unix time in seconds fits
	return tokens.Token(order, expiry.Add(-trackingTTL))
}
