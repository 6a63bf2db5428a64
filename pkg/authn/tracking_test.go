package authn_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
)

var (
	trackingSecret  = []byte("tracking-secret-0123456789-0123456789-ab")
	previousSecret  = []byte("previous-tracking-secret-0123456789-01234")
	trackingTTL     = 30 * 24 * time.Hour
	trackingOrderID = "0b5e3c9e-6f1a-4d2b-9c3e-1f2a3b4c5d6e"
)

func TestTrackingToken(t *testing.T) {
	t.Parallel()
	order := trackingOrderID
	now := time.Now()
	tt := authn.NewTrackingTokens(trackingSecret, nil, trackingTTL)
	tok := tt.Token(order, now)
	if len(tok) != 60 || strings.ContainsAny(tok, "+/=.") {
		t.Errorf("token %q is not 60 characters of unpadded base64url", tok)
	}
	if again := tt.Token(order, now); again != tok {
		t.Errorf("token is not a function of the order and its time: %q then %q", tok, again)
	}
	rotated := authn.NewTrackingTokens([]byte("new-tracking-secret-0123456789-0123456789"), trackingSecret, trackingTTL)
	retired := authn.NewTrackingTokens([]byte("new-tracking-secret-0123456789-0123456789"), nil, trackingTTL)
	v1 := v1TrackingToken(trackingSecret, order)

	tests := []struct {
		name    string
		tokens  *authn.TrackingTokens // nil: tt
		token   string
		orderID string
		wantErr bool
	}{
		{name: "valid", token: tok, orderID: order},
		{name: "minted long ago, still within the lifetime", token: tt.Token(order, now.Add(-trackingTTL+time.Hour)), orderID: order},
		{name: "expired", token: tt.Token(order, now.Add(-trackingTTL-time.Hour)), orderID: order, wantErr: true},
		{name: "expired within leeway", token: tt.Token(order, now.Add(-trackingTTL-10*time.Second)), orderID: order},
		{name: "previous secret during a rotation", tokens: rotated, token: tok, orderID: order},
		{name: "previous secret once retired", tokens: retired, token: tok, orderID: order, wantErr: true},
		{name: "new tokens use the new secret", token: rotated.Token(order, now), orderID: order, wantErr: true},
		{name: "other order", token: tok, orderID: "7d1e0a52-0000-4000-8000-000000000000", wantErr: true},
		{name: "other order's token", token: tt.Token("other", now), orderID: order, wantErr: true},
		{name: "other secret", tokens: authn.NewTrackingTokens([]byte("another-secret-0123456789-0123456789"), nil, trackingTTL), token: tok, orderID: order, wantErr: true},
		{name: "signed with the JWT secret", token: authn.NewTrackingTokens(testSecret, nil, trackingTTL).Token(order, now), orderID: order, wantErr: true},
		{name: "a JWT is not a tracking token", token: mustIssue(t, authn.Claims{Subject: order, ExpiresAt: farFuture}, "", ""), orderID: order, wantErr: true},
		{name: "v1 token", token: v1, orderID: order, wantErr: true},
		{name: "expiry pushed out", token: tamper(t, tok, func(b []byte) { b[12]++ }), orderID: order, wantErr: true},
		{name: "key id changed", token: tamper(t, tok, func(b []byte) { b[1]++ }), orderID: order, wantErr: true},
		{name: "version changed", token: tamper(t, tok, func(b []byte) { b[0] = 3 }), orderID: order, wantErr: true},
		{name: "garbage", token: "not a token!", orderID: order, wantErr: true},
		{name: "empty token", token: "", orderID: order, wantErr: true},
		{name: "padded", token: tok + "=", orderID: order, wantErr: true},
		// Go's base64 decoder skips CR and LF: the same bytes, spelled
		// another way (found by FuzzTrackingVerify).
		{name: "newline inside", token: tok[:34] + "\n" + tok[34:], orderID: order, wantErr: true},
		{name: "carriage return at the end", token: tok + "\r", orderID: order, wantErr: true},
		{name: "truncated", token: tok[:len(tok)-1], orderID: order, wantErr: true},
		{name: "one character changed", token: flip(tok, 30), orderID: order, wantErr: true},
		{name: "last character changed", token: flip(tok, len(tok)-1), orderID: order, wantErr: true},
		{name: "empty order id", token: tt.Token("", now), orderID: "", wantErr: true},
		{name: "no secret", tokens: authn.NewTrackingTokens(nil, trackingSecret, trackingTTL), token: tok, orderID: order, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := tc.tokens
			if v == nil {
				v = tt
			}
			err := v.Verify(tc.token, tc.orderID)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Verify error = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, authn.ErrUnauthorized) {
				t.Errorf("error %v does not wrap ErrUnauthorized", err)
			}
		})
	}
}

func TestTrackingTokenWithoutSecret(t *testing.T) {
	t.Parallel()
	if tok := authn.NewTrackingTokens(nil, nil, trackingTTL).Token(trackingOrderID, time.Now()); tok != "" {
		t.Errorf("Token without a secret = %q, want \"\"", tok)
	}
}

func TestNewTrackingTokensCopiesTheSecrets(t *testing.T) {
	t.Parallel()
	secret, previous := append([]byte(nil), trackingSecret...), append([]byte(nil), previousSecret...)
	tt := authn.NewTrackingTokens(secret, previous, trackingTTL)
	tok := tt.Token(trackingOrderID, time.Now())
	old := authn.NewTrackingTokens(previousSecret, nil, trackingTTL).Token(trackingOrderID, time.Now())
	secret[0] ^= 0xff
	previous[0] ^= 0xff
	for name, tok := range map[string]string{"current": tok, "previous": old} {
		if err := tt.Verify(tok, trackingOrderID); err != nil {
			t.Errorf("%s secret, after the caller changed its slice: %v", name, err)
		}
	}
}

// v1TrackingToken is the token format before v2: a bare MAC of the order
// id, with no key id and no expiry.
func v1TrackingToken(secret []byte, orderID string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("orderly-track:v1:" + orderID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// tamper returns tok with its bytes changed by edit and its MAC left as
// it was, as a forger without the secret would make it.
func tamper(tb testing.TB, tok string, edit func([]byte)) string {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		tb.Fatal(err)
	}
	edit(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// flip changes the character of s at i.
func flip(s string, i int) string {
	b := []byte(s)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}
