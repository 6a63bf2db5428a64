package authn_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
)

func TestTicket(t *testing.T) {
	t.Parallel()
	tt := authn.NewTrackingTokens(trackingSecret, nil, trackingTTL)
	ticket, exp, err := tt.Ticket("dashboard", "ops-admin", time.Minute)
	if err != nil {
		t.Fatalf("Ticket: %v", err)
	}
	if d := time.Until(exp); d <= 0 || d > time.Minute {
		t.Errorf("ticket expires in %s, want within a minute", d)
	}
	if strings.ContainsAny(ticket, "+/=.") {
		t.Errorf("ticket %q is not unpadded base64url", ticket)
	}
	rotated := authn.NewTrackingTokens([]byte("new-tracking-secret-0123456789-0123456789"), trackingSecret, trackingTTL)
	retired := authn.NewTrackingTokens([]byte("new-tracking-secret-0123456789-0123456789"), nil, trackingTTL)
	tests := []struct {
		name   string
		tokens *authn.TrackingTokens // nil: tt
		scope  string
		ticket string
		want   string // "": refused
	}{
		{name: "valid", scope: "dashboard", ticket: ticket, want: "ops-admin"},
		{name: "during a rotation", tokens: rotated, scope: "dashboard", ticket: ticket, want: "ops-admin"},
		{name: "secret retired", tokens: retired, scope: "dashboard", ticket: ticket},
		{name: "other scope", scope: "payments", ticket: ticket},
		{name: "subject changed", scope: "dashboard", ticket: tamper(t, ticket, func(b []byte) { b[len(b)-1] ^= 1 })},
		{name: "expiry changed", scope: "dashboard", ticket: tamper(t, ticket, func(b []byte) { b[12]++ })},
		{name: "tracking token", scope: "dashboard", ticket: tt.Token(trackingOrderID, time.Now())},
		{name: "a JWT", scope: "dashboard", ticket: "a.b.c"},
		{name: "empty", scope: "dashboard", ticket: ""},
		{name: "garbage", scope: "dashboard", ticket: "!!!"},
		{name: "newline inside", scope: "dashboard", ticket: ticket[:20] + "\n" + ticket[20:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := tc.tokens
			if v == nil {
				v = tt
			}
			got, err := v.VerifyTicket(tc.scope, tc.ticket)
			if tc.want == "" {
				if err == nil || !errors.Is(err, authn.ErrUnauthorized) {
					t.Fatalf("VerifyTicket = %q, %v; want ErrUnauthorized", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("VerifyTicket = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	// A ticket is never a tracking token.
	if err := tt.Verify(ticket, trackingOrderID); err == nil {
		t.Error("a ticket was accepted as a tracking token")
	}
}

func TestTicketRefusesToMint(t *testing.T) {
	t.Parallel()
	tt := authn.NewTrackingTokens(trackingSecret, nil, trackingTTL)
	for _, tc := range []struct {
		name, subject string
		ttl           time.Duration
		tokens        *authn.TrackingTokens
	}{
		{name: "no secret", subject: "a", ttl: time.Minute, tokens: authn.NewTrackingTokens(nil, nil, trackingTTL)},
		{name: "no subject", ttl: time.Minute},
		{name: "subject too long", subject: strings.Repeat("a", authn.MaxSubjectLen+1), ttl: time.Minute},
		{name: "no lifetime", subject: "a"},
		{name: "too long a lifetime", subject: "a", ttl: authn.MaxTicketTTL + time.Second},
	} {
		v := tc.tokens
		if v == nil {
			v = tt
		}
		if got, _, err := v.Ticket("dashboard", tc.subject, tc.ttl); err == nil {
			t.Errorf("%s: Ticket = %q, want an error", tc.name, got)
		}
	}
}
