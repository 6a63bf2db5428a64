// Package authn authenticates Orderly's callers: it verifies the HS256 bearer
// JWTs of the HTTP API (Verifier, Middleware, RequireAdmin), issues them for
// tests and tools (Issue), and signs and checks the per-order tracking tokens
// that let a shopper watch one order without logging in (TrackingTokens),
// with a secret of their own.
//
// Every failure to authenticate wraps ErrUnauthorized and every refusal of an
// authenticated caller wraps ErrForbidden, so services can match them with
// errors.Is; the HTTP responses are RFC 9457 problems of type
// TypeUnauthorized (401) and TypeForbidden (403).
package authn

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/orderly/orderly/pkg/httpx"
)

// Errors behind every authentication failure; match them with errors.Is.
var (
	// ErrUnauthorized means the caller is not authenticated: no token, or a
	// token that is malformed, forged, expired, or for another issuer,
	// audience or order.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden means the caller is authenticated but may not do this,
	// such as a customer calling an admin endpoint.
	ErrForbidden = errors.New("forbidden")
)

// RoleAdmin is the "role" claim of operators, who may call admin endpoints.
const RoleAdmin = "admin"

// MaxSubjectLen bounds a token's "sub": it becomes a customer id, stored
// and indexed (a B-tree entry holds at most about 2.7 kB), and no identity
// provider issues ids anywhere near this long.
const MaxSubjectLen = 255

// Leeway is the clock skew tolerated on exp, nbf and iat: a token that
// expired this long ago (or is issued this far in the future) is still
// accepted, so that hosts whose clocks drift slightly agree on tokens.
const Leeway = 30 * time.Second

// Claims is what a verified token says about its caller.
type Claims struct {
	// Subject is the caller's id (the JWT "sub"): the customer id for
	// shoppers and REST clients. Never empty in verified claims.
	Subject string
	// Role is the JWT "role" claim; "admin" for operators, else usually empty.
	Role string
	// ExpiresAt is when the token stops being accepted (the JWT "exp").
	ExpiresAt time.Time
}

// IsAdmin reports whether the caller has the admin role.
func (c Claims) IsAdmin() bool { return c.Role == RoleAdmin }

// tokenClaims is the JWT payload: the registered claims plus our role.
type tokenClaims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

// DefaultMaxTTL is how far ahead of now a bearer token's "exp" may lie
// unless WithMaxTTL says otherwise (AUTH_JWT_MAX_TTL): a stolen token is
// worth only as long as it lives, and the identity provider's are short.
const DefaultMaxTTL = 24 * time.Hour

// Verifier checks bearer JWTs against an HS256 secret (and, during a
// rotation, the previous one) and, when configured, an issuer and an
// audience. It is safe for concurrent use.
type Verifier struct {
	secret   []byte
	previous []byte
	maxTTL   time.Duration
	parser   *jwt.Parser
}

// VerifierOption changes a default of NewVerifier.
type VerifierOption func(*Verifier)

// WithPreviousSecret makes the Verifier also accept tokens signed with
// secret, so that the signing secret can be rotated without refusing the
// tokens already out: sign with the new one, verify with both until the
// old tokens have expired, then drop it. An empty secret adds nothing.
func WithPreviousSecret(secret []byte) VerifierOption {
	return func(v *Verifier) { v.previous = append([]byte(nil), secret...) }
}

// WithMaxTTL sets how far ahead of now (plus Leeway) a token's "exp" may
// lie; a token meant to live longer is refused. d must be positive; other
// values keep DefaultMaxTTL.
func WithMaxTTL(d time.Duration) VerifierOption {
	return func(v *Verifier) {
		if d > 0 {
			v.maxTTL = d
		}
	}
}

