package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/pkg/demo"
)

// inventory is a fake of inventory's product API that checks the admin
// token as the service does.
type inventory struct {
	mu       sync.Mutex
	products map[string]demo.Product
	verifier *authn.Verifier
}

func (f *inventory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sku, ok := strings.CutPrefix(r.URL.Path, "/v1/products/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		if _, ok := f.products[sku]; !ok {
			http.NotFound(w, r)
		}
	case http.MethodPut:
		c, err := f.verifier.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil || c.Role != authn.RoleAdmin {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var p demo.Product
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.products[sku] = p
		w.WriteHeader(http.StatusCreated)
	}
}

func TestSeed(t *testing.T) {
	t.Parallel()
	environ := []string{"ORDERLY_ENV=development"}
	cfg, err := boot.LoadTokenConfig(environ)
	if err != nil {
		t.Fatal(err)
	}
	inv := &inventory{products: map[string]demo.Product{demo.Catalog[0].SKU: {Name: "kept", Stock: 1}}, verifier: cfg.Verifier()}
	srv := httptest.NewServer(inv)
	defer srv.Close()

	var out bytes.Buffer
	if err := run([]string{"--url", srv.URL}, environ, &out); err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(inv.products) != len(demo.Catalog) {
		t.Errorf("inventory has %d products, want the %d of the catalog", len(inv.products), len(demo.Catalog))
	}
	if got := inv.products[demo.Catalog[0].SKU].Name; got != "kept" {
		t.Errorf("an existing product became %q; it must be left alone", got)
	}
	if !strings.Contains(out.String(), "4 of 5") {
		t.Errorf("output %q does not say 4 of 5 created", out.String())
	}

	// Again: nothing to create.
	if err := run(nil, append(environ, "INVENTORY_URL="+srv.URL), io.Discard); err != nil {
		t.Errorf("second run: %v", err)
	}
}

func TestRefusesProduction(t *testing.T) {
	t.Parallel()
	err := run([]string{"--url", "http://127.0.0.1:1"}, []string{"ORDERLY_ENV=production"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Errorf("production: %v, want a refusal", err)
	}
}
