package boot_test

import (
	"bytes"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/boot"
)

// trackingService is the config of a service that mints or checks tracking
// tokens.
type trackingService struct {
	boot.Config
	boot.TrackingConfig
}

func loadTracking(environ []string) (trackingService, error) {
	var cfg trackingService
	err := boot.Load(environ, "notification", ":8083", &cfg, func(p *boot.Problems) {
		cfg.CheckTracking(p, cfg.Config)
	})
	return cfg, err
}

func TestTrackingConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := loadTracking([]string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := boot.TrackingConfig{TrackingSecret: boot.DevelopmentTrackingSecret, TrackingTokenTTL: 30 * 24 * time.Hour}
	if cfg.TrackingConfig != want {
		t.Errorf("defaults %+v, want %+v", cfg.TrackingConfig, want)
	}
	// The default is written twice, in the constant and in the env tag.
	f, _ := reflect.TypeFor[boot.TrackingConfig]().FieldByName("TrackingSecret")
	if f.Tag.Get("envDefault") != boot.DevelopmentTrackingSecret {
		t.Errorf("TRACKING_SECRET's envDefault %q is not DevelopmentTrackingSecret", f.Tag.Get("envDefault"))
	}
}

func TestTrackingConfigRules(t *testing.T) {
	t.Parallel()
	jwt := strings.Repeat("j", 40)
	strong := strings.Repeat("t", 32)
	production := []string{"ORDERLY_ENV=production", "AUTH_JWT_SECRET=" + jwt, "AUTH_JWT_ISSUER=id", "AUTH_JWT_AUDIENCE=api",
		"AMQP_URL=amqps://order:pw@mq.example:5671/", "DATABASE_URL=postgres://order:pw@db.example:5432/orderly_order?sslmode=verify-full"}
	tests := []struct {
		name    string
		environ []string
		wantVar string // "" for no error
	}{
		{"production with its own secret", append(production, "TRACKING_SECRET="+strong), ""},
		{"production with a rotation", append(production, "TRACKING_SECRET="+strong, "TRACKING_SECRET_PREVIOUS="+strings.Repeat("o", 32)), ""},
		{"production, secret unset", production, "TRACKING_SECRET"},
		{"production, secret empty", append(production, "TRACKING_SECRET="), "TRACKING_SECRET"},
		{"production, development secret set explicitly", append(production, "TRACKING_SECRET="+boot.DevelopmentTrackingSecret), "TRACKING_SECRET"},
		{"production, short secret", append(production, "TRACKING_SECRET=short"), "TRACKING_SECRET"},
		{"production, the JWT secret", append(production, "TRACKING_SECRET="+jwt), "TRACKING_SECRET"},
		{"production, the previous JWT secret", append(production, "AUTH_JWT_SECRET_PREVIOUS="+strong, "TRACKING_SECRET="+strong), "TRACKING_SECRET"},
		{"production, short previous secret", append(production, "TRACKING_SECRET="+strong, "TRACKING_SECRET_PREVIOUS=short"), "TRACKING_SECRET_PREVIOUS"},
		{"production, development secret as the previous one", append(production, "TRACKING_SECRET="+strong, "TRACKING_SECRET_PREVIOUS="+boot.DevelopmentTrackingSecret), "TRACKING_SECRET_PREVIOUS"},
		{"production, the JWT secret as the previous one", append(production, "TRACKING_SECRET="+strong, "TRACKING_SECRET_PREVIOUS="+jwt), "TRACKING_SECRET_PREVIOUS"},
		{"development, short secret", []string{"ORDERLY_ENV=development", "TRACKING_SECRET=short"}, ""},
		{"development, the JWT secret", []string{"ORDERLY_ENV=development", "AUTH_JWT_SECRET=same-secret", "TRACKING_SECRET=same-secret"}, "TRACKING_SECRET"},
		{"lifetime zero", []string{"ORDERLY_ENV=development", "TRACKING_TOKEN_TTL=0s"}, "TRACKING_TOKEN_TTL"},
		{"lifetime negative", []string{"ORDERLY_ENV=development", "TRACKING_TOKEN_TTL=-1h"}, "TRACKING_TOKEN_TTL"},
		{"lifetime not a duration", []string{"ORDERLY_ENV=development", "TRACKING_TOKEN_TTL=30d"}, "TRACKING_TOKEN_TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadTracking(tt.environ)
			switch {
			case tt.wantVar == "" && err != nil:
				t.Fatalf("Load(%v): %v", tt.environ, err)
			case tt.wantVar != "" && (err == nil || !strings.Contains(err.Error(), tt.wantVar+":")):
				t.Fatalf("Load(%v) error = %v, want one naming %s", tt.environ, err, tt.wantVar)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("error %q spans several lines", err)
			}
		})
	}
}

func TestTrackingConfigTokens(t *testing.T) {
	t.Parallel()
	const order = "0190a6b4-0000-7000-8000-00000000a11c"
	old, err := loadTracking([]string{"ORDERLY_ENV=development", "TRACKING_SECRET=" + strings.Repeat("o", 32)})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadTracking([]string{"ORDERLY_ENV=development", "TRACKING_SECRET=" + strings.Repeat("n", 32),
		"TRACKING_SECRET_PREVIOUS=" + strings.Repeat("o", 32), "TRACKING_TOKEN_TTL=1h"})
	if err != nil {
		t.Fatal(err)
	}
	tokens := cfg.TrackingTokens()
	for name, tok := range map[string]string{
		"minted now":                  tokens.Token(order, time.Now()),
		"minted under the old secret": old.TrackingTokens().Token(order, time.Now()),
	} {
		if err := tokens.Verify(tok, order); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := tokens.Verify(tokens.Token(order, time.Now().Add(-2*time.Hour)), order); err == nil {
		t.Error("a token older than TRACKING_TOKEN_TTL=1h verified")
	}
}

func TestTrackingAttrMasksSecrets(t *testing.T) {
	t.Parallel()
	secret, previous := "tracking-secret-in-production-0123456789", "tracking-secret-of-last-month-0123456789"
	cfg, err := loadTracking([]string{"ORDERLY_ENV=development", "TRACKING_SECRET=" + secret, "TRACKING_SECRET_PREVIOUS=" + previous})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("settings", cfg.TrackingAttr())
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "config", cfg)
	out := buf.String()
	for _, leak := range []string{secret, previous} {
		if strings.Contains(out, leak) {
			t.Errorf("log leaks %q: %s", leak, out)
		}
	}
	if !strings.Contains(out, `"tracking_secret":"[set]","tracking_secret_previous":"[set]","tracking_token_ttl":"720h0m0s"`) {
		t.Errorf("log %s lacks the masked tracking settings", out)
	}
}
