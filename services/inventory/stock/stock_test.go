package stock_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/orderly/orderly/services/inventory/stock"
)

func TestValidateSKU(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sku  string
		want bool
	}{
		{"A", true},
		{"SKU-1", true},
		{"9-LIVES", true},
		{strings.Repeat("A", 64), true},
		{strings.Repeat("A", 65), false},
		{"", false},
		{"-A", false},
		{"sku-1", false},
		{"A B", false},
		{"A_B", false},
		{"Ä", false},
	}
	for _, tt := range tests {
		err := stock.ValidateSKU(tt.sku)
		if got := err == nil; got != tt.want {
			t.Errorf("ValidateSKU(%q) = %v, want valid %v", tt.sku, err, tt.want)
		}
		if err != nil && !errors.Is(err, stock.ErrInvalid) {
			t.Errorf("ValidateSKU(%q) error %v does not match ErrInvalid", tt.sku, err)
		}
	}
}

func TestProductValidate(t *testing.T) {
	t.Parallel()
	valid := stock.Product{SKU: "MUG-1", Name: "Mug", PriceCents: 1299, Currency: "EUR", Stock: 10}
	tests := []struct {
		name      string
		edit      func(*stock.Product)
		wantField string // "" for valid
	}{
		{"valid", func(*stock.Product) {}, ""},
		{"free and empty", func(p *stock.Product) { p.PriceCents, p.Stock = 0, 0 }, ""},
		{"maximums", func(p *stock.Product) {
			p.Name, p.PriceCents, p.Stock = strings.Repeat("é", 200), stock.MaxPriceCents, stock.MaxStock
		}, ""},
		{"bad sku", func(p *stock.Product) { p.SKU = "mug" }, "sku"},
		{"empty name", func(p *stock.Product) { p.Name = "" }, "name"},
		{"blank name", func(p *stock.Product) { p.Name = "  " }, "name"},
		{"long name", func(p *stock.Product) { p.Name = strings.Repeat("x", 201) }, "name"},
		{"negative price", func(p *stock.Product) { p.PriceCents = -1 }, "price_cents"},
		{"huge price", func(p *stock.Product) { p.PriceCents = stock.MaxPriceCents + 1 }, "price_cents"},
		{"lower-case currency", func(p *stock.Product) { p.Currency = "eur" }, "currency"},
		{"short currency", func(p *stock.Product) { p.Currency = "EU" }, "currency"},
		{"negative stock", func(p *stock.Product) { p.Stock = -1 }, "stock"},
		{"huge stock", func(p *stock.Product) { p.Stock = stock.MaxStock + 1 }, "stock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := valid
			tt.edit(&p)
			err := p.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *stock.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, stock.ErrInvalid) {
				t.Fatalf("Validate() = %v, want a *ValidationError matching ErrInvalid", err)
			}
			if ve.Field != tt.wantField {
				t.Errorf("field = %q, want %q", ve.Field, tt.wantField)
			}
		})
	}
}

func TestNormalizeLines(t *testing.T) {
	t.Parallel()
	got, err := stock.NormalizeLines([]stock.Line{{SKU: "B", Quantity: 2}, {SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 3}, {SKU: "C", Quantity: 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := []stock.Line{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 5}, {SKU: "C", Quantity: 1}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NormalizeLines (-want +got):\n%s", diff)
	}

	for _, bad := range [][]stock.Line{
		nil,
		{{SKU: "A", Quantity: 0}},
		{{SKU: "A", Quantity: -1}},
		{{SKU: "a", Quantity: 1}},
		{{SKU: "A", Quantity: stock.MaxQuantity + 1}},
		{{SKU: "A", Quantity: stock.MaxQuantity}, {SKU: "A", Quantity: 1}},
	} {
		if _, err := stock.NormalizeLines(bad); !errors.Is(err, stock.ErrInvalid) {
			t.Errorf("NormalizeLines(%v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestAvailable(t *testing.T) {
	t.Parallel()
	if got := (stock.Product{Stock: 10, Reserved: 3}).Available(); got != 7 {
		t.Errorf("Available = %d, want 7", got)
	}
}
