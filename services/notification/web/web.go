// Package web serves the shopper's live tracking page: GET /track/{id} (the
// HTML page) and GET /track/assets/{name} (its script and stylesheet), and
// the operators' dashboard (Dashboard: GET /dashboard and its assets), all
// embedded in the binary, with no build step and nothing loaded from
// elsewhere.
//
// The page holds no order data, so serving it needs no authorization: its
// script reads the order id from the path and the tracking token from
// ?token=, and gets every status over the service's own WebSocket endpoint
// (GET /v1/orders/{id}/ws, or Server-Sent Events on /v1/orders/{id}/events
// when WebSockets cannot get through), which checks the token. It asks for
// what it missed with ?since=<last seq>, so the page and its connections may
// each be served by any replica.
package web

import (
	"crypto/sha256"
	_ "embed" // the page's files
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"

	"github.com/orderly/orderly/pkg/httpx"
)

var (
	//go:embed index.html
	indexHTML []byte
	//go:embed track.js
	trackJS []byte
	//go:embed track.css
	trackCSS []byte
)

// pageCSP lets the page load only its own script and stylesheet and talk
// only to its own origin ('self' covers ws: and wss: to the same host).
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// orderID is the shape of an order id (a UUID); anything else is not a page.
var orderID = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// file is one embedded file with what it is served with.
type file struct {
	name        string
	body        []byte
	contentType string
	etag        string
}

func newFile(name, contentType string, body []byte) file {
	sum := sha256.Sum256(body)
	return file{name: name, body: body, contentType: contentType, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// handler serves the page and its assets.
type handler struct {
	page   file
	assets map[string]file
}

// Handler returns the http.Handler for the tracking page and its assets.
// Mount it for every path under /track/, for example
//
//	r.Handle("/track/*", web.Handler())         // chi
//	mux.Handle("/track/", web.Handler())        // net/http ServeMux
//
// It looks at the whole request path, so it must not be mounted with a
// prefix stripped. It answers GET and HEAD:
//
//   - /track/{id} with the HTML page when id is a UUID (whatever the order,
//     and whether or not it exists: the page's script finds out), with a
//     Content-Security-Policy that allows only the page's own origin,
//     Referrer-Policy no-referrer (the URL holds the tracking token) and
//     Cache-Control no-store;
//   - /track/assets/track.js and /track/assets/track.css with an ETag, so
//     that browsers revalidate them cheaply.
//
// Any other path under /track/, including an id that is not a UUID, gets a
// 404 problem (application/problem+json), and any other method a 405
// problem with an Allow header.
func Handler() http.Handler {
	h := &handler{
		page: newFile("index.html", "text/html; charset=utf-8", indexHTML),
		assets: map[string]file{
			"track.js":  newFile("track.js", "text/javascript; charset=utf-8", trackJS),
			"track.css": newFile("track.css", "text/css; charset=utf-8", trackCSS),
		},
	}
	return h
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, isPage, ok := h.lookup(r.URL.Path)
	if !ok {
		httpx.WriteProblem(w, r, http.StatusNotFound, httpx.TypeNotFound, "Not found",
			"no tracking page at "+r.URL.Path+"; the link is /track/{order id}?token={tracking token}")
		return
	}
	serveFile(w, r, f, isPage)
}

// lookup returns the file for path, and whether it is the page.
func (h *handler) lookup(path string) (f file, isPage, ok bool) {
	rest, ok := strings.CutPrefix(path, "/track/")
	if !ok {
		return file{}, false, false
	}
	if name, isAsset := strings.CutPrefix(rest, "assets/"); isAsset {
		f, ok = h.assets[name]
		return f, false, ok
	}
	if !orderID.MatchString(rest) {
		return file{}, false, false
	}
	return h.page, true, true
}
