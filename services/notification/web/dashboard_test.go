package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func serveDashboard(method, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	Dashboard().ServeHTTP(w, httptest.NewRequest(method, path, nil))
	return w
}

// TestDashboardPage checks the operators' page: served to anyone (it holds
// no data) with the tracking page's strict policy, loading only its own
// two assets by relative paths, and nothing else under /dashboard.
func TestDashboardPage(t *testing.T) {
	t.Parallel()
	w := serveDashboard(http.MethodGet, "/dashboard")
	if w.Code != http.StatusOK {
		t.Fatalf("GET /dashboard = %d, want 200", w.Code)
	}
	for k, want := range map[string]string{
		"Content-Type":            "text/html; charset=utf-8",
		"Cache-Control":           "no-store",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
		"Content-Security-Policy": pageCSP,
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if strings.Contains(w.Body.String(), "<script>") || strings.Contains(w.Body.String(), "style=") {
		t.Error("the page has inline code, which its policy forbids")
	}
	var assets int
	for _, m := range regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(string(dashboardHTML), -1) {
		ref := m[1]
		if ref == "data:," {
			continue
		}
		if !strings.HasPrefix(ref, "dashboard/assets/") {
			t.Errorf("dashboard.html references %q, want only dashboard/assets/…", ref)
			continue
		}
		assets++
		if w := serveDashboard(http.MethodGet, "/"+ref); w.Code != http.StatusOK || w.Header().Get("ETag") == "" {
			t.Errorf("GET /%s = %d (ETag %q), want 200 with an ETag", ref, w.Code, w.Header().Get("ETag"))
		}
	}
	if assets != 2 {
		t.Errorf("dashboard.html loads %d assets, want the script and the stylesheet", assets)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/dashboard/", http.StatusNotFound},
		{http.MethodGet, "/dashboard/assets/track.js", http.StatusNotFound},
		{http.MethodGet, "/dashboard/assets/../index.html", http.StatusNotFound},
		{http.MethodPost, "/dashboard", http.StatusMethodNotAllowed},
		{http.MethodHead, "/dashboard", http.StatusOK},
	} {
		if w := serveDashboard(tc.method, tc.path); w.Code != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, w.Code, tc.want)
		}
	}
}
