package web

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

const id = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

func serve(t *testing.T, method, path string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		r.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	Handler().ServeHTTP(w, r)
	return w
}

func TestPage(t *testing.T) {
	t.Parallel()
	w := serve(t, http.MethodGet, "/track/"+id+"?token=abc")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /track/{id} = %d, want 200", w.Code)
	}
	for k, want := range map[string]string{
		"Content-Type":           "text/html; charset=utf-8",
		"Cache-Control":          "no-store",
		"Referrer-Policy":        "no-referrer",
		"X-Content-Type-Options": "nosniff",
		"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
			"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	body := w.Body.String()
	// The page is the same for every order: it holds no data and nothing
	// from the request (the script reads the URL itself).
	if strings.Contains(body, id) || strings.Contains(body, "abc") {
		t.Errorf("page echoes the request:\n%s", body)
	}
	for _, want := range []string{`<html lang="en">`, `id="timeline"`, `id="connection"`, `aria-live="polite"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s", want)
		}
	}
}

// TestPageReferencesOnlyItsAssets checks that every script and stylesheet
// the page loads is one the handler serves, and is relative, so that the
// page works under a path prefix and loads nothing from elsewhere.
func TestPageReferencesOnlyItsAssets(t *testing.T) {
	t.Parallel()
	refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(string(indexHTML), -1)
	if len(refs) == 0 {
		t.Fatal("no references found in index.html")
	}
	var assets int
	for _, m := range refs {
		ref := m[1]
		if ref == "data:," { // the empty favicon, so that browsers ask for none
			continue
		}
		if !strings.HasPrefix(ref, "assets/") {
			t.Errorf("index.html references %q, want only assets/…", ref)
			continue
		}
		assets++
		if w := serve(t, http.MethodGet, "/track/"+ref); w.Code != http.StatusOK {
			t.Errorf("GET /track/%s = %d, want 200", ref, w.Code)
		}
	}
	if assets != 2 {
		t.Errorf("index.html loads %d assets, want the script and the stylesheet", assets)
	}
}

func TestAssets(t *testing.T) {
	t.Parallel()
	for name, ct := range map[string]string{"track.js": "text/javascript; charset=utf-8", "track.css": "text/css; charset=utf-8"} {
		w := serve(t, http.MethodGet, "/track/assets/"+name)
		if w.Code != http.StatusOK {
			t.Fatalf("GET %s = %d, want 200", name, w.Code)
		}
		if got := w.Header().Get("Content-Type"); got != ct {
			t.Errorf("%s Content-Type = %q, want %q", name, got, ct)
		}
		if got := w.Header().Get("Cache-Control"); got != "no-cache" {
			t.Errorf("%s Cache-Control = %q, want no-cache", name, got)
		}
		etag := w.Header().Get("ETag")
		if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(etag) {
			t.Fatalf("%s ETag = %q, want a quoted hash", name, etag)
		}
		if w := serve(t, http.MethodGet, "/track/assets/"+name, "If-None-Match", etag); w.Code != http.StatusNotModified {
			t.Errorf("%s with If-None-Match = %d, want 304", name, w.Code)
		}
		if w := serve(t, http.MethodHead, "/track/assets/"+name); w.Code != http.StatusOK || w.Body.Len() != 0 {
			t.Errorf("HEAD %s = %d with %d bytes, want 200 and no body", name, w.Code, w.Body.Len())
		}
	}
}

func TestNotFoundAndMethods(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/track/not-a-uuid", http.StatusNotFound},
		{http.MethodGet, "/track/" + id + "/", http.StatusNotFound},
		{http.MethodGet, "/track/" + id + "/extra", http.StatusNotFound},
		{http.MethodGet, "/track/", http.StatusNotFound},
		{http.MethodGet, "/track/assets/", http.StatusNotFound},
		{http.MethodGet, "/track/assets/index.html", http.StatusNotFound},
		{http.MethodGet, "/track/assets/../web.go", http.StatusNotFound},
		{http.MethodGet, "/elsewhere", http.StatusNotFound},
		{http.MethodPost, "/track/" + id, http.StatusMethodNotAllowed},
		{http.MethodDelete, "/track/assets/track.js", http.StatusMethodNotAllowed},
	} {
		w := serve(t, tc.method, tc.path)
		if w.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, w.Code, tc.want)
			continue
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s %s Content-Type = %q, want application/problem+json", tc.method, tc.path, ct)
		}
		var p struct {
			Type   string `json:"type"`
			Title  string `json:"title"`
			Status int    `json:"status"`
			Detail string `json:"detail"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Type == "" || p.Title == "" || p.Detail == "" || p.Status != tc.want {
			t.Errorf("%s %s problem = %+v (%v), want type, title, detail and status %d", tc.method, tc.path, p, err, tc.want)
		}
		if tc.want == http.StatusMethodNotAllowed && w.Header().Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s Allow = %q, want GET, HEAD", tc.method, tc.path, w.Header().Get("Allow"))
		}
	}
}
