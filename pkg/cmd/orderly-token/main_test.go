package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/cmd/internal/cli"
)

// devEnv is a development environment with a secret, issuer and audience
// of its own, the secret read from a file as a mounted secret would be.
func devEnv(tb testing.TB) (environ []string, verifier *authn.Verifier) {
	tb.Helper()
	const secret = "a-test-secret-that-is-long-enough-for-hs256"
	file := filepath.Join(tb.TempDir(), "jwt-secret")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	environ = []string{
		"ORDERLY_ENV=development",
		"AUTH_JWT_SECRET_FILE=" + file,
		"AUTH_JWT_ISSUER=https://id.example.test",
		"AUTH_JWT_AUDIENCE=orderly",
	}
	return environ, authn.NewVerifier([]byte(secret), "https://id.example.test", "orderly")
}

func runCLI(args, environ []string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(args, environ, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestFlagsAreChecked(t *testing.T) {
	t.Parallel()
	environ, _ := devEnv(t)
	for name, tc := range map[string]struct {
		args    []string
		environ []string
		want    string
	}{
		"no subject":       {args: nil, want: "--sub is required"},
		"blank subject":    {args: []string{"--sub", "  "}, want: "--sub is required"},
		"unknown flag":     {args: []string{"--sub", "a", "--role", "admin"}, want: "-role"},
		"extra argument":   {args: []string{"--sub", "a", "admin"}, want: `unexpected argument "admin"`},
		"zero ttl":         {args: []string{"--sub", "a", "--ttl", "0s"}, want: "--ttl must be positive"},
		"bad ttl":          {args: []string{"--sub", "a", "--ttl", "an hour"}, want: "-ttl"},
		"relative url":     {args: []string{"--sub", "a", "--url", "/v1/orders"}, want: "not an http:// or https:// URL"},
		"other scheme url": {args: []string{"--sub", "a", "--url", "ftp://127.0.0.1/"}, want: "not an http:// or https:// URL"},
		"ttl over the maximum": {
			args:    []string{"--sub", "a", "--ttl", "2h"},
			environ: append(environ[:len(environ):len(environ)], "AUTH_JWT_MAX_TTL=1h"),
			want:    "longer than AUTH_JWT_MAX_TTL (1h0m0s)",
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := tc.environ
			if env == nil {
				env = environ
			}
			out, _, err := runCLI(tc.args, env)
			var uerr cli.UsageError
			if !errors.As(err, &uerr) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("run(%q) = %v, want a usage error containing %q", tc.args, err, tc.want)
			}
			if out != "" {
				t.Errorf("run(%q) printed %q to stdout, want nothing", tc.args, out)
			}
		})
	}
}

func TestRefusesOutsideDevelopment(t *testing.T) {
	t.Parallel()
	dev, _ := devEnv(t)
	withoutEnv := dev[1:] // ORDERLY_ENV unset: production, the default
	for name, environ := range map[string][]string{
		"unset":      withoutEnv,
		"production": append(withoutEnv[:len(withoutEnv):len(withoutEnv)], "ORDERLY_ENV=production"),
		"unknown":    append(withoutEnv[:len(withoutEnv):len(withoutEnv)], "ORDERLY_ENV=dev"),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, _, err := runCLI([]string{"--sub", "alice"}, environ)
			if err == nil || !strings.Contains(err.Error(), "ORDERLY_ENV") || !strings.Contains(err.Error(), "ORDERLY_ENV=development") {
				t.Fatalf("run = %v, want a refusal naming ORDERLY_ENV=development", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("refusal %q spans lines, want one", err)
			}
			var uerr cli.UsageError
			if errors.As(err, &uerr) {
				t.Errorf("refusal is a usage error (exit 2), want a failure (exit 1)")
			}
			if out != "" {
				t.Errorf("stdout %q, want no token", out)
			}
		})
	}
}

