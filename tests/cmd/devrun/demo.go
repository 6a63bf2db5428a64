package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/boot"
	democatalog "github.com/orderly/orderly/pkg/demo"
)

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
	inventory := "http://127.0.0.1:" + portOf("inventory")
	created, err := democatalog.Seed(ctx, &http.Client{Timeout: 5 * time.Second}, inventory, d.adminToken)
	if err != nil {
		return d, err
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
	skus := democatalog.SKUs()
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
	for _, p := range democatalog.Catalog {
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
