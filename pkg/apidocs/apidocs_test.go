package apidocs_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/apidocs"
)

const spec = "openapi: 3.0.3\ninfo:\n  title: Test API\n"

func newTestRouter(t *testing.T) http.Handler {
	t.Helper()
	r := chi.NewRouter()
	apidocs.Routes(r, []byte(spec))
	return r
}

func get(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
	return w
}

func TestOpenAPI(t *testing.T) {
	t.Parallel()
	w := get(t, newTestRouter(t), "/openapi.yaml")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/yaml" || w.Body.String() != spec {
		t.Errorf("GET /openapi.yaml = %d %q %q, want 200 application/yaml and the spec", w.Code, w.Header().Get("Content-Type"), w.Body)
	}
}

// assetRef matches the page's references to its assets.
var assetRef = regexp.MustCompile(`(?:src|href)="(/docs/assets/[0-9a-f]{16}/[^"]+)"`)

func TestPage(t *testing.T) {
	t.Parallel()
	h := newTestRouter(t)
	w := get(t, h, "/docs")
	body := w.Body.String()
	for key, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Content-Security-Policy": apidocs.ContentSecurityPolicy,
		"Cache-Control":           "no-cache",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
	} {
		if got := w.Header().Get(key); got != want {
			t.Errorf("GET /docs %s = %q, want %q", key, got, want)
		}
	}
	if w.Code != http.StatusOK {
		t.Fatalf("GET /docs = %d, want 200", w.Code)
	}
	// Only the service's own origin: no inline script, no other host.
	csp := w.Header().Get("Content-Security-Policy")
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("the policy %q allows %s", csp, bad)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "http") {
		t.Errorf("the page has an inline script or an absolute URL:\n%s", body)
	}

	refs := assetRef.FindAllStringSubmatch(body, -1)
	want := map[string]string{
		"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
		"docs.js":              "text/javascript; charset=utf-8",
		"swagger-ui.css":       "text/css; charset=utf-8",
		"docs.css":             "text/css; charset=utf-8",
	}
	if len(refs) != len(want) {
		t.Fatalf("the page references %d assets, want %d:\n%s", len(refs), len(want), body)
	}
	for _, ref := range refs {
		u := ref[1]
		name := u[strings.LastIndexByte(u, '/')+1:]
		w := get(t, h, u)
		if w.Code != http.StatusOK || w.Body.Len() == 0 {
			t.Errorf("GET %s = %d with %d bytes, want 200 and a body", u, w.Code, w.Body.Len())
		}
		if got := w.Header().Get("Content-Type"); got != want[name] {
			t.Errorf("GET %s Content-Type = %q, want %q", u, got, want[name])
		}
		if got := w.Header().Get("Cache-Control"); got != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s Cache-Control = %q, want a year, immutable", u, got)
		}
		if got := w.Header().Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s X-Content-Type-Options = %q, want nosniff", u, got)
		}
		// Another release's hash must not get this release's file,
		// cached for a year.
		stale := "/docs/assets/0000000000000000/" + name
		if w := get(t, h, stale); w.Code != http.StatusNotFound {
			t.Errorf("GET %s (another hash) = %d, want 404", stale, w.Code)
		}
	}
	for _, u := range []string{"/docs/assets/0123456789abcdef/nothing.js", "/docs/assets/x", "/docs/"} {
		if w := get(t, h, u); w.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", u, w.Code)
		}
	}
}

// TestVendoredVersion checks that the bundle in swagger-ui/ is the version
// Version and vendor.sh name, so that neither drifts from the files.
func TestVendoredVersion(t *testing.T) {
	t.Parallel()
	bundle, err := os.ReadFile("swagger-ui/swagger-ui-bundle.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(bundle), `PACKAGE_VERSION:"`+apidocs.Version+`"`) {
		t.Errorf("swagger-ui/swagger-ui-bundle.js is not swagger-ui %s", apidocs.Version)
	}
	script, err := os.ReadFile("vendor.sh")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(script), "\nVERSION="+apidocs.Version+"\n") {
		t.Errorf("vendor.sh does not pin swagger-ui-dist %s", apidocs.Version)
	}
	for _, f := range []string{"swagger-ui/LICENSE", "swagger-ui/NOTICE", "swagger-ui/swagger-ui.css"} {
		if fi, err := os.Stat(f); err != nil || fi.Size() == 0 {
			t.Errorf("%s is missing or empty (%v)", f, err)
		}
	}
}
