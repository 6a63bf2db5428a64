// Package apidocs serves a service's API documentation: its OpenAPI document
// at GET /openapi.yaml and a page rendering it at GET /docs, with Swagger UI
// (swagger-ui-dist, vendored in swagger-ui/ by vendor.sh) embedded in the
// binary, so that the page works with no CDN and no network beyond the
// service itself.
package apidocs

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/orderly/orderly/pkg/httpx"
)

// Version is the swagger-ui-dist version in swagger-ui/; vendor.sh pins the
// same one.
const Version = "5.35.0"

// AssetsPath is where the page's scripts and stylesheets are served, each
// as AssetsPath/<content hash>/<name>.
const AssetsPath = "/docs/assets"

// ContentSecurityPolicy is the policy of the page. Scripts and stylesheets
// come from the service only; the page's own initializer is a file
// (docs.js), not an inline script, so neither needs 'unsafe-inline'. Swagger
// UI's stylesheet draws its icons as data: SVGs, and the page fetches the
// document (and, with "Try it out", the API) from the same origin.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

//go:embed docs.html docs.js docs.css swagger-ui
var files embed.FS

// served are the files under AssetsPath, by name; the licenses ride along,
// since the binary redistributes the bundle.
var served = []string{
	"swagger-ui/swagger-ui-bundle.js",
	"swagger-ui/swagger-ui.css",
	"swagger-ui/LICENSE",
	"swagger-ui/NOTICE",
	"swagger-ui/swagger-ui-bundle.js.LICENSE.txt",
	"docs.js",
	"docs.css",
}

type asset struct {
	body        []byte
	contentType string
	hash        string
}

func (a asset) url(name string) string { return AssetsPath + "/" + a.hash + "/" + name }

// Routes adds GET /openapi.yaml (spec), GET /docs and the page's assets to
// r. None needs authentication: the document is public already, and the
// page shows nothing else. It panics if the embedded files are missing,
// which only a broken build can cause.
func Routes(r chi.Router, spec []byte) {
	assets := make(map[string]asset, len(served))
	for _, p := range served {
		body, err := files.ReadFile(p)
		if err != nil {
			panic("apidocs: " + err.Error())
		}
		sum := sha256.Sum256(body)
		assets[path.Base(p)] = asset{body: body, contentType: contentType(p), hash: hex.EncodeToString(sum[:8])}
	}
	page := mustPage(assets)

	r.Get("/openapi.yaml", ServeOpenAPI(spec))
	r.Get("/docs", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("Referrer-Policy", "no-referrer")
		// The page names the assets by content hash; revalidating it is
		// what lets a new release's assets replace the cached ones.
		h.Set("Cache-Control", "no-cache")
		httpx.WriteBody(w, http.StatusOK, "text/html; charset=utf-8", page)
	})
	r.Get(AssetsPath+"/{hash}/{name}", func(w http.ResponseWriter, req *http.Request) {
		name := chi.URLParam(req, "name")
		a, ok := assets[name]
		// Another hash is another release's file, which this binary does
		// not have: serving this one under it would be cached forever.
		if !ok || chi.URLParam(req, "hash") != a.hash {
			httpx.WriteProblem(w, req, http.StatusNotFound, httpx.TypeNotFound, "Not found", "no asset "+req.URL.Path)
			return
		}
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		httpx.WriteBody(w, http.StatusOK, a.contentType, a.body)
	})
}

// ServeOpenAPI returns the handler of GET /openapi.yaml, serving a
// service's contract.
func ServeOpenAPI(spec []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(spec)
	}
}

func contentType(name string) string {
	switch {
	case strings.HasSuffix(name, ".js"):
		return "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		return "text/css; charset=utf-8"
	default:
		return "text/plain; charset=utf-8"
	}
}

// mustPage renders docs.html with the assets' URLs.
func mustPage(assets map[string]asset) []byte {
	t := template.Must(template.ParseFS(files, "docs.html"))
	urls := make(map[string]string, len(assets))
	for name, a := range assets {
		urls[name] = a.url(name)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, urls); err != nil {
		panic("apidocs: " + err.Error())
	}
	return b.Bytes()
}
