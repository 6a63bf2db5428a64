package httpapi

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/services/inventory/stock"
)

// Problem types of the inventory API, besides those of httpx and authn.
var (
	TypeProductNotFound    = httpx.ProblemType("product-not-found")
	TypeInvalidProduct     = httpx.ProblemType("invalid-product")
	TypeStockBelowReserved = httpx.ProblemType("stock-below-reserved")
)

// errorTable is the one mapping of the API's errors to problems.
var errorTable = slices.Concat(httpx.ParameterErrors, []httpx.ErrorMapping{
	{Err: stock.ErrNotFound, Status: http.StatusNotFound, Type: TypeProductNotFound, Title: "Product not found"},
	{Err: stock.ErrInvalid, Status: http.StatusUnprocessableEntity, Type: TypeInvalidProduct, Title: "Invalid product"},
	{Err: stock.ErrStockBelowReserved, Status: http.StatusConflict, Type: TypeStockBelowReserved, Title: "Stock below reserved"},
}, authn.Errors)

// Page sizes of GET /v1/products.
const (
	defaultLimit = 100
	maxLimit     = 100
)

// product is a product as the API shows it.
type product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Currency   string `json:"currency"`
	Stock      int64  `json:"stock"`
	Reserved   int64  `json:"reserved"`
}

func toJSON(p stock.Product) product {
	return product{SKU: p.SKU, Name: p.Name, PriceCents: p.PriceCents, Currency: p.Currency, Stock: p.Stock, Reserved: p.Reserved}
}

// productList is the body of GET /v1/products.
type productList struct {
	Products   []product `json:"products"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

func (a *API) listProducts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			a.fail(w, r, httpx.InvalidParameter("limit", fmt.Sprintf("must be an integer from 1 to %d", maxLimit)))
			return
		}
		limit = n
	}
	after := ""
	if c := q.Get("cursor"); c != "" {
		sku, err := decodeCursor(c)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		after = sku
	}
	// One more than asked says whether another page follows.
	products, err := a.store.Products(r.Context(), after, limit+1)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := productList{Products: make([]product, 0, min(len(products), limit))}
	for i, p := range products {
		if i == limit {
			out.NextCursor = encodeCursor(products[limit-1].SKU)
			break
		}
		out.Products = append(out.Products, toJSON(p))
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (a *API) getProduct(w http.ResponseWriter, r *http.Request) {
	sku := chi.URLParam(r, "sku")
	if err := stock.ValidateSKU(sku); err != nil {
		a.fail(w, r, fmt.Errorf("%w: %w", httpx.ErrInvalidParameter, err))
		return
	}
	p, err := a.store.Product(r.Context(), sku)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, toJSON(p))
}

// putBody is the body of PUT /v1/products/{sku}; every field is required,
// so pointers tell a missing field from a zero.
type putBody struct {
	Name       *string `json:"name"`
	PriceCents *int64  `json:"price_cents"`
	Currency   *string `json:"currency"`
	Stock      *int64  `json:"stock"`
}

func (a *API) putProduct(w http.ResponseWriter, r *http.Request) {
	sku := chi.URLParam(r, "sku")
	if err := stock.ValidateSKU(sku); err != nil {
		a.fail(w, r, fmt.Errorf("%w: %w", httpx.ErrInvalidParameter, err))
		return
	}
	var body putBody
	if err := httpx.DecodeJSON(w, r, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	for _, f := range []struct {
		name    string
		missing bool
	}{{"name", body.Name == nil}, {"price_cents", body.PriceCents == nil}, {"currency", body.Currency == nil}, {"stock", body.Stock == nil}} {
		if f.missing {
			a.fail(w, r, &stock.ValidationError{Field: f.name, Reason: "is required"})
			return
		}
	}
	p, created, err := a.store.PutProduct(r.Context(), stock.Product{
		SKU: sku, Name: *body.Name, PriceCents: *body.PriceCents, Currency: *body.Currency, Stock: *body.Stock,
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/products/"+p.SKU)
	}
	httpx.WriteJSON(w, status, toJSON(p))
}

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, err, errorTable)
}

// encodeCursor turns the last SKU of a page into an opaque cursor.
func encodeCursor(sku string) string { return base64.RawURLEncoding.EncodeToString([]byte(sku)) }

// decodeCursor returns the SKU behind a cursor from encodeCursor, or a bad
// parameter error.
func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || stock.ValidateSKU(string(b)) != nil {
		return "", httpx.InvalidParameter("cursor", "is not a cursor this API returned")
	}
	return string(b), nil
}
