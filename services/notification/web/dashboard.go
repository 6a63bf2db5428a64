package web

import (
	"bytes"
	_ "embed" // the dashboard's files
	"net/http"
	"strings"
	"time"

	"github.com/orderly/orderly/pkg/httpx"
)

var (
	//go:embed dashboard.html
	dashboardHTML []byte
	//go:embed dashboard.js
	dashboardJS []byte
	//go:embed dashboard.css
	dashboardCSS []byte
)

// dashboardHandler serves the operators' dashboard and its assets.
type dashboardHandler struct {
	page   file
	assets map[string]file
}

// Dashboard returns the http.Handler of the operators' dashboard: GET
// /dashboard (the page) and GET /dashboard/assets/{dashboard.js,
// dashboard.css}. Mount it for /dashboard and every path under it, for
// example
//
//	r.Handle("/dashboard", web.Dashboard())
//	r.Handle("/dashboard/*", web.Dashboard())
//
// The page holds no data, so serving it needs no authorization: its script
// asks the operator for an admin's token, exchanges it for a short-lived
// ticket (POST /v1/dashboard/tickets, the token in the Authorization
// header) and opens GET /v1/dashboard/ws?ticket=, which the API checks.
// The page gets the same Content-Security-Policy as the tracking page (its
// own script, stylesheet and origin only) and Cache-Control no-store. Any
// other path gets a 404 problem, any other method a 405.
func Dashboard() http.Handler {
	return &dashboardHandler{
		page: newFile("dashboard.html", "text/html; charset=utf-8", dashboardHTML),
		assets: map[string]file{
			"dashboard.js":  newFile("dashboard.js", "text/javascript; charset=utf-8", dashboardJS),
			"dashboard.css": newFile("dashboard.css", "text/css; charset=utf-8", dashboardCSS),
		},
	}
}

func (h *dashboardHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var (
		f      file
		ok     bool
		isPage = r.URL.Path == "/dashboard"
	)
	if isPage {
		f, ok = h.page, true
	} else if name, found := strings.CutPrefix(r.URL.Path, "/dashboard/assets/"); found {
		f, ok = h.assets[name]
	}
	if !ok {
		httpx.WriteProblem(w, r, http.StatusNotFound, httpx.TypeNotFound, "Not found", "no page at "+r.URL.Path+"; the dashboard is /dashboard")
		return
	}
	serveFile(w, r, f, isPage)
}

// serveFile writes f (the page, with its headers, or an asset).
func serveFile(w http.ResponseWriter, r *http.Request, f file, isPage bool) {
	hd := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hd.Set("Allow", "GET, HEAD")
		httpx.WriteProblem(w, r, http.StatusMethodNotAllowed, httpx.TypeMethodNotAllowed, "Method not allowed",
			"method "+r.Method+" is not allowed on "+r.URL.Path)
		return
	}
	if isPage {
		hd.Set("Content-Security-Policy", pageCSP)
		hd.Set("Cache-Control", "no-store")
		hd.Set("X-Frame-Options", "DENY")
	} else {
		hd.Set("Cache-Control", "no-cache")
	}
	hd.Set("Content-Type", f.contentType)
	hd.Set("ETag", f.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	// ServeContent answers HEAD, If-None-Match (304) and ranges.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
