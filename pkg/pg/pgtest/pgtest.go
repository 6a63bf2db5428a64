// Package pgtest gives a test its own freshly migrated PostgreSQL database on
// the real server and drops it when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/orderly/orderly/pkg/pg"
)

// AdminURL is the server tests create their databases on. It comes from
// ORDERLY_TEST_DATABASE_URL, defaulting to the local development server.
func AdminURL() string {
	if u := os.Getenv("ORDERLY_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// NewDB creates an empty database with a unique name, applies the migration
// sets and returns a pool on it and its URL. The database is dropped (with
// any connection still open on it) when tb ends. A server that cannot be
// reached fails the test: integration tests never skip silently.
func NewDB(tb testing.TB, sets ...pg.Migration) (*pgxpool.Pool, string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		tb.Fatalf("pgtest: connect to %s: %v (is PostgreSQL running?)", AdminURL(), err)
	}
	defer admin.Close(ctx)

	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "orderly_test_" + hex.EncodeToString(b)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() { Drop(tb, name) })

	u, err := url.Parse(AdminURL())
	if err != nil {
		tb.Fatalf("pgtest: parse admin url: %v", err)
	}
	u.Path = "/" + name
	dbURL := u.String()

	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	if err := pg.Migrate(ctx, pool, sets...); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return pool, dbURL
}

// Drop removes the database, closing connections still open on it.
func Drop(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		tb.Errorf("pgtest: drop %s: %v", name, err)
		return
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
		tb.Errorf("pgtest: drop %s: %v", name, err)
	}
}
