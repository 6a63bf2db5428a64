// Package demo is the demo catalog a development stack puts on sale: `make
// run` (devrun) and docker compose (orderly-seed) seed the same products.
package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Product is one product of the demo catalog, as inventory's admin API
// takes it (PUT /v1/products/{sku}).
type Product struct {
	SKU        string `json:"-"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Stock      int    `json:"stock"`
}

// Catalog is what a development stack puts on sale.
var Catalog = []Product{
	{"DEMO-MUG", "Orderly mug", 1250, "EUR", 100},
	{"DEMO-TEE", "Orderly T-shirt", 2400, "EUR", 50},
	{"DEMO-STICKERS", "Sticker pack", 399, "EUR", 500},
	{"DEMO-HOODIE", "Orderly hoodie", 5900, "EUR", 20},
	{"DEMO-LIMITED", "Signed poster (limited)", 9900, "EUR", 3},
}

// SKUs returns the SKUs of Catalog, in order.
func SKUs() []string {
	skus := make([]string, len(Catalog))
	for i, p := range Catalog {
		skus[i] = p.SKU
	}
	return skus
}

// Seed creates the products of Catalog that the inventory service at
// inventoryURL (scheme and host) does not have yet, through its admin API
// with adminToken, so that ProductUpserted reaches the order service. A
// product already there is left as it is (a developer's changes survive a
// restart). It returns the SKUs it created.
func Seed(ctx context.Context, client *http.Client, inventoryURL, adminToken string) ([]string, error) {
	var created []string
	for _, p := range Catalog {
		u := strings.TrimSuffix(inventoryURL, "/") + "/v1/products/" + url.PathEscape(p.SKU)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return created, fmt.Errorf("demo catalog: %w", err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return created, fmt.Errorf("demo catalog: %w", err)
		}
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			continue
		case http.StatusNotFound:
		default:
			return created, fmt.Errorf("demo catalog: GET %s: %s", u, resp.Status)
		}
		body, err := json.Marshal(p)
		if err != nil {
			return created, err
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(body))
		if err != nil {
			return created, fmt.Errorf("demo catalog: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err = client.Do(req)
		if err != nil {
			return created, fmt.Errorf("demo catalog: %w", err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
			return created, fmt.Errorf("demo catalog: PUT %s: %s", u, resp.Status)
		}
		created = append(created, p.SKU)
	}
	return created, nil
}