// NewVerifier returns a Verifier for tokens signed with secret using HS256.
// A non-empty issuer must equal the token's "iss" and a non-empty audience
// must be among its "aud"; empty ones are not checked. An empty secret makes
// every Verify fail, rather than accept tokens signed with an empty key.
// Tokens whose "exp" lies more than DefaultMaxTTL ahead are refused, unless
// an option says otherwise.
func NewVerifier(secret []byte, issuer, audience string, opts ...VerifierOption) *Verifier {
	popts := []jwt.ParserOption{
		// Only HS256: this refuses "none", the RS*/ES* algorithms (whose
		// "public key" an attacker could swap for our secret) and other
		// HMAC sizes, before any signature is checked.
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(),
	}
	if issuer != "" {
		popts = append(popts, jwt.WithIssuer(issuer))
	}
	if audience != "" {
		popts = append(popts, jwt.WithAudience(audience))
	}
	v := &Verifier{
		secret: append([]byte(nil), secret...),
		maxTTL: DefaultMaxTTL,
		parser: jwt.NewParser(popts...),
	}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Verify checks token (the JWT alone, without "Bearer ") and returns its
// claims. It requires an HS256 signature with the verifier's secret (or the
// previous one), an "exp" in the future (within Leeway) but no further
// ahead than the maximum lifetime, a non-empty "sub" without control
// characters, and the configured issuer and audience. Any failure returns
// an error wrapping ErrUnauthorized and, where there is one, the jwt
// package's reason (jwt.ErrTokenExpired, …); its message is for logs, not
// for clients.
func (v *Verifier) Verify(token string) (Claims, error) {
	if len(v.secret) == 0 {
		return Claims{}, fmt.Errorf("authn: %w: no secret configured", ErrUnauthorized)
	}
	var tc tokenClaims
	_, err := v.parser.ParseWithClaims(token, &tc, func(t *jwt.Token) (any, error) {
		// WithValidMethods already checked the alg name; this also pins
		// the implementation behind it.
		if t.Method != jwt.SigningMethodHS256 {
			return nil, fmt.Errorf("unexpected signing method %v", t.Header["alg"])
		}
		if len(v.previous) > 0 {
			return jwt.VerificationKeySet{Keys: []jwt.VerificationKey{v.secret, v.previous}}, nil
		}
		return v.secret, nil
	})
	if err != nil {
		return Claims{}, fmt.Errorf("authn: %w: %w", ErrUnauthorized, err)
	}
	// The parser required exp, so ExpiresAt is set.
	exp := tc.ExpiresAt.Time
	if ahead := time.Until(exp); ahead > v.maxTTL+Leeway {
		return Claims{}, fmt.Errorf("authn: %w: token expires in %s, more than the %s allowed",
			ErrUnauthorized, ahead.Round(time.Second), v.maxTTL)
	}
	switch {
	case strings.TrimSpace(tc.Subject) == "":
		return Claims{}, fmt.Errorf("authn: %w: token has no subject", ErrUnauthorized)
	case len(tc.Subject) > MaxSubjectLen:
		return Claims{}, fmt.Errorf("authn: %w: token subject is longer than %d bytes", ErrUnauthorized, MaxSubjectLen)
	}
	// Nothing downstream stores or compares such an id safely (a NUL is
	// refused by Postgres), so the token is invalid; the rule is the one
	// every API applies to the identifiers it is sent.
	if err := httpx.CheckText(tc.Subject); err != nil {
		return Claims{}, fmt.Errorf("authn: %w: token subject %w", ErrUnauthorized, err)
	}
	return Claims{Subject: tc.Subject, Role: tc.Role, ExpiresAt: exp}, nil
}

// Issue returns an HS256 JWT for c signed with secret, with "sub", "role"
// (left out when empty), "exp" from c.ExpiresAt, "iat" now, and "iss" and
// "aud" when issuer and audience are non-empty. It is for tests, tools and
// the demo; production tokens come from the identity provider.
//
// It returns an error when secret, c.Subject or c.ExpiresAt is empty, since
// Verify would refuse such a token.
func Issue(secret []byte, c Claims, issuer, audience string) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("authn: issue token: empty secret")
	case strings.TrimSpace(c.Subject) == "":
		return "", errors.New("authn: issue token: empty subject")
	case c.ExpiresAt.IsZero():
		return "", errors.New("authn: issue token: no expiry")
	}
	tc := tokenClaims{
		Role: c.Role,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			Issuer:    issuer,
			ExpiresAt: jwt.NewNumericDate(c.ExpiresAt),
			IssuedAt:  jwt.NewNumericDate(time.Now()),
		},
	}
	if audience != "" {
		tc.Audience = jwt.ClaimStrings{audience}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, tc).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("authn: issue token: %w", err)
	}
	return s, nil
}
