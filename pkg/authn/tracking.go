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

// A tracking token (format v2) is the unpadded base64url encoding of 45
// bytes:
//
//	[0]      version, 2
//	[1:5]    key id of the secret that signed it (trackingKeyID)
//	[5:13]   expiry, Unix seconds, big-endian
//	[13:45]  HMAC-SHA256 under that secret of trackingPrefix, bytes 0–12
//	         and the order id
//
// so it is 60 characters long, has no dots (a JWT has two) and needs no
// escaping in a URL. The version, key id and expiry are under the MAC: none
// can be changed without the secret.
//
// Version 1 tokens (a bare MAC under AUTH_JWT_SECRET, with no expiry) are
// refused: accepting them would keep the JWT secret in use for tracking and
// keep eternal links alive.
const (
	trackingVersion   = 2
	trackingHeaderLen = 1 + 4 + 8
	trackingTokenLen  = trackingHeaderLen + sha256.Size
)

// trackingPrefix separates tracking-token MACs from every other use of a
// secret, and one format version from another.
const trackingPrefix = "orderly-track:v2:"

// Reasons a tracking token is refused, for logs (all wrap ErrUnauthorized).
var (
	errTrackingMalformed  = errors.New("not a v2 tracking token")
	errTrackingUnknownKey = errors.New("tracking token signed with a key that is neither TRACKING_SECRET nor TRACKING_SECRET_PREVIOUS")
	errTrackingMismatch   = errors.New("tracking token does not match the order")
	errTrackingExpired    = errors.New("tracking token expired")
)

// TrackingTokens mints and checks the tracking tokens that let a shopper
// watch one order without logging in. Tokens are signed with the current
// secret and checked against it and, during a rotation, the previous one;
// each says which, by a key id derived from the secret. It is safe for
// concurrent use.
type TrackingTokens struct {
	keys []trackingKey // the current first
	ttl  time.Duration
}

type trackingKey struct {
	id     [4]byte
	secret []byte
}

// NewTrackingTokens returns TrackingTokens that sign with secret, also
// accept tokens signed with previous (when non-empty), and make tokens
// valid for ttl after the time they are minted for. An empty secret makes
// every Verify fail, rather than accept tokens signed with an empty key.
func NewTrackingTokens(secret, previous []byte, ttl time.Duration) *TrackingTokens {
	t := &TrackingTokens{ttl: ttl}
	if len(secret) == 0 {
		return t
	}
	for _, s := range [][]byte{secret, previous} {
		if len(s) > 0 {
			t.keys = append(t.keys, trackingKey{id: trackingKeyID(s), secret: append([]byte(nil), s...)})
		}
	}
	return t
}

// trackingKeyID names a secret without revealing it: the first bytes of a
// hash of it, so that no setting is needed to tell the keys apart.
func trackingKeyID(secret []byte) [4]byte {
	sum := sha256.Sum256(append([]byte("orderly-track:key-id:"), secret...))
	return [4]byte(sum[:4])
}

// Token returns orderID's tracking token, signed with the current secret
// and expiring the token lifetime after issued. Callers pass the order's
// creation time, so that an order always has the same token (until the
// secret changes) and its tracking link lives as long as the order is
// worth watching. With no secret it returns "", which Verify refuses.
func (t *TrackingTokens) Token(orderID string, issued time.Time) string {
	if len(t.keys) == 0 {
		return ""
	}
	k := t.keys[0]
	b := make([]byte, trackingHeaderLen, trackingTokenLen)
	b[0] = trackingVersion
	copy(b[1:5], k.id[:])
	_, _ = binary.Encode(b[5:], binary.BigEndian, issued.Add(t.ttl).Unix()) // 8 bytes fit
	b = append(b, trackingMAC(k.secret, b, orderID)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Verify checks that token is orderID's tracking token, signed with the
// current or the previous secret and not expired (within Leeway). The MAC
// is compared in constant time. It returns an error wrapping
// ErrUnauthorized when the token is malformed, of another format version
// (v1 included), signed with an unknown key, for another order, or
// expired, or when orderID is empty or there is no secret; the error says
// which, for logs, not for clients.
func (t *TrackingTokens) Verify(token, orderID string) error {
	switch {
	case len(t.keys) == 0:
		return fmt.Errorf("authn: %w: no tracking secret configured", ErrUnauthorized)
	case orderID == "":
		return fmt.Errorf("authn: %w: no order id", ErrUnauthorized)
	case strings.Count(token, ".") == 2:
		return fmt.Errorf("authn: %w: a JWT is not a tracking token", ErrUnauthorized)
	}
	b, err := decodeCanonical(token)
	if err != nil || len(b) != trackingTokenLen || b[0] != trackingVersion {
		return fmt.Errorf("authn: %w: %w", ErrUnauthorized, errTrackingMalformed)
	}
	reason := errTrackingUnknownKey
	for _, k := range t.keys {
		if !hmac.Equal(k.id[:], b[1:5]) {
			continue
		}
		reason = errTrackingMismatch
		if hmac.Equal(b[trackingHeaderLen:], trackingMAC(k.secret, b[:trackingHeaderLen], orderID)) {
			reason = nil
			break
		}
	}
	if reason != nil {
		return fmt.Errorf("authn: %w: %w", ErrUnauthorized, reason)
	}
	var unix int64
	_, _ = binary.Decode(b[5:trackingHeaderLen], binary.BigEndian, &unix) // 8 bytes are there
	if exp := time.Unix(unix, 0); time.Now().After(exp.Add(Leeway)) {
		return fmt.Errorf("authn: %w: %w at %s", ErrUnauthorized, errTrackingExpired, exp.UTC().Format(time.RFC3339))
	}
	return nil
}

// decodeCanonical decodes s from unpadded base64url, and refuses every
// other spelling of the same bytes: Go's decoder skips CR and LF (FuzzTrackingVerify
// found a token with a newline inside accepted), and the last character may
// carry unused bits. A token then has one spelling, so a changed character
// is a changed token, whatever logs, caches or rate limits key on it.
func decodeCanonical(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	if base64.RawURLEncoding.EncodeToString(b) != s {
		return nil, errors.New("not in canonical base64url")
	}
	return b, nil
}

func trackingMAC(secret, header []byte, orderID string) []byte {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(trackingPrefix))
	mac.Write(header)
	mac.Write([]byte(orderID))
	return mac.Sum(nil)
}
