package authn_test

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orderly/orderly/pkg/authn"
)

var testSecret = []byte("test-secret-0123456789-0123456789-abcdef")

// mustSign signs claims with method and key, for tokens Issue would never
// produce.
func mustSign(tb testing.TB, method jwt.SigningMethod, claims jwt.MapClaims, key any) string {
	tb.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatalf("sign %s token: %v", method.Alg(), err)
	}
	return s
}

// handCraft builds a token from a raw header and payload, signing it with
// HMAC-SHA256 under key when key is non-nil and leaving the signature empty
// otherwise.
func handCraft(header, payload string, key []byte) string {
	enc := base64.RawURLEncoding.EncodeToString
	input := enc([]byte(header)) + "." + enc([]byte(payload))
	if key == nil {
		return input + "."
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(input))
	return input + "." + enc(mac.Sum(nil))
}

func mustIssue(tb testing.TB, c authn.Claims, issuer, audience string) string {
	tb.Helper()
	tok, err := authn.Issue(testSecret, c, issuer, audience)
	if err != nil {
		tb.Fatalf("Issue: %v", err)
	}
	return tok
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	hour := now.Add(time.Hour)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("rsa key: %v", err)
	}
	valid := jwt.MapClaims{"sub": "c-1", "exp": hour.Unix()}
	with := func(kv ...any) jwt.MapClaims {
		m := jwt.MapClaims{}
		for k, v := range valid {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(m, kv[i].(string))
				continue
			}
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	validToken := mustSign(t, jwt.SigningMethodHS256, valid, testSecret)
	header, payload, _ := strings.Cut(validToken, ".")
	payload, sig, _ := strings.Cut(payload, ".")
	adminPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"c-1","exp":` + jsonInt(hour.Unix()) + `,"role":"admin"}`))

	tests := []struct {
		name     string
		verifier *authn.Verifier
		token    string
		want     authn.Claims // zero: want an error
	}{
		{name: "valid", token: validToken, want: authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "valid admin via Issue", token: mustIssue(t, authn.Claims{Subject: "ops", Role: "admin", ExpiresAt: hour}, "", ""),
			want: authn.Claims{Subject: "ops", Role: "admin", ExpiresAt: hour}},
		{name: "expired within leeway", token: mustSign(t, jwt.SigningMethodHS256, with("exp", now.Add(-10*time.Second).Unix()), testSecret),
			want: authn.Claims{Subject: "c-1", ExpiresAt: now.Add(-10 * time.Second)}},
		{name: "expired", token: mustSign(t, jwt.SigningMethodHS256, with("exp", now.Add(-time.Minute).Unix()), testSecret)},
		{name: "no exp", token: mustSign(t, jwt.SigningMethodHS256, with("exp", nil), testSecret)},
		{name: "exp not a number", token: mustSign(t, jwt.SigningMethodHS256, with("exp", "tomorrow"), testSecret)},
		{name: "not valid yet", token: mustSign(t, jwt.SigningMethodHS256, with("nbf", now.Add(time.Minute).Unix()), testSecret)},
		{name: "issued in the future", token: mustSign(t, jwt.SigningMethodHS256, with("iat", now.Add(time.Minute).Unix()), testSecret)},
		{name: "alg none unsigned", token: handCraft(`{"alg":"none","typ":"JWT"}`, `{"sub":"c-1","exp":`+jsonInt(hour.Unix())+`}`, nil)},
		{name: "alg None with signature", token: handCraft(`{"alg":"None","typ":"JWT"}`, `{"sub":"c-1","exp":`+jsonInt(hour.Unix())+`}`, testSecret)},
		{name: "no alg", token: handCraft(`{"typ":"JWT"}`, `{"sub":"c-1","exp":`+jsonInt(hour.Unix())+`}`, testSecret)},
		{name: "forged with another secret", token: mustSign(t, jwt.SigningMethodHS256, valid, []byte("not-the-secret-0123456789-0123456789"))},
		{name: "HS512 with the right secret", token: mustSign(t, jwt.SigningMethodHS512, valid, testSecret)},
		{name: "HS384 with the right secret", token: mustSign(t, jwt.SigningMethodHS384, valid, testSecret)},
		{name: "RS256", token: mustSign(t, jwt.SigningMethodRS256, valid, rsaKey)},
		{name: "payload swapped to admin", token: header + "." + adminPayload + "." + sig},
		{name: "signature stripped", token: header + "." + payload + "."},
		{name: "missing sub", token: mustSign(t, jwt.SigningMethodHS256, with("sub", nil), testSecret)},
		{name: "empty sub", token: mustSign(t, jwt.SigningMethodHS256, with("sub", ""), testSecret)},
		{name: "blank sub", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "  "), testSecret)},
		{name: "numeric sub", token: mustSign(t, jwt.SigningMethodHS256, with("sub", 42), testSecret)},
		{name: "role not a string", token: mustSign(t, jwt.SigningMethodHS256, with("role", true), testSecret)},
		{name: "empty", token: ""},
		{name: "garbage", token: "not-a-jwt"},
		{name: "three dots of garbage", token: "a.b.c"},
		{name: "empty secret verifier", verifier: authn.NewVerifier(nil, "", ""), token: handCraft(`{"alg":"HS256","typ":"JWT"}`, `{"sub":"c-1","exp":`+jsonInt(hour.Unix())+`}`, []byte{})},

		// Issuer and audience, when configured.
		{name: "issuer and audience match", verifier: authn.NewVerifier(testSecret, "orderly-id", "orderly-api"),
			token: mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: hour}, "orderly-id", "orderly-api"),
			want:  authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "audience among several", verifier: authn.NewVerifier(testSecret, "", "orderly-api"),
			token: mustSign(t, jwt.SigningMethodHS256, with("aud", []string{"billing", "orderly-api"}), testSecret),
			want:  authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "wrong issuer", verifier: authn.NewVerifier(testSecret, "orderly-id", ""),
			token: mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: hour}, "evil-id", "")},
		{name: "missing issuer", verifier: authn.NewVerifier(testSecret, "orderly-id", ""), token: validToken},
		{name: "wrong audience", verifier: authn.NewVerifier(testSecret, "", "orderly-api"),
			token: mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: hour}, "", "billing-api")},
		{name: "missing audience", verifier: authn.NewVerifier(testSecret, "", "orderly-api"), token: validToken},

		// Lifetime: no further ahead than the maximum (24 h by default).
		{name: "exp at the maximum lifetime", token: mustSign(t, jwt.SigningMethodHS256, with("exp", now.Add(authn.DefaultMaxTTL).Unix()), testSecret),
			want: authn.Claims{Subject: "c-1", ExpiresAt: now.Add(authn.DefaultMaxTTL)}},
		{name: "exp beyond the maximum lifetime", token: mustSign(t, jwt.SigningMethodHS256, with("exp", now.Add(authn.DefaultMaxTTL+time.Hour).Unix()), testSecret)},
		{name: "exp 400 days ahead", token: mustSign(t, jwt.SigningMethodHS256, with("exp", now.Add(400*24*time.Hour).Unix()), testSecret)},
		{name: "exp far beyond any date", token: mustSign(t, jwt.SigningMethodHS256, with("exp", int64(1)<<52), testSecret)},
		{name: "exp within a shorter maximum", verifier: authn.NewVerifier(testSecret, "", "", authn.WithMaxTTL(2*time.Hour)),
			token: validToken, want: authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "exp beyond a shorter maximum", verifier: authn.NewVerifier(testSecret, "", "", authn.WithMaxTTL(30*time.Minute)), token: validToken},

		// Rotation: the previous secret verifies too, and only it.
		{name: "previous secret", verifier: authn.NewVerifier([]byte("new-secret-0123456789-0123456789-abcdef"), "", "", authn.WithPreviousSecret(testSecret)),
			token: validToken, want: authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "current secret during a rotation", verifier: authn.NewVerifier(testSecret, "", "", authn.WithPreviousSecret([]byte("old-secret-0123456789-0123456789-abcdef"))),
			token: validToken, want: authn.Claims{Subject: "c-1", ExpiresAt: hour}},
		{name: "neither secret during a rotation", verifier: authn.NewVerifier([]byte("new-secret-0123456789-0123456789-abcdef"), "", "", authn.WithPreviousSecret([]byte("old-secret-0123456789-0123456789-abcdef"))),
			token: validToken},
		{name: "previous secret once retired", verifier: authn.NewVerifier([]byte("new-secret-0123456789-0123456789-abcdef"), "", ""), token: validToken},
		{name: "no current secret, only a previous one", verifier: authn.NewVerifier(nil, "", "", authn.WithPreviousSecret(testSecret)), token: validToken},

		// A subject is an id: no control characters.
		{name: "sub with NUL", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "c-1\x00"), testSecret)},
		{name: "sub with newline", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "c-1\nrole=admin"), testSecret)},
		{name: "sub with BEL", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "c\a1"), testSecret)},
		{name: "sub with DEL", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "c-1\x7f"), testSecret)},
		{name: "sub with unit separator", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "c\x1f1"), testSecret)},
		{name: "sub longer than an id", token: mustSign(t, jwt.SigningMethodHS256, with("sub", strings.Repeat("c", authn.MaxSubjectLen+1)), testSecret)},
		{name: "sub as long as allowed", token: mustSign(t, jwt.SigningMethodHS256, with("sub", strings.Repeat("c", authn.MaxSubjectLen)), testSecret),
			want: authn.Claims{Subject: strings.Repeat("c", authn.MaxSubjectLen), ExpiresAt: hour}},
		{name: "sub with letters beyond ASCII", token: mustSign(t, jwt.SigningMethodHS256, with("sub", "zoë-1"), testSecret),
			want: authn.Claims{Subject: "zoë-1", ExpiresAt: hour}},
		{name: "issuer and audience ignored when not configured",
			token: mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: hour}, "anyone", "anything"),
			want:  authn.Claims{Subject: "c-1", ExpiresAt: hour}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := tt.verifier
			if v == nil {
				v = authn.NewVerifier(testSecret, "", "")
			}
			got, err := v.Verify(tt.token)
			if tt.want == (authn.Claims{}) {
				if err == nil {
					t.Fatalf("Verify = %+v, nil error; want ErrUnauthorized", got)
				}
				if !errors.Is(err, authn.ErrUnauthorized) {
					t.Errorf("Verify error %v does not wrap ErrUnauthorized", err)
				}
				if got != (authn.Claims{}) {
					t.Errorf("Verify returned claims %+v with its error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != tt.want.Subject || got.Role != tt.want.Role || got.ExpiresAt.Unix() != tt.want.ExpiresAt.Unix() {
				t.Errorf("Verify = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestVerifyKeepsTheJWTReason(t *testing.T) {
	t.Parallel()
	tok := mustSign(t, jwt.SigningMethodHS256, jwt.MapClaims{"sub": "c-1", "exp": time.Now().Add(-time.Hour).Unix()}, testSecret)
	_, err := authn.NewVerifier(testSecret, "", "").Verify(tok)
	if !errors.Is(err, authn.ErrUnauthorized) || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("error %v: want ErrUnauthorized and jwt.ErrTokenExpired", err)
	}
}

func TestNewVerifierCopiesTheSecret(t *testing.T) {
	t.Parallel()
	secret := append([]byte(nil), testSecret...)
	v := authn.NewVerifier(secret, "", "")
	tok := mustIssue(t, authn.Claims{Subject: "c-1", ExpiresAt: time.Now().Add(time.Hour)}, "", "")
	secret[0] ^= 0xff
	if _, err := v.Verify(tok); err != nil {
		t.Errorf("Verify after the caller changed its slice: %v", err)
	}
}

func TestIssueClaims(t *testing.T) {
	t.Parallel()
	exp := time.Now().Add(time.Hour)
	tests := []struct {
		name             string
		claims           authn.Claims
		issuer, audience string
		want             map[string]any // claim → value; nil value: must be absent
	}{
		{
			name:   "customer, no issuer or audience",
			claims: authn.Claims{Subject: "c-1", ExpiresAt: exp},
			want:   map[string]any{"sub": "c-1", "exp": float64(exp.Unix()), "role": nil, "iss": nil, "aud": nil},
		},
		{
			name:   "admin with issuer and audience",
			claims: authn.Claims{Subject: "ops", Role: "admin", ExpiresAt: exp}, issuer: "orderly-id", audience: "orderly-api",
			want: map[string]any{"sub": "ops", "role": "admin", "iss": "orderly-id", "aud": []any{"orderly-api"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok := mustIssue(t, tt.claims, tt.issuer, tt.audience)
			parts := strings.Split(tok, ".")
			if len(parts) != 3 {
				t.Fatalf("token %q has %d parts", tok, len(parts))
			}
			var hdr, payload map[string]any
			mustDecodeSegment(t, parts[0], &hdr)
			mustDecodeSegment(t, parts[1], &payload)
			if hdr["alg"] != "HS256" {
				t.Errorf("alg = %v, want HS256", hdr["alg"])
			}
			iat, ok := payload["iat"].(float64)
			if !ok || time.Since(time.Unix(int64(iat), 0)) > time.Minute {
				t.Errorf("iat = %v, want about now", payload["iat"])
			}
			for k, want := range tt.want {
				got, present := payload[k]
				switch {
				case want == nil && present:
					t.Errorf("claim %q = %v, want it absent", k, got)
				case want != nil && !jsonEqual(got, want):
					t.Errorf("claim %q = %v, want %v", k, got, want)
				}
			}
		})
	}
}

func TestIssueRefusesUnverifiableTokens(t *testing.T) {
	t.Parallel()
	exp := time.Now().Add(time.Hour)
	for name, tc := range map[string]struct {
		secret []byte
		claims authn.Claims
	}{
		"empty secret":  {nil, authn.Claims{Subject: "c-1", ExpiresAt: exp}},
		"empty subject": {testSecret, authn.Claims{ExpiresAt: exp}},
		"no expiry":     {testSecret, authn.Claims{Subject: "c-1"}},
	} {
		if tok, err := authn.Issue(tc.secret, tc.claims, "", ""); err == nil {
			t.Errorf("%s: Issue = %q, nil error", name, tok)
		}
	}
}

func TestClaimsIsAdmin(t *testing.T) {
	t.Parallel()
	for role, want := range map[string]bool{"admin": true, "": false, "customer": false, "Admin": false, "admin ": false} {
		if got := (authn.Claims{Subject: "x", Role: role}).IsAdmin(); got != want {
			t.Errorf("IsAdmin with role %q = %v, want %v", role, got, want)
		}
	}
}

func mustDecodeSegment(tb testing.TB, seg string, dst any) {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		tb.Fatalf("decode segment %q: %v", seg, err)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		tb.Fatalf("unmarshal segment %s: %v", b, err)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
