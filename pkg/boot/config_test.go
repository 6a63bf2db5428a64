package boot_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/rabbit"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := boot.LoadConfig(nil, "inventory", ":8081")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := boot.Config{
		Service:         "inventory",
		DatabaseURL:     "postgres://postgres@127.0.0.1:5432/orderly_inventory?sslmode=disable",
		AMQPURL:         "amqp://guest:guest@127.0.0.1:5672/",
		HTTPAddr:        ":8081",
		JWTSecret:       boot.DevelopmentJWTSecret,
		RateLimitRPS:    100,
		Env:             boot.EnvDevelopment,
		LogLevel:        "info",
		ConnectTimeout:  15 * time.Second,
		ShutdownTimeout: 20 * time.Second,
		ShutdownDelay:   time.Second,
	}
	if got != want {
		t.Errorf("LoadConfig defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("s", 40)
	got, err := boot.LoadConfig([]string{
		"DATABASE_URL=postgres://app:pw@db:5432/orders",
		"AMQP_URL=amqp://u:p@mq:5672/prod",
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + secret,
		"AUTH_JWT_ISSUER=https://id.orderly.dev/",
		"AUTH_JWT_AUDIENCE=orderly-api",
		"RATE_LIMIT_RPS=250",
		"CONSUMER_WORKERS=8",
		"ORDERLY_ENV=production",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318",
		"LOG_LEVEL=debug",
		"CONNECT_TIMEOUT=3s",
		"SHUTDOWN_TIMEOUT=45s",
		"SHUTDOWN_DELAY=5s",
		"UNRELATED=1",
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := boot.Config{
		Service:         "order",
		DatabaseURL:     "postgres://app:pw@db:5432/orders",
		AMQPURL:         "amqp://u:p@mq:5672/prod",
		HTTPAddr:        "127.0.0.1:0",
		JWTSecret:       secret,
		JWTIssuer:       "https://id.orderly.dev/",
		JWTAudience:     "orderly-api",
		RateLimitRPS:    250,
		ConsumerWorkers: 8,
		Env:             boot.EnvProduction,
		OTLPEndpoint:    "http://collector:4318",
		LogLevel:        "debug",
		ConnectTimeout:  3 * time.Second,
		ShutdownTimeout: 45 * time.Second,
		ShutdownDelay:   5 * time.Second,
	}
	if got != want {
		t.Errorf("LoadConfig:\n got %+v\nwant %+v", got, want)
	}
	if got.Env != boot.EnvProduction {
		t.Error("Env is not production with ORDERLY_ENV=production")
	}
}

func TestLoadConfigRejectsInvalidSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env     string
		wantVar string // the variable the error must name
	}{
		{"SHUTDOWN_TIMEOUT=soon", "SHUTDOWN_TIMEOUT"},
		{"SHUTDOWN_TIMEOUT=0s", "SHUTDOWN_TIMEOUT"},
		{"SHUTDOWN_DELAY=30s", "SHUTDOWN_DELAY"},
		{"CONNECT_TIMEOUT=-1s", "CONNECT_TIMEOUT"},
		{"AMQP_URL=http://127.0.0.1:5672/", "AMQP_URL"},
		{"DATABASE_URL=postgres://host:notaport/db", "DATABASE_URL"},
		{"HTTP_ADDR=8080", "HTTP_ADDR"},
		{"LOG_LEVEL=verbose", "LOG_LEVEL"},
		{"ORDERLY_ENV=staging", "ORDERLY_ENV"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"RATE_LIMIT_RPS=0", "RATE_LIMIT_RPS"},
		{"RATE_LIMIT_RPS=-5", "RATE_LIMIT_RPS"},
		{"RATE_LIMIT_RPS=lots", "RATE_LIMIT_RPS"},
		{"CONSUMER_WORKERS=-1", "CONSUMER_WORKERS"},
		{"CONSUMER_WORKERS=257", "CONSUMER_WORKERS"},
		{"CONSUMER_WORKERS=many", "CONSUMER_WORKERS"},
		{"TLS_CERT_FILE=/etc/orderly/tls.crt", "TLS_KEY_FILE"},
		{"TLS_KEY_FILE=/etc/orderly/tls.key", "TLS_CERT_FILE"},
		{"AMQP_CA_FILE=/etc/orderly/amqp-ca.pem", "AMQP_CA_FILE"}, // with the default amqp:// URL
		{"AMQP_CERT_FILE=/etc/orderly/amqp.crt", "AMQP_KEY_FILE"},
		{"AMQP_URL=amqps://u:p@mq:5671/?cacertfile=/etc/ca.pem", "AMQP_CA_FILE"},
		{"DATABASE_URL=postgres://db/orders?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem", "DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Parallel()
			_, err := boot.LoadConfig([]string{tt.env}, "order", ":8080")
			if err == nil {
				t.Fatalf("LoadConfig(%s) = nil error, want one naming %s", tt.env, tt.wantVar)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantVar) {
				t.Errorf("error %q does not name %s", msg, tt.wantVar)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q spans several lines, want one", msg)
			}
		})
	}
}

