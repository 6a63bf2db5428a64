package boot

import (
	"log/slog"
	"time"

	"github.com/orderly/orderly/pkg/authn"
)

// DevelopmentTrackingSecret is the TRACKING_SECRET used when none is set, so
// that `make run` works with no setup. Everyone can read it here, which is
// why it is refused unless ORDERLY_ENV=development.
const DevelopmentTrackingSecret = "orderly-development-tracking-secret-not-for-production"

// TrackingConfig holds the settings of tracking tokens. Only the services
// that mint them (order) or check them (notification) embed it in their
// config, beside Config, and call CheckTracking from their Load check; the
// others never see the secret.
type TrackingConfig struct {
	// TrackingSecret signs tracking tokens. It is not AUTH_JWT_SECRET, so
	// that either can be rotated, or leak, without the other.
	TrackingSecret string `env:"TRACKING_SECRET" envDefault:"orderly-development-tracking-secret-not-for-production"`
	// TrackingSecretPrevious, when set, still verifies tokens during a
	// rotation of TRACKING_SECRET; new tokens use TRACKING_SECRET.
	TrackingSecretPrevious string `env:"TRACKING_SECRET_PREVIOUS"`
	// TrackingTokenTTL is how long a tracking token is valid after its
	// order was placed (30 days: as long as the notification service keeps
	// a finished order, NOTIFICATION_RETENTION).
	TrackingTokenTTL time.Duration `env:"TRACKING_TOKEN_TTL" envDefault:"720h"`
}

// CheckTracking records in p what is wrong with the tracking settings,
// given the shared ones in c: unless ORDERLY_ENV=development, the secrets
// must be at least 32 bytes and not the development default; they must
// never equal a JWT secret; the lifetime must be positive.
func (t TrackingConfig) CheckTracking(p *Problems, c Config) {
	for _, s := range []struct{ key, value string }{
		{"TRACKING_SECRET", t.TrackingSecret},
		{"TRACKING_SECRET_PREVIOUS", t.TrackingSecretPrevious},
	} {
		if s.value == "" { // TRACKING_SECRET, when empty, is the default
			continue
		}
		if c.Env != EnvDevelopment {
			p.Require(s.value != DevelopmentTrackingSecret, s.key,
				"the development default is refused unless ORDERLY_ENV=development; set a secret of at least %d bytes", minProductionSecretLen)
			p.Require(s.value == DevelopmentTrackingSecret || len(s.value) >= minProductionSecretLen, s.key,
				"must be at least %d bytes unless ORDERLY_ENV=development", minProductionSecretLen)
		}
		p.Require(s.value != c.JWTSecret && s.value != c.JWTSecretPrevious, s.key,
			"must differ from AUTH_JWT_SECRET and AUTH_JWT_SECRET_PREVIOUS")
	}
	p.Require(t.TrackingTokenTTL > 0, "TRACKING_TOKEN_TTL", "must be positive")
}

// TrackingTokens returns the tracking tokens of the configuration: signed
// with TRACKING_SECRET, also accepted under TRACKING_SECRET_PREVIOUS, valid
// for TRACKING_TOKEN_TTL.
func (t TrackingConfig) TrackingTokens() *authn.TrackingTokens {
	return authn.NewTrackingTokens([]byte(t.TrackingSecret), []byte(t.TrackingSecretPrevious), t.TrackingTokenTTL)
}

// TrackingAttr is the tracking settings as one log attribute, secrets
// masked. (TrackingConfig has no LogValue: a service's config embeds it
// beside Config, and two would leave the config with none.)
func (t TrackingConfig) TrackingAttr() slog.Attr {
	secret := "[set]"
	if t.TrackingSecret == DevelopmentTrackingSecret {
		secret = "[development default]"
	}
	return slog.Group("tracking",
		slog.String("tracking_secret", secret),
		slog.String("tracking_secret_previous", maskSet(t.TrackingSecretPrevious)),
		slog.String("tracking_token_ttl", t.TrackingTokenTTL.String()))
}
