package boot_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orderly/orderly/pkg/boot"
)

func TestSecretsFromFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	secret := "a-production-secret-from-a-file-0123456789"
	cfg, err := boot.LoadConfig([]string{
		"AUTH_JWT_SECRET_FILE=" + write("jwt", secret+"\n"),
		"AUTH_JWT_ISSUER=https://id.example.test/",
		"AUTH_JWT_AUDIENCE=orderly",
		"AMQP_URL_FILE=" + write("amqp", "amqps://order:pw@broker.example.test:5671/\r\n"),
		"DATABASE_URL_FILE=" + write("db", "postgres://order:pw@db.example.test/orderly_order?sslmode=verify-full"),
	}, "order", "127.0.0.1:8080")
	if err != nil {
		t.Fatalf("LoadConfig: %v", err)
	}
	if cfg.JWTSecret != secret {
		t.Errorf("JWTSecret = %q, want the file's content without its newline", cfg.JWTSecret)
	}
	if cfg.AMQPURL != "amqps://order:pw@broker.example.test:5671/" {
		t.Errorf("AMQPURL = %q", cfg.AMQPURL)
	}
	if !strings.HasPrefix(cfg.DatabaseURL, "postgres://order:pw@db.example.test/") {
		t.Errorf("DatabaseURL = %q", cfg.DatabaseURL)
	}

	// A file's secret is checked like one from the environment.
	if _, err := boot.LoadConfig([]string{"AUTH_JWT_SECRET_FILE=" + write("short", "short\n")}, "order", ""); err == nil ||
		!strings.Contains(err.Error(), "AUTH_JWT_SECRET: must be at least 32 bytes") {
		t.Errorf("a short secret from a file: err = %v", err)
	}

	refusals := []struct {
		name    string
		environ []string
		want    string
	}{
		{"both set", []string{dev, "AUTH_JWT_SECRET=x", "AUTH_JWT_SECRET_FILE=" + write("both", "y")}, "AUTH_JWT_SECRET_FILE: set AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE, not both"},
		{"missing file", []string{dev, "TRACKING_SECRET_FILE=" + filepath.Join(dir, "absent")}, "TRACKING_SECRET_FILE: open " + filepath.Join(dir, "absent")},
		{"empty file", []string{dev, "AMQP_URL_FILE=" + write("empty", "\n")}, "AMQP_URL_FILE: " + filepath.Join(dir, "empty") + " is empty"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := boot.LoadConfig(tt.environ, "order", "")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to name %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("the error is not one line: %q", err)
			}
		})
	}
}