// TestLoadConfigConsumerWorkers checks the bounds that are accepted: 0 is
// not "no workers" but the service's default, which the service or
// rabbit.Consumer fills in later.
func TestLoadConfigConsumerWorkers(t *testing.T) {
	t.Parallel()
	for env, want := range map[string]int{"CONSUMER_WORKERS=0": 0, "CONSUMER_WORKERS=1": 1, "CONSUMER_WORKERS=256": 256} {
		cfg, err := boot.LoadConfig([]string{env}, "order", ":8080")
		if err != nil || cfg.ConsumerWorkers != want {
			t.Errorf("LoadConfig(%s) = %d, %v; want %d, nil", env, cfg.ConsumerWorkers, err, want)
		}
	}
}

func TestAddConsumerFillsWorkersFromConfig(t *testing.T) {
	t.Parallel()
	svc := &boot.Service{Config: boot.Config{ConsumerWorkers: 8}, Log: slog.New(slog.DiscardHandler)}
	unset := &rabbit.Consumer{Queue: rabbit.Queue{Name: "q1"}}
	svc.AddConsumer(unset)
	if unset.Workers != 8 {
		t.Errorf("Workers = %d with CONSUMER_WORKERS=8 and none asked, want 8", unset.Workers)
	}
	own := &rabbit.Consumer{Queue: rabbit.Queue{Name: "q2"}, Workers: 16}
	svc.AddConsumer(own)
	if own.Workers != 16 {
		t.Errorf("Workers = %d when the service asked for 16, want 16", own.Workers)
	}
}

func TestLoadConfigNamesEveryInvalidVariable(t *testing.T) {
	t.Parallel()
	_, err := boot.LoadConfig([]string{"LOG_LEVEL=loud", "HTTP_ADDR=nope"}, "order", ":8080")
	if err == nil {
		t.Fatal("LoadConfig = nil error for two invalid settings")
	}
	for _, v := range []string{"LOG_LEVEL", "HTTP_ADDR"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
}

func TestLoadConfigProductionRefusesDevelopmentSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		environ []string
	}{
		{"secret unset", []string{"ORDERLY_ENV=production"}},
		{"secret empty", []string{"ORDERLY_ENV=production", "AUTH_JWT_SECRET="}},
		{"development secret set explicitly", []string{"ORDERLY_ENV=production", "AUTH_JWT_SECRET=" + boot.DevelopmentJWTSecret}},
		{"short secret", []string{"ORDERLY_ENV=production", "AUTH_JWT_SECRET=short"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := boot.LoadConfig(tt.environ, "payment", ":8082")
			if err == nil || !strings.Contains(err.Error(), "AUTH_JWT_SECRET") {
				t.Fatalf("LoadConfig(%v) error = %v, want one naming AUTH_JWT_SECRET", tt.environ, err)
			}
		})
	}
	// Development mode accepts the default: that is what it is for.
	if _, err := boot.LoadConfig([]string{"ORDERLY_ENV=development"}, "payment", ":8082"); err != nil {
		t.Errorf("development mode with the default secret: %v", err)
	}
}

func TestConfigLogMasksSecrets(t *testing.T) {
	t.Parallel()
	secret := "a-very-secret-production-signing-key-0123456789"
	cfg, err := boot.LoadConfig([]string{
		"DATABASE_URL=postgres://app:dbpass123@db:5432/orders",
		"AMQP_URL=amqp://user:mqpass456@mq:5672/",
		"AUTH_JWT_SECRET=" + secret,
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	for _, out := range []string{buf.String(), cfg.String(), strings.ReplaceAll(buf.String(), `\u0026`, "&")} {
		for _, leak := range []string{"dbpass123", "mqpass456", secret} {
			if strings.Contains(out, leak) {
				t.Errorf("config output leaks %q: %s", leak, out)
			}
		}
	}
	var line struct {
		Config map[string]any `json:"config"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("decode log line: %v", err)
	}
	for key, want := range map[string]string{
		"database_url":    "postgres://app:xxxxx@db:5432/orders",
		"amqp_url":        "amqp://user:xxxxx@mq:5672/",
		"auth_jwt_secret": "[set]",
		"http_addr":       ":8080",
		"auth_jwt_issuer": "",
	} {
		if got := line.Config[key]; got != want {
			t.Errorf("logged %s = %v, want %q", key, got, want)
		}
	}
}

func TestConfigVerifier(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("k", 40)
	cfg, err := boot.LoadConfig([]string{
		"AUTH_JWT_SECRET=" + secret,
		"AUTH_JWT_ISSUER=orderly-id",
		"AUTH_JWT_AUDIENCE=orderly-api",
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	exp := time.Now().Add(time.Hour)
	tests := []struct {
		name             string
		secret           string
		issuer, audience string
		wantOK           bool
	}{
		{"configured secret, issuer and audience", secret, "orderly-id", "orderly-api", true},
		{"other issuer", secret, "someone-else", "orderly-api", false},
		{"other audience", secret, "orderly-id", "other-api", false},
		{"development secret", boot.DevelopmentJWTSecret, "orderly-id", "orderly-api", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := authn.Issue([]byte(tt.secret), authn.Claims{Subject: "c-1", ExpiresAt: exp}, tt.issuer, tt.audience)
			if err != nil {
				t.Fatalf("Issue: %v", err)
			}
			_, err = cfg.Verifier().Verify(tok)
			if gotOK := err == nil; gotOK != tt.wantOK {
				t.Errorf("Verify error = %v, want ok %v", err, tt.wantOK)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	got := boot.OneLine(errors.Join(errors.New("first\nsecond"), errors.New("  third ")))
	if want := "first; second; third"; got != want {
		t.Errorf("OneLine = %q, want %q", got, want)
	}
}
