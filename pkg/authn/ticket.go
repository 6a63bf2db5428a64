package authn

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A ticket lets a browser open a stream that needs more than a tracking
// token (the operators' dashboard) without putting a JWT in a URL: the page
// sends the JWT in a header to have a ticket minted, and opens the
// WebSocket with ?ticket=. A ticket lives seconds, names its subject and
// its scope, and is signed with the tracking secret under a prefix of its
// own (so that no ticket is ever a tracking token, nor the other way
// round). It is the unpadded base64url encoding of
//
//	[0]      version, 3
//	[1:5]    key id of the secret that signed it (trackingKeyID)
//	[5:13]   expiry, Unix seconds, big-endian
//	[13:45]  HMAC-SHA256 under that secret of ticketPrefix, the scope, a
//	         NUL, bytes 0–12 and the subject
//	[45:]    the subject (at most MaxSubjectLen bytes)
const (
	ticketVersion = 3
	ticketPrefix  = "orderly-ticket:v3:"
)

// MaxTicketTTL bounds a ticket's lifetime: it travels in a URL, which ends
// up in proxy logs, so it must be worthless soon after it was used.
const MaxTicketTTL = 5 * time.Minute

// Reasons a ticket is refused, for logs (all wrap ErrUnauthorized).
var (
	errTicketMalformed = errors.New("not a v3 ticket")
	errTicketMismatch  = errors.New("ticket signature does not match (forged, or for another scope)")
	errTicketExpired   = errors.New("ticket expired")
)

// Ticket returns a ticket for subject in scope (such as "dashboard"),
// expiring ttl from now (at most MaxTicketTTL), and its expiry. It returns
// an error when there is no secret, the subject is empty or too long, or
// ttl is not in (0, MaxTicketTTL].
func (t *TrackingTokens) Ticket(scope, subject string, ttl time.Duration) (string, time.Time, error) {
	switch {
	case len(t.keys) == 0:
		return "", time.Time{}, errors.New("authn: ticket: no tracking secret configured")
	case subject == "" || len(subject) > MaxSubjectLen:
		return "", time.Time{}, fmt.Errorf("authn: ticket: subject must be 1..%d bytes", MaxSubjectLen)
	case ttl <= 0 || ttl > MaxTicketTTL:
		return "", time.Time{}, fmt.Errorf("authn: ticket: lifetime %s not in (0, %s]", ttl, MaxTicketTTL)
	}
	k := t.keys[0]
	exp := time.Now().Add(ttl).Truncate(time.Second)
	b := make([]byte, trackingHeaderLen, trackingTokenLen+len(subject))
	b[0] = ticketVersion
	copy(b[1:5], k.id[:])
	_, _ = binary.Encode(b[5:], binary.BigEndian, exp.Unix()) // 8 bytes fit
	b = append(b, ticketMAC(k.secret, scope, b, subject)...)
	b = append(b, subject...)
	return base64.RawURLEncoding.EncodeToString(b), exp, nil
}

// VerifyTicket checks a ticket of scope, signed with the current or the
// previous tracking secret and not expired (within Leeway), and returns
// its subject. It returns an error wrapping ErrUnauthorized otherwise; the
// error says why, for logs.
func (t *TrackingTokens) VerifyTicket(scope, ticket string) (string, error) {
	if len(t.keys) == 0 {
		return "", fmt.Errorf("authn: %w: no tracking secret configured", ErrUnauthorized)
	}
	if strings.Count(ticket, ".") == 2 || len(ticket) > maxTokenLen {
		return "", fmt.Errorf("authn: %w: %w", ErrUnauthorized, errTicketMalformed)
	}
	b, err := decodeCanonical(ticket)
	if err != nil || len(b) <= trackingTokenLen || len(b) > trackingTokenLen+MaxSubjectLen || b[0] != ticketVersion {
		return "", fmt.Errorf("authn: %w: %w", ErrUnauthorized, errTicketMalformed)
	}
	subject := string(b[trackingTokenLen:])
	reason := errTrackingUnknownKey
	for _, k := range t.keys {
		if !hmac.Equal(k.id[:], b[1:5]) {
			continue
		}
		reason = errTicketMismatch
		if hmac.Equal(b[trackingHeaderLen:trackingTokenLen], ticketMAC(k.secret, scope, b[:trackingHeaderLen], subject)) {
			reason = nil
			break
		}
	}
	if reason != nil {
		return "", fmt.Errorf("authn: %w: %w", ErrUnauthorized, reason)
	}
	var unix int64
	_, _ = binary.Decode(b[5:trackingHeaderLen], binary.BigEndian, &unix) // 8 bytes are there
	if exp := time.Unix(unix, 0); time.Now().After(exp.Add(Leeway)) {
		return "", fmt.Errorf("authn: %w: %w at %s", ErrUnauthorized, errTicketExpired, exp.UTC().Format(time.RFC3339))
	}
	return subject, nil
}

func ticketMAC(secret []byte, scope string, header []byte, subject string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ticketPrefix))
	mac.Write([]byte(scope))
	mac.Write([]byte{0})
	mac.Write(header)
	mac.Write([]byte(subject))
	return mac.Sum(nil)
}
