package authn_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/authn"
)

func TestTrackingToken(t *testing.T) {
	t.Parallel()
	const order = "0b5e3c9e-6f1a-4d2b-9c3e-1f2a3b4c5d6e"
	tok := authn.NewTrackingToken(testSecret, order)
	if strings.ContainsAny(tok, "+/=") {
		t.Errorf("token %q is not unpadded base64url", tok)
	}
	if again := authn.NewTrackingToken(testSecret, order); again != tok {
		t.Errorf("token is not deterministic: %q then %q", tok, again)
	}
	tests := []struct {
		name    string
		secret  []byte
		token   string
		orderID string
		wantErr bool
	}{
		{name: "valid", secret: testSecret, token: tok, orderID: order},
		{name: "other order", secret: testSecret, token: tok, orderID: "7d1e0a52-0000-4000-8000-000000000000", wantErr: true},
		{name: "other order's token", secret: testSecret, token: authn.NewTrackingToken(testSecret, "other"), orderID: order, wantErr: true},
		{name: "other secret", secret: []byte("another-secret-0123456789-0123456789"), token: tok, orderID: order, wantErr: true},
		{name: "garbage", secret: testSecret, token: "not a token!", orderID: order, wantErr: true},
		{name: "empty token", secret: testSecret, token: "", orderID: order, wantErr: true},
		{name: "padded", secret: testSecret, token: tok + "=", orderID: order, wantErr: true},
		{name: "truncated", secret: testSecret, token: tok[:len(tok)-1], orderID: order, wantErr: true},
		{name: "one character changed", secret: testSecret, token: flip(tok), orderID: order, wantErr: true},
		{name: "empty order id", secret: testSecret, token: authn.NewTrackingToken(testSecret, ""), orderID: "", wantErr: true},
		{name: "empty secret", secret: nil, token: authn.NewTrackingToken(nil, order), orderID: order, wantErr: true},
		{name: "a JWT is not a tracking token", secret: testSecret, token: mustIssue(t, authn.Claims{Subject: order, ExpiresAt: farFuture}, "", ""), orderID: order, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := authn.VerifyTrackingToken(tt.secret, tt.token, tt.orderID)
			if (err != nil) != tt.wantErr {
				t.Fatalf("VerifyTrackingToken error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, authn.ErrUnauthorized) {
				t.Errorf("error %v does not wrap ErrUnauthorized", err)
			}
		})
	}
}

func flip(s string) string {
	b := []byte(s)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}
