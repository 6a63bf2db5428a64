package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestCheckText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string // want: "" for accepted, else the error
	}{
		{"", ""},
		{"SKU-1", ""},
		{"Crème brûlée ☕", ""},
		{"\u0080\u009f\u00a0", ""}, // C1 controls are not in the rule
		{"\ufffd", ""},
		{"a\x00b", "contains a control character (U+0000)"},
		{"\a", "contains a control character (U+0007)"},
		{"tab\t", "contains a control character (U+0009)"},
		{"line\n", "contains a control character (U+000A)"},
		{"\r", "contains a control character (U+000D)"},
		{"\x1b[31m", "contains a control character (U+001B)"},
		{"\x1f", "contains a control character (U+001F)"},
		{"del\x7f", "contains a control character (U+007F)"},
		{"ab\xff", "is not valid UTF-8 (byte 2)"},
		{"\xc3(", "is not valid UTF-8 (byte 0)"},
		{"\xed\xa0\x80", "is not valid UTF-8 (byte 0)"}, // a UTF-16 surrogate
	}
	for _, tt := range tests {
		err := CheckText(tt.in)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("CheckText(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCheckStringsNamesTheField(t *testing.T) {
	t.Parallel()
	type Embedded struct {
		Note string `json:"note"`
	}
	type line struct {
		SKU  string `json:"sku"`
		Tags []string
	}
	type body struct {
		Embedded
		Name    *string          `json:"name,omitempty"`
		Lines   []line           `json:"lines"`
		Meta    map[string]any   `json:"meta"`
		Raw     json.RawMessage  `json:"raw"`
		Skipped string           `json:"-"`
		Extra   map[string]*line `json:"extra"`
	}
	bad := "x\x07"
	tests := []struct {
		name string
		v    body
		want string
	}{
		{"clean", body{Lines: []line{{SKU: "A", Tags: []string{"t"}}}, Meta: map[string]any{"k": []any{"v", 1.0}}, Raw: json.RawMessage("\"\x07\"")}, ""},
		{"pointer", body{Name: &bad}, "name"},
		{"slice element", body{Lines: []line{{SKU: "A"}, {SKU: bad}}}, "lines[1].sku"},
		{"untagged field", body{Lines: []line{{SKU: "A", Tags: []string{"ok", bad}}}}, "lines[0].Tags[1]"},
		{"embedded struct", body{Embedded: Embedded{Note: bad}}, "note"},
		{"map value in an interface", body{Meta: map[string]any{"k": []any{"v", bad}}}, "meta.k[1]"},
		{"map key", body{Meta: map[string]any{bad: 1.0}}, `meta."x\a"`},
		{"map of pointers", body{Extra: map[string]*line{"a": {SKU: bad}}}, "extra.a.sku"},
		{"ignored field", body{Skipped: bad}, ""},
	}
	for _, tt := range tests {
		got, err := checkStrings(reflect.ValueOf(&tt.v), "")
		if (err != nil) != (tt.want != "") || got != tt.want {
			t.Errorf("%s: checkStrings = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

func TestValidInput(t *testing.T) {
	t.Parallel()
	h := ValidInput(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	tests := []struct {
		target     string
		wantStatus int
		wantDetail string
	}{
		{"/v1/products/MUG-1?limit=5&cursor=abc", 204, ""},
		{"/v1/products/Cr%C3%A8me?q=%E2%98%95", 204, ""},
		{"/v1/products/MUG%00", 400, "path contains a control character (U+0000)"},
		{"/v1/products/MUG%7F", 400, "path contains a control character (U+007F)"},
		{"/v1/products/MUG%FF", 400, "path is not valid UTF-8 (byte 16)"},
		{"/v1/products?cursor=a%1Bb", 400, `query parameter "cursor" contains a control character (U+001B)`},
		{"/v1/products?limit=5&cursor=ok&cursor=a%0A", 400, `query parameter "cursor" contains a control character (U+000A)`},
		{"/v1/products?lim%07it=5", 400, `query parameter name "lim\ait" contains a control character (U+0007)`},
		{"/v1/products?order_id=%C3", 400, `query parameter "order_id" is not valid UTF-8 (byte 0)`},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
		if rec.Code != tt.wantStatus {
			t.Errorf("GET %s: status = %d, want %d", tt.target, rec.Code, tt.wantStatus)
			continue
		}
		if tt.wantStatus == 204 {
			continue
		}
		p := mustProblem(t, rec)
		if p.Type != TypeInvalidParameter || p.Detail != tt.wantDetail {
			t.Errorf("GET %s: problem = %+v, want type %s detail %q", tt.target, p, TypeInvalidParameter, tt.wantDetail)
		}
		if strings.ContainsAny(rec.Body.String(), "\x00\x07\x1b\x7f") {
			t.Errorf("GET %s: the problem repeats the control character raw: %q", tt.target, rec.Body)
		}
	}
}
