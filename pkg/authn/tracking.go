package authn

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
)

// trackingPrefix separates tracking-token MACs from every other use of the
// secret: a JWT's signing input starts with a base64url header ("eyJ"), so
// no JWT signature is ever a valid tracking token or the other way round.
// The version lets a new token format coexist with old links.
const trackingPrefix = "orderly-track:v1:"

// NewTrackingToken returns the tracking token of one order: the unpadded
// base64url HMAC-SHA256 of "orderly-track:v1:"+orderID under secret, safe
// in a URL query. It grants read access to that order's status feed only.
//
// It has no expiry on purpose: it is printed in the shopper's tracking link
// (an e-mail, a bookmark), which must keep working for as long as the order
// is worth watching, and it only reveals an order's status. Rotating the
// secret revokes every tracking token at once.
func NewTrackingToken(secret []byte, orderID string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(trackingPrefix + orderID))
	return base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// VerifyTrackingToken checks that token is orderID's tracking token under
// secret, comparing in constant time. It returns an error wrapping
// ErrUnauthorized when it is not, or when secret or orderID is empty.
func VerifyTrackingToken(secret []byte, token, orderID string) error {
	switch {
	case len(secret) == 0:
		return fmt.Errorf("authn: %w: no secret configured", ErrUnauthorized)
	case orderID == "":
		return fmt.Errorf("authn: %w: no order id", ErrUnauthorized)
	}
	// Comparing the encoded forms rejects non-canonical encodings of the
	// right MAC too, so there is exactly one valid token per order.
	want := NewTrackingToken(secret, orderID)
	if subtle.ConstantTimeCompare([]byte(token), []byte(want)) != 1 {
		return fmt.Errorf("authn: %w: %w", ErrUnauthorized, errBadTrackingToken)
	}
	return nil
}

var errBadTrackingToken = errors.New("tracking token does not match the order")
