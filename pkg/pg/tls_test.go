package pg_test

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
	"github.com/orderly/orderly/pkg/pg/pgtest"
	"github.com/orderly/orderly/pkg/tlsconfig/tlstest"
)

// TestConnectOverTLS talks to the test server (Debian's has ssl=on, with
// its snakeoil certificate) through the URL parameters production uses:
// sslmode=require encrypts; sslmode=verify-full with sslrootcert accepts the
// server's certificate under the name it was issued for, and refuses it
// against a CA that did not sign it, or when the CA file is missing.
func TestConnectOverTLS(t *testing.T) {
	t.Parallel()
	_, dbURL := pgtest.NewDB(t)
	with := func(host string, params ...string) string {
		u, err := url.Parse(dbURL)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		for i := 0; i+1 < len(params); i += 2 {
			q.Set(params[i], params[i+1])
		}
		if host != "" {
			u.Host = net.JoinHostPort(host, u.Port())
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	pool, err := pg.Connect(ctx, with("", "sslmode", "require"))
	if err != nil {
		t.Fatalf("sslmode=require: %v", err)
	}
	defer pool.Close()
	var ssl bool
	var version string
	if err := pool.QueryRow(ctx, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl, &version); err != nil || !ssl {
		t.Fatalf("pg_stat_ssl = %v %q, %v; want an encrypted connection", ssl, version, err)
	}

	// The server's own certificate (self-signed snakeoil, or a CA-issued
	// one) as the trusted root, at the name it was issued for, resolved to
	// the test server's address.
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tc, ok := conn.Conn().PgConn().Conn().(*tls.Conn)
	if !ok {
		t.Fatalf("connection is a %T, want a *tls.Conn", conn.Conn().PgConn().Conn())
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	conn.Release()
	name := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		name = leaf.DNSNames[0]
	}
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "server.pem")
	if err := os.WriteFile(rootFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	serverIP := pool.Config().ConnConfig.Host
	resolveToServer := func(c *pgxpool.Config) {
		c.ConnConfig.LookupFunc = func(context.Context, string) ([]string, error) { return []string{serverIP}, nil }
	}
	verified, err := pg.Connect(ctx, with(name, "sslmode", "verify-full", "sslrootcert", rootFile), resolveToServer)
	if err != nil {
		t.Fatalf("sslmode=verify-full as %s with the server's certificate as root: %v", name, err)
	}
	verified.Close()

	_, err = pg.Connect(ctx, with(name, "sslmode", "verify-full", "sslrootcert", tlstest.NewCA(t).WriteCA(t, dir)), resolveToServer)
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("sslmode=verify-full with another CA = %v, want an unknown-authority error", err)
	}
	_, err = pg.Connect(ctx, with("", "sslmode", "verify-full", "sslrootcert", filepath.Join(dir, "missing.pem")))
	if err == nil || !strings.Contains(err.Error(), "unable to read CA file") {
		t.Errorf("sslmode=verify-full with a missing CA file = %v, want it named", err)
	}
}