func TestMintsWhatTheServicesAccept(t *testing.T) {
	t.Parallel()
	environ, verifier := devEnv(t)
	for name, tc := range map[string]struct {
		args     []string
		wantRole string
		wantTTL  time.Duration
	}{
		"customer": {args: []string{"--sub", "alice"}, wantTTL: defaultTTL},
		"admin":    {args: []string{"-sub", "ops", "-admin", "-ttl", "20m"}, wantRole: authn.RoleAdmin, wantTTL: 20 * time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			before := time.Now()
			out, errOut, err := runCLI(tc.args, environ)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			token := strings.TrimSuffix(out, "\n")
			claims, err := verifier.Verify(token)
			if err != nil {
				t.Fatalf("the minted token is refused: %v", err)
			}
			if claims.Subject != tc.args[1] || claims.Role != tc.wantRole {
				t.Errorf("claims sub %q role %q, want %q and %q", claims.Subject, claims.Role, tc.args[1], tc.wantRole)
			}
			// exp is in whole seconds.
			if lo, hi := before.Add(tc.wantTTL-time.Second), time.Now().Add(tc.wantTTL); claims.ExpiresAt.Before(lo) || claims.ExpiresAt.After(hi) {
				t.Errorf("expires at %s, want between %s and %s", claims.ExpiresAt, lo, hi)
			}
			wantCurl := "curl -sS -H 'Authorization: Bearer " + token + "' '" + defaultURL + "'\n"
			if !strings.HasSuffix(errOut, wantCurl) {
				t.Errorf("stderr %q, want it to end in %q", errOut, wantCurl)
			}
		})
	}
}

func TestDefaultTTLStaysUnderTheMaximum(t *testing.T) {
	t.Parallel()
	environ, _ := devEnv(t)
	out, _, err := runCLI([]string{"--sub", "alice"}, append(environ, "AUTH_JWT_MAX_TTL=10m"))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	claims, err := authn.NewVerifier([]byte("a-test-secret-that-is-long-enough-for-hs256"), "", "",
		authn.WithMaxTTL(10*time.Minute)).Verify(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("a 10m maximum refuses the token minted without --ttl: %v", err)
	}
	if left := time.Until(claims.ExpiresAt); left > 10*time.Minute {
		t.Errorf("token lives %s, more than AUTH_JWT_MAX_TTL", left)
	}
}

func TestDevelopmentDefaults(t *testing.T) {
	t.Parallel()
	out, _, err := runCLI([]string{"--sub", "alice"}, []string{"ORDERLY_ENV=development"})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	// What `make run` starts: the development secret, no issuer or audience.
	cfg, err := boot.LoadConfig([]string{"ORDERLY_ENV=development"}, "order", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.Verifier().Verify(strings.TrimSpace(out)); err != nil {
		t.Errorf("a service with the development defaults refuses the token: %v", err)
	}
}

// TestBinary builds the command and runs it as a user would: exit
// statuses, and a token on stdout that the services' verifier accepts.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the command")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "orderly-token")
	if b, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	environ, verifier := devEnv(t)
	runBin := func(environ []string, args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = environ
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("run %s: %v", bin, err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}

	out, errOut, code := runBin(environ, "--sub", "bob", "--admin", "--ttl", "5m")
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	claims, err := verifier.Verify(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("the token printed is refused: %v", err)
	}
	if claims.Subject != "bob" || !claims.IsAdmin() || time.Until(claims.ExpiresAt) > 5*time.Minute {
		t.Errorf("claims %+v, want bob, admin, expiring within 5m", claims)
	}

	_, errOut, code = runBin(environ[1:], "--sub", "bob")
	if code != 1 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "ORDERLY_ENV") {
		t.Errorf("in production: exit %d, stderr %q; want 1 and one line naming ORDERLY_ENV", code, errOut)
	}
	if _, _, code = runBin(environ); code != 2 {
		t.Errorf("without --sub: exit %d, want 2", code)
	}
}
