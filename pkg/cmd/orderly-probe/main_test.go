package main

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/orderly/orderly/pkg/cmd/internal/cli"
)

func TestProbe(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := probe(t.Context(), srv.Client(), srv.URL+"/readyz"); err != nil {
		t.Errorf("a 200 answer: %v, want healthy", err)
	}
	if err := probe(t.Context(), srv.Client(), srv.URL+"/draining"); err == nil {
		t.Errorf("a 503 answer reads as healthy")
	}
	srv.Close()
	if err := probe(t.Context(), srv.Client(), srv.URL+"/readyz"); err == nil {
		t.Errorf("nobody listening reads as healthy")
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"a", "b"}, {"127.0.0.1:8080/readyz"}, {"ftp://x/"}} {
		if err := run(args, ""); !errors.As(err, new(cli.UsageError)) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

// TestHTTPAddr: without a URL, the probe asks /readyz on HTTP_ADDR's port
// at 127.0.0.1, whichever interface HTTP_ADDR names.
func TestHTTPAddr(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{":" + port, "0.0.0.0:" + port, "127.0.0.1:" + port} {
		if err := run(nil, addr); err != nil {
			t.Errorf("HTTP_ADDR=%s: %v, want healthy", addr, err)
		}
	}
}
