package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
)

// product is one product of the demo catalog.
type product struct {
	SKU        string `json:"-"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Stock      int    `json:"stock"`
}

// catalog is what `make run` puts on sale.
var catalog = []product{
	{"DEMO-MUG", "Orderly mug", 1250, "EUR", 100},
	{"DEMO-TEE", "Orderly T-shirt", 2400, "EUR", 50},
	{"DEMO-STICKERS", "Sticker pack", 399, "EUR", 500},
	{"DEMO-HOODIE", "Orderly hoodie", 5900, "EUR", 20},
	{"DEMO-LIMITED", "Signed poster (limited)", 9900, "EUR", 3},
}

// demoCustomer is the subject of the demo customer's token.
const demoCustomer = "demo-customer"

// tokenLifetime is how long the printed tokens stay valid.
const tokenLifetime = 24 * time.Hour

// demo is what the banner shows after seeding.
type demo struct {
	customerToken, adminToken string
}

// seedDemo mints the demo tokens with the services' own secret, creates the
// demo products that inventory does not have yet (through its admin API, so
// that ProductUpserted reaches the order service), and waits until the order
// service's catalog replica, in orderDBURL, knows them all. It returns an
// error when a call fails or the catalog does not catch up within 30 s.
func seedDemo(ctx context.Context, orderDBURL string) (demo, error) {
	var d demo
	// Read as the services and orderly-token read them, AUTH_JWT_SECRET_FILE
	// included, so that the tokens are ones the services accept.
	tokens, err := boot.LoadTokenConfig(os.Environ())
	if err != nil {
		return d, fmt.Errorf("demo tokens: %w", err)
	}
	exp := time.Now().Add(tokenLifetime)
	if d.customerToken, err = tokens.Issue(authn.Claims{Subject: demoCustomer, ExpiresAt: exp}); err != nil {
		return d, fmt.Errorf("demo token: %w", err)
	}
	if d.adminToken, err = tokens.Issue(authn.Claims{Subject: "demo-admin", Role: authn.RoleAdmin, ExpiresAt: exp}); err != nil {
		return d, fmt.Errorf("demo admin token: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := http.Client{Timeout: 5 * time.Second}
	inventory := "http://127.0.0.1:" + portOf("inventory")
	var created []string
	for _, p := range catalog {
		u := inventory + "/v1/products/" + url.PathEscape(p.SKU)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := client.Do(req)
		if err != nil {
			return d, fmt.Errorf("demo catalog: %w", err)
		}
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			continue // there already; keep the developer's changes
		case http.StatusNotFound:
		default:
			return d, fmt.Errorf("demo catalog: GET %s: %s", u, resp.Status)
		}
		body, _ := json.Marshal(p)
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+d.adminToken)
		resp, err = client.Do(req)
		if err != nil {
			return d, fmt.Errorf("demo catalog: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			return d, fmt.Errorf("demo catalog: PUT %s: %s", u, resp.Status)
		}
		created = append(created, p.SKU)
	}
	if len(created) > 0 {
		fmt.Printf("devrun: seeded the demo catalog: %s\n", strings.Join(created, ", "))
	}
	return d, waitCatalog(ctx, orderDBURL)
}

// waitCatalog polls the order service's catalog replica until it holds
// every demo product, so that the printed order command works at once.
func waitCatalog(ctx context.Context, orderDBURL string) error {
	conn, err := pgx.Connect(ctx, orderDBURL)
	if err != nil {
		return fmt.Errorf("demo catalog: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	skus := make([]string, len(catalog))
	for i, p := range catalog {
		skus[i] = p.SKU
	}
	for {
		var n int
		err := conn.QueryRow(ctx, "SELECT count(*) FROM catalog WHERE sku = ANY($1)", skus).Scan(&n)
		if err == nil && n == len(skus) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("demo catalog: the order service's catalog is not readable: %w", err)
			}
			return fmt.Errorf("demo catalog: the order service has %d of %d demo products: %w", n, len(skus), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// portOf returns the port of the named service.
func portOf(name string) string {
	for _, s := range services {
		if s.name == name {
			return s.port
		}
	}
	return ""
}

// banner is what devrun prints once every service is ready and the demo
// is seeded: the URLs, the catalog, the tokens and commands to paste.
func banner(d demo) string {
	var b strings.Builder
	b.WriteString("\nOrderly is running. Every service is ready:\n\n")
	for _, s := range services {
		base := "http://127.0.0.1:" + s.port
		fmt.Fprintf(&b, "  %-14s %-24s metrics %s/metrics\n", s.what, base, base)
	}
	api := "http://127.0.0.1:" + portOf("order")
	fmt.Fprintf(&b, "  %-14s http://127.0.0.1:%s/track/ORDER_ID?token=TRACKING_TOKEN\n", "tracking page", portOf("notification"))
	fmt.Fprintf(&b, "  %-14s http://127.0.0.1:%s/dashboard (sign in with $ORDERLY_ADMIN_TOKEN)\n", "ops dashboard", portOf("notification"))

	fmt.Fprintf(&b, "\nDemo catalog (GET http://127.0.0.1:%s/v1/products):\n", portOf("inventory"))
	for _, p := range catalog {
		fmt.Fprintf(&b, "  %-14s %-26s %8.2f %s\n", p.SKU, p.Name, float64(p.PriceCents)/100, p.Currency)
	}
	fmt.Fprintf(&b, "\nTokens (valid %.0f hours): customer %q, and an admin for ship, deliver,\nPUT /v1/products and GET /v1/payments:\n\n", tokenLifetime.Hours(), demoCustomer)
	fmt.Fprintf(&b, "  export ORDERLY_TOKEN=%s\n  export ORDERLY_ADMIN_TOKEN=%s\n", d.customerToken, d.adminToken)
	b.WriteString("\nMint others with ./bin/orderly-token (ORDERLY_ENV=development):\n\n")
	b.WriteString("  export ORDERLY_TOKEN=$(ORDERLY_ENV=development ./bin/orderly-token --sub alice)\n")

	b.WriteString("\nPlace a demo order (pm_card_ok authorizes; try pm_card_declined, pm_card_flaky):\n\n")
	fmt.Fprintf(&b, "  curl -sS -X POST %s/v1/orders \\\n"+
		"    -H 'Content-Type: application/json' \\\n"+
		"    -H 'Authorization: Bearer %s' \\\n"+
		"    -H \"Idempotency-Key: demo-$(date +%%s)-$RANDOM\" \\\n"+
		"    -d '{\"items\":[{\"sku\":\"DEMO-MUG\",\"quantity\":2},{\"sku\":\"DEMO-STICKERS\",\"quantity\":1}],\"payment_method\":\"pm_card_ok\"}'\n",
		api, d.customerToken)
	b.WriteString("\nFetch it with its history (ORDER_ID is the \"id\" of the answer), or list yours:\n\n")
	fmt.Fprintf(&b, "  curl -sS -H 'Authorization: Bearer %s' %s/v1/orders/ORDER_ID\n", d.customerToken, api)
	fmt.Fprintf(&b, "  curl -sS -H 'Authorization: Bearer %s' %s/v1/orders\n", d.customerToken, api)
	b.WriteString("\nPress Ctrl-C to stop every service.\n\n")
	return b.String()
}
