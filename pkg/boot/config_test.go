package boot_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/rabbit"
)

// dev is the setting every test that is not about the production rules
// starts from: the development defaults work only with it.
const dev = "ORDERLY_ENV=development"

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	got, err := boot.LoadConfig([]string{dev}, "inventory", "127.0.0.1:8081")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := boot.Config{
		Service:         "inventory",
		DatabaseURL:     "postgres://postgres@127.0.0.1:5432/orderly_inventory?sslmode=disable",
		AMQPURL:         "amqp://guest:guest@127.0.0.1:5672/",
		HTTPAddr:        "127.0.0.1:8081",
		JWTSecret:       boot.DevelopmentJWTSecret,
		RateLimitRPS:    100,
		Env:             boot.EnvDevelopment,
		LogLevel:        "info",
		ConnectTimeout:  15 * time.Second,
		ShutdownTimeout: 20 * time.Second,
		ShutdownDelay:   time.Second,
		JWTMaxTTL:       24 * time.Hour,

		DBStatementTimeout: 5 * time.Second,
		DBLockTimeout:      2 * time.Second,
		RequestTimeout:     10 * time.Second,
	}
	if got != want {
		t.Errorf("LoadConfig defaults:\n got %+v\nwant %+v", got, want)
	}
}

// TestLoadConfigSecureByDefault checks that an empty environment is
// production: the development defaults are refused, on one line that names
// each of them and says how production was chosen.
func TestLoadConfigSecureByDefault(t *testing.T) {
	t.Parallel()
	_, err := boot.LoadConfig(nil, "inventory", "127.0.0.1:8081")
	if err == nil {
		t.Fatal("LoadConfig with an empty environment = nil error, want the production rules to refuse the development defaults")
	}
	msg := err.Error()
	for _, v := range []string{"AUTH_JWT_SECRET", "AMQP_URL", "DATABASE_URL", "ORDERLY_ENV"} {
		if !strings.Contains(msg, v+":") {
			t.Errorf("error %q does not name %s", msg, v)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q spans several lines, want one", msg)
	}
}

func TestLoadConfigFromEnvironment(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("s", 40)
	got, err := boot.LoadConfig([]string{
		"DATABASE_URL=postgres://app:pw@db:5432/orders?sslmode=verify-full",
		"AMQP_URL=amqps://u:p@mq:5671/prod",
		"HTTP_ADDR=127.0.0.1:0",
		"AUTH_JWT_SECRET=" + secret,
		"AUTH_JWT_ISSUER=https://id.orderly.dev/",
		"AUTH_JWT_AUDIENCE=orderly-api",
		"AUTH_JWT_SECRET_PREVIOUS=" + strings.Repeat("p", 32),
		"AUTH_JWT_MAX_TTL=1h",
		"RATE_LIMIT_RPS=250",
		"CONSUMER_WORKERS=8",
		"ORDERLY_ENV=production",
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=prod,k8s.pod.name=order-0",
		"LOG_LEVEL=debug",
		"CONNECT_TIMEOUT=3s",
		"SHUTDOWN_TIMEOUT=45s",
		"SHUTDOWN_DELAY=5s",
		"DB_STATEMENT_TIMEOUT=10s",
		"DB_LOCK_TIMEOUT=3s",
		"REQUEST_TIMEOUT=12s",
		"ADMIN_ADDR=:9090",
		"TRUSTED_PROXIES=10.0.0.0/8, 192.0.2.10",
		"UNRELATED=1",
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	want := boot.Config{
		Service:           "order",
		DatabaseURL:       "postgres://app:pw@db:5432/orders?sslmode=verify-full",
		AMQPURL:           "amqps://u:p@mq:5671/prod",
		HTTPAddr:          "127.0.0.1:0",
		JWTSecret:         secret,
		JWTIssuer:         "https://id.orderly.dev/",
		JWTAudience:       "orderly-api",
		RateLimitRPS:      250,
		ConsumerWorkers:   8,
		Env:               boot.EnvProduction,
		OTLPEndpoint:      "http://collector:4318",
		LogLevel:          "debug",
		ConnectTimeout:    3 * time.Second,
		ShutdownTimeout:   45 * time.Second,
		ShutdownDelay:     5 * time.Second,
		JWTSecretPrevious: strings.Repeat("p", 32),
		JWTMaxTTL:         time.Hour,

		DBStatementTimeout: 10 * time.Second,
		DBLockTimeout:      3 * time.Second,
		RequestTimeout:     12 * time.Second,
		AdminAddr:          ":9090",
		TrustedProxies:     "10.0.0.0/8, 192.0.2.10",
		ResourceAttributes: "deployment.environment.name=prod,k8s.pod.name=order-0",
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
		{"DB_STATEMENT_TIMEOUT=-1s", "DB_STATEMENT_TIMEOUT"},
		{"DB_STATEMENT_TIMEOUT=500us", "DB_STATEMENT_TIMEOUT"},
		{"DB_STATEMENT_TIMEOUT=soon", "DB_STATEMENT_TIMEOUT"},
		{"DB_LOCK_TIMEOUT=-2s", "DB_LOCK_TIMEOUT"},
		{"DB_LOCK_TIMEOUT=10s", "DB_LOCK_TIMEOUT"},
		{"REQUEST_TIMEOUT=0s", "REQUEST_TIMEOUT"},
		{"REQUEST_TIMEOUT=30s", "REQUEST_TIMEOUT"}, // the write timeout: no time left to answer
		{"REQUEST_TIMEOUT=soon", "REQUEST_TIMEOUT"},
		{"AMQP_URL=http://127.0.0.1:5672/", "AMQP_URL"},
		{"DATABASE_URL=postgres://host:notaport/db", "DATABASE_URL"},
		{"HTTP_ADDR=8080", "HTTP_ADDR"},
		{"ADMIN_ADDR=9090", "ADMIN_ADDR"},
		{"ADMIN_ADDR=127.0.0.1:8080", "ADMIN_ADDR"}, // HTTP_ADDR's port
		{"TRUSTED_PROXIES=10.0.0.0/8,ingress", "TRUSTED_PROXIES"},
		{"TRUSTED_PROXIES=10.0.0.0/40", "TRUSTED_PROXIES"},
		{"LOG_LEVEL=verbose", "LOG_LEVEL"},
		{"ORDERLY_ENV=staging", "ORDERLY_ENV"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name", "OTEL_RESOURCE_ATTRIBUTES"},
		{"RATE_LIMIT_RPS=0", "RATE_LIMIT_RPS"},
		{"RATE_LIMIT_RPS=-5", "RATE_LIMIT_RPS"},
		{"RATE_LIMIT_RPS=lots", "RATE_LIMIT_RPS"},
		{"CONSUMER_WORKERS=-1", "CONSUMER_WORKERS"},
		{"CONSUMER_WORKERS=257", "CONSUMER_WORKERS"},
		{"CONSUMER_WORKERS=many", "CONSUMER_WORKERS"},
		{"AUTH_JWT_MAX_TTL=0s", "AUTH_JWT_MAX_TTL"},
		{"AUTH_JWT_MAX_TTL=-1h", "AUTH_JWT_MAX_TTL"},
		{"AUTH_JWT_MAX_TTL=a day", "AUTH_JWT_MAX_TTL"},
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
			_, err := boot.LoadConfig([]string{dev, tt.env}, "order", ":8080")
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
		cfg, err := boot.LoadConfig([]string{dev, env}, "order", ":8080")
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
	_, err := boot.LoadConfig([]string{dev, "LOG_LEVEL=loud", "HTTP_ADDR=nope"}, "order", ":8080")
	if err == nil {
		t.Fatal("LoadConfig = nil error for two invalid settings")
	}
	for _, v := range []string{"LOG_LEVEL", "HTTP_ADDR"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
}

// productionEnv is a configuration the production rules accept.
var productionEnv = []string{
	"AUTH_JWT_SECRET=" + strings.Repeat("p", 32),
	"AMQP_URL=amqps://payment:pw@mq.example:5671/",
	"DATABASE_URL=postgres://payment:pw@db.example:5432/orderly_payment?sslmode=verify-full",
	"AUTH_JWT_ISSUER=https://id.example/",
	"AUTH_JWT_AUDIENCE=orderly-api",
}

// TestLoadConfigProductionRules has one case per production refusal: each
// starts from productionEnv, changes one setting, and must be refused with
// one line naming that setting (and ORDERLY_ENV, which says why the rule
// applies) and nothing else.
func TestLoadConfigProductionRules(t *testing.T) {
	t.Parallel()
	for _, env := range [][]string{productionEnv, append([]string{"ORDERLY_ENV=production"}, productionEnv...)} {
		if _, err := boot.LoadConfig(env, "payment", ":8082"); err != nil {
			t.Fatalf("LoadConfig(%v) = %v, want a valid production configuration", env, err)
		}
	}
	const pgURL = "postgres://payment:pw@db.example:5432/orderly_payment"
	tests := []struct {
		name    string
		set     string // the one setting that differs from productionEnv
		wantVar string
	}{
		{"secret unset", "AUTH_JWT_SECRET=", "AUTH_JWT_SECRET"},
		{"development secret set explicitly", "AUTH_JWT_SECRET=" + boot.DevelopmentJWTSecret, "AUTH_JWT_SECRET"},
		{"secret of 31 bytes", "AUTH_JWT_SECRET=" + strings.Repeat("s", 31), "AUTH_JWT_SECRET"},
		{"guest user", "AMQP_URL=amqps://guest:guest@mq.example:5671/", "AMQP_URL"},
		{"no broker user (the client logs in as guest)", "AMQP_URL=amqps://mq.example:5671/", "AMQP_URL"},
		{"plain amqp", "AMQP_URL=amqp://payment:pw@mq.example:5672/", "AMQP_URL"},
		{"DATABASE_URL unset (the local default, sslmode=disable)", "DATABASE_URL=", "DATABASE_URL"},
		{"no sslmode (prefer)", "DATABASE_URL=" + pgURL, "DATABASE_URL"},
		{"sslmode=disable", "DATABASE_URL=" + pgURL + "?sslmode=disable", "DATABASE_URL"},
		{"sslmode=allow", "DATABASE_URL=" + pgURL + "?sslmode=allow", "DATABASE_URL"},
		{"sslmode=prefer", "DATABASE_URL=" + pgURL + "?sslmode=prefer", "DATABASE_URL"},
		{"sslmode=require", "DATABASE_URL=" + pgURL + "?sslmode=require", "DATABASE_URL"},
		{"sslmode=verify-ca", "DATABASE_URL=" + pgURL + "?sslmode=verify-ca", "DATABASE_URL"},
		{"key=value string without verify-full", "DATABASE_URL=host=db.example user=payment dbname=orderly_payment sslmode=require", "DATABASE_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			key, _, _ := strings.Cut(tt.set, "=")
			for _, mode := range []string{"ORDERLY_ENV unset", "ORDERLY_ENV=production"} {
				var environ []string
				if mode != "ORDERLY_ENV unset" {
					environ = append(environ, mode)
				}
				for _, kv := range productionEnv {
					if !strings.HasPrefix(kv, key+"=") {
						environ = append(environ, kv)
					}
				}
				environ = append(environ, tt.set)
				_, err := boot.LoadConfig(environ, "payment", ":8082")
				if err == nil {
					t.Fatalf("%s: LoadConfig = nil error, want one naming %s", mode, tt.wantVar)
				}
				msg := err.Error()
				if !strings.Contains(msg, tt.wantVar+":") || !strings.Contains(msg, "ORDERLY_ENV:") || strings.Contains(msg, "\n") {
					t.Errorf("%s: error %q, want one line naming %s and ORDERLY_ENV", mode, msg, tt.wantVar)
				}
				for _, other := range []string{"AUTH_JWT_SECRET", "AMQP_URL", "DATABASE_URL"} {
					if other != tt.wantVar && strings.Contains(msg, other+":") {
						t.Errorf("%s: error %q also names %s, which is valid", mode, msg, other)
					}
				}
			}
			// Development lifts the rule: that is what it is for.
			if _, err := boot.LoadConfig([]string{dev, tt.set}, "payment", ":8082"); err != nil {
				t.Errorf("ORDERLY_ENV=development with %s: %v", tt.set, err)
			}
		})
	}
}

// TestLoadConfigProductionJWTRules checks the bearer-token rules of
// production beyond the secret: an issuer and an audience to check, and a
// previous secret as strong as the current one.
func TestLoadConfigProductionJWTRules(t *testing.T) {
	t.Parallel()
	strong := "AUTH_JWT_SECRET=" + strings.Repeat("s", 40)
	tests := []struct {
		name    string
		environ []string
		wantVar string // "" for no error
	}{
		{"issuer and audience", []string{"AUTH_JWT_ISSUER=orderly-id", "AUTH_JWT_AUDIENCE=orderly-api"}, ""},
		{"no issuer", []string{"AUTH_JWT_AUDIENCE=orderly-api"}, "AUTH_JWT_ISSUER"},
		{"no audience", []string{"AUTH_JWT_ISSUER=orderly-id"}, "AUTH_JWT_AUDIENCE"},
		{"short previous secret", []string{"AUTH_JWT_ISSUER=orderly-id", "AUTH_JWT_AUDIENCE=orderly-api", "AUTH_JWT_SECRET_PREVIOUS=short"}, "AUTH_JWT_SECRET_PREVIOUS"},
		{"development secret as the previous one", []string{"AUTH_JWT_ISSUER=orderly-id", "AUTH_JWT_AUDIENCE=orderly-api", "AUTH_JWT_SECRET_PREVIOUS=" + boot.DevelopmentJWTSecret}, "AUTH_JWT_SECRET_PREVIOUS"},
		{"strong previous secret", []string{"AUTH_JWT_ISSUER=orderly-id", "AUTH_JWT_AUDIENCE=orderly-api", "AUTH_JWT_SECRET_PREVIOUS=" + strings.Repeat("p", 32)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			environ := append([]string{"ORDERLY_ENV=production", strong,
				"AMQP_URL=amqps://inventory:pw@mq.example:5671/",
				"DATABASE_URL=postgres://inventory:pw@db.example:5432/orderly_inventory?sslmode=verify-full"}, tt.environ...)
			_, err := boot.LoadConfig(environ, "inventory", ":8081")
			switch {
			case tt.wantVar == "" && err != nil:
				t.Fatalf("LoadConfig(%v): %v", environ, err)
			case tt.wantVar != "" && (err == nil || !strings.Contains(err.Error(), tt.wantVar)):
				t.Fatalf("LoadConfig(%v) error = %v, want one naming %s", environ, err, tt.wantVar)
			}
		})
	}
	// Development needs neither, and takes any previous secret.
	if _, err := boot.LoadConfig([]string{"ORDERLY_ENV=development", "AUTH_JWT_SECRET_PREVIOUS=short"}, "inventory", ":8081"); err != nil {
		t.Errorf("development without issuer and audience: %v", err)
	}
}

func TestConfigLogMasksSecrets(t *testing.T) {
	t.Parallel()
	secret := "a-very-secret-production-signing-key-0123456789"
	previous := "the-previous-production-signing-key-0123456789"
	cfg, err := boot.LoadConfig([]string{
		dev,
		"DATABASE_URL=postgres://app:dbpass123@db:5432/orders",
		"AMQP_URL=amqp://user:mqpass456@mq:5672/",
		"AUTH_JWT_SECRET=" + secret,
		"AUTH_JWT_SECRET_PREVIOUS=" + previous,
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("starting", "config", cfg)
	for _, out := range []string{buf.String(), cfg.String(), strings.ReplaceAll(buf.String(), `\u0026`, "&")} {
		for _, leak := range []string{"dbpass123", "mqpass456", secret, previous} {
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
		"database_url":             "postgres://app:xxxxx@db:5432/orders",
		"amqp_url":                 "amqp://user:xxxxx@mq:5672/",
		"auth_jwt_secret":          "[set]",
		"auth_jwt_secret_previous": "[set]",
		"auth_jwt_max_ttl":         "24h0m0s",
		"http_addr":                ":8080",
		"auth_jwt_issuer":          "",
		"admin_addr":               "",
		"trusted_proxies":          "",
	} {
		if got := line.Config[key]; got != want {
			t.Errorf("logged %s = %v, want %q", key, got, want)
		}
	}
}

func TestConfigVerifier(t *testing.T) {
	t.Parallel()
	secret, previous := strings.Repeat("k", 40), strings.Repeat("p", 40)
	cfg, err := boot.LoadConfig([]string{
		dev,
		"AUTH_JWT_SECRET=" + secret,
		"AUTH_JWT_SECRET_PREVIOUS=" + previous,
		"AUTH_JWT_ISSUER=orderly-id",
		"AUTH_JWT_AUDIENCE=orderly-api",
		"AUTH_JWT_MAX_TTL=2h",
	}, "order", ":8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	exp := time.Now().Add(time.Hour)
	tests := []struct {
		name             string
		secret           string
		issuer, audience string
		exp              time.Time
		wantOK           bool
	}{
		{"configured secret, issuer and audience", secret, "orderly-id", "orderly-api", exp, true},
		{"previous secret", previous, "orderly-id", "orderly-api", exp, true},
		{"other issuer", secret, "someone-else", "orderly-api", exp, false},
		{"other audience", secret, "orderly-id", "other-api", exp, false},
		{"development secret", boot.DevelopmentJWTSecret, "orderly-id", "orderly-api", exp, false},
		{"exp within AUTH_JWT_MAX_TTL", secret, "orderly-id", "orderly-api", time.Now().Add(2 * time.Hour), true},
		{"exp beyond AUTH_JWT_MAX_TTL", secret, "orderly-id", "orderly-api", time.Now().Add(3 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tok, err := authn.Issue([]byte(tt.secret), authn.Claims{Subject: "c-1", ExpiresAt: tt.exp}, tt.issuer, tt.audience)
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

func TestLoadTokenConfig(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("k", 40)
	file := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Settings a token does not depend on are not checked: a tool run
	// next to a production-like environment still reads its secret.
	cfg, err := boot.LoadTokenConfig([]string{
		"AUTH_JWT_SECRET_FILE=" + file, "AUTH_JWT_ISSUER=orderly-id", "AUTH_JWT_AUDIENCE=orderly-api",
		"AMQP_URL=amqp://guest:guest@127.0.0.1:5672/",
	})
	if err != nil {
		t.Fatalf("LoadTokenConfig: %v", err)
	}
	if cfg.Env != boot.EnvProduction || cfg.JWTMaxTTL != authn.DefaultMaxTTL {
		t.Errorf("env %q, max TTL %s; want the services' defaults, production and %s", cfg.Env, cfg.JWTMaxTTL, authn.DefaultMaxTTL)
	}
	tok, err := cfg.Issue(authn.Claims{Subject: "c-1", Role: authn.RoleAdmin, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatalf("Issue: %v", err)
	}
	claims, err := authn.NewVerifier([]byte(secret), "orderly-id", "orderly-api").Verify(tok)
	if err != nil || claims.Subject != "c-1" || !claims.IsAdmin() {
		t.Errorf("Verify = %+v, %v; want c-1, admin", claims, err)
	}

	dev, err := boot.LoadTokenConfig(nil)
	if err != nil || dev.JWTSecret != boot.DevelopmentJWTSecret {
		t.Errorf("LoadTokenConfig(nil) secret %q, %v; want the development default", dev.JWTSecret, err)
	}
	for _, bad := range []string{"AUTH_JWT_MAX_TTL=0s", "AUTH_JWT_MAX_TTL=long", "AUTH_JWT_SECRET_FILE=/nonexistent/secret"} {
		if _, err := boot.LoadTokenConfig([]string{bad}); err == nil || !strings.Contains(err.Error(), strings.Split(bad, "=")[0]) {
			t.Errorf("LoadTokenConfig(%q) = %v, want an error naming the variable", bad, err)
		}
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	got := boot.OneLine(errors.Join(errors.New("first\nsecond"), errors.New("  third ")))
	if want := "first; second; third"; got != want {
		t.Errorf("OneLine = %q, want %q", got, want)
	}
}
