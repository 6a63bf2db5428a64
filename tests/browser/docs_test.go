package browser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"sigs.k8s.io/yaml"

	"github.com/orderly/orderly/pkg/poll"
	"github.com/orderly/orderly/tests/stack"
)

// cspRecorder runs in the page before anything else and keeps every
// Content-Security-Policy violation, which the browser log reports too,
// but here with the directive and the blocked URL.
const cspRecorder = `(() => {
	window.__orderlyCSP = [];
	document.addEventListener('securitypolicyviolation', (e) => {
		window.__orderlyCSP.push(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') + ' (' + e.sourceFile + ':' + e.lineNumber + ')');
	});
})()`

// docsView is what the rendered documentation shows.
type docsView struct {
	Title      string   `json:"title"`
	Operations []string `json:"operations"`
	Errors     string   `json:"errors"`
	CSP        []string `json:"csp"`
}

// readDocs reads Swagger UI's rendering: the title (without the version
// badges Swagger UI puts inside it), each operation as "METHOD /path", and
// any error box it shows when the document cannot be loaded or parsed.
const readDocs = `(() => {
	const title = document.querySelector('.information-container .title');
	return {
		title: title ? title.childNodes[0].textContent.trim() : '',
		operations: [...document.querySelectorAll('.opblock-summary')].map((s) =>
			(s.querySelector('.opblock-summary-method')?.textContent || '') + ' ' +
			(s.querySelector('.opblock-summary-path')?.dataset.path || '')),
		errors: [...document.querySelectorAll('.errors-wrapper')].map((e) => e.textContent).join('; '),
		csp: window.__orderlyCSP || [],
	};
})()`

// tryItOut takes the next step of Swagger UI's "Try it out" on the GET
// operation of the path in %q: open the operation, press "Try it out"
// (which fills the parameters with their examples), press "Execute". It
// returns the status code the page shows for the response, or "" until
// then.
const tryItOut = `((path) => {
	const block = [...document.querySelectorAll('.opblock.opblock-get')]
		.find((b) => b.querySelector('.opblock-summary-path')?.dataset.path === path);
	if (!block) return '';
	const status = block.querySelector('.live-responses-table tbody .response-col_status');
	if (status && /^\d{3}/.test(status.textContent.trim())) return status.textContent.trim().slice(0, 3);
	const step = block.querySelector('.execute') || block.querySelector('.try-out__btn:not(.cancel)');
	if (step) step.click();
	else if (!block.classList.contains('is-open')) block.querySelector('.opblock-summary-control').click();
	return '';
})(%q)`

// TestAPIDocs opens /docs of each service in Chromium and waits for Swagger
// UI to render the service's openapi.yaml: the page shows the API's title
// and its operations, loads nothing but from the service itself (the
// viewer is embedded in the binary, no CDN), and has no console error,
// exception or Content-Security-Policy violation. "Try it out" on one
// operation reaches the service that served the page, wherever it runs:
// the documents' first server is relative.
func TestAPIDocs(t *testing.T) {
	s := stack.New(t, stack.Options{Notification: true})
	browser := newBrowser(t)

	for _, name := range stack.Names() {
		tc := struct {
			svc   *stack.Service
			title string
			ops   []string // every operation the page must list
		}{svc: s.Service(name)}
		tc.title, tc.ops = documented(t, tc.svc)
		t.Run(tc.svc.Name, func(t *testing.T) {
			ctx, cancel := chromedp.NewContext(browser)
			defer cancel()
			base := tc.svc.URL()
			requests, messages := watchDocs(t, ctx)

			if err := chromedp.Do(ctx, chromedp.Navigate(base+"/docs")); err != nil {
				t.Fatalf("open %s/docs: %v", base, err)
			}
			var v docsView
			poll.UntilNil(t, settle, "the page to render "+strings.Join(tc.ops, ", "), func() error {
				var err error
				if v, err = chromedp.Run(ctx, chromedp.Evaluate[docsView](readDocs)); err != nil {
					return err
				}
				if v.Errors != "" {
					return fmt.Errorf("the page shows errors: %s", v.Errors)
				}
				for _, op := range tc.ops {
					if !slices.Contains(v.Operations, op) {
						return fmt.Errorf("the page lists %v, not %s", v.Operations, op)
					}
				}
				return nil
			})
			try := tryable(t, tc.ops)
			var status string
			poll.UntilNil(t, settle, "Try it out on GET "+try+" to show a response", func() error {
				var err error
				if status, err = chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(tryItOut, try))); err != nil {
					return err
				}
				if status == "" {
					return errors.New("no response shown yet")
				}
				return nil
			})
			if !slices.ContainsFunc(requests(), func(r string) bool { return strings.HasPrefix(r, base+try) }) {
				t.Errorf("Try it out on GET %s (status %s) did not call %s%s; the page requested %v", try, status, base, try, requests())
			}

			if v.Title != tc.title {
				t.Errorf("the page's title is %q, want %q", v.Title, tc.title)
			}
			if len(v.CSP) > 0 {
				t.Errorf("Content-Security-Policy violations:\n%s", strings.Join(v.CSP, "\n"))
			}

			origin, err := url.Parse(base)
			if err != nil {
				t.Fatal(err)
			}
			reqs := requests()
			if len(reqs) < 5 { // the page, two scripts, two stylesheets, openapi.yaml
				t.Errorf("the page made only %d requests: %v", len(reqs), reqs)
			}
			for _, r := range reqs {
				u, err := url.Parse(r)
				if err != nil || (u.Scheme != "data" && u.Host != origin.Host) {
					t.Errorf("the page requested %s, off the service at %s", r, origin.Host)
				}
			}
			if !slices.Contains(reqs, base+"/openapi.yaml") {
				t.Errorf("the page did not fetch %s/openapi.yaml; it requested %v", base, reqs)
			}
			// Chromium reports the tried request's 401 (no token entered)
			// as a console error; it is the answer Try it out should show.
			msgs := slices.DeleteFunc(messages(), func(m string) bool {
				return status == "401" && strings.Contains(m, "Failed to load resource") && strings.Contains(m, base+try)
			})
			if len(msgs) > 0 {
				t.Errorf("console errors on the page (tried GET %s: %q):\n%s", try, status, strings.Join(msgs, "\n"))
			}

			screenshot(t, ctx, "api-docs-"+tc.svc.Name+".png", "the "+tc.svc.Name+" service's /docs")
		})
	}
}

// watchDocs installs cspRecorder in ctx's tab and starts recording its
// requests (by URL) and its console errors and exceptions; the returned
// funcs list what was seen so far.
func watchDocs(t *testing.T, ctx context.Context) (requests, messages func() []string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (page.AddScriptToEvaluateOnNewDocumentResult, error) {
		return cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
	}); err != nil {
		t.Fatalf("install the policy recorder: %v", err)
	}
	var (
		mu   sync.Mutex
		reqs []string
		msgs []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			reqs = append(reqs, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	console := chromedp.Console(ctx)
	go func() {
		for m, err := range console {
			if err != nil {
				if !errors.Is(err, context.Canceled) {
					t.Logf("console: %v", err)
				}
				return
			}
			if m.IsException() || m.Type == chromedp.ConsoleError {
				mu.Lock()
				msgs = append(msgs, fmt.Sprintf("%s (%s:%d)", m, m.URL, m.Line+1))
				mu.Unlock()
			}
		}
	}()
	snapshot := func(s *[]string) func() []string {
		return func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(*s)
		}
	}
	return snapshot(&reqs), snapshot(&msgs)
}

// tryable picks the first GET operation with no path parameter: its query
// parameters, if any, have examples that "Try it out" fills in.
func tryable(t *testing.T, ops []string) string {
	t.Helper()
	for _, op := range ops {
		if path, ok := strings.CutPrefix(op, "GET "); ok && !strings.Contains(path, "{") {
			return path
		}
	}
	t.Fatalf("no GET operation without path parameters in %v", ops)
	return ""
}

// documented reads the service's /openapi.yaml, as the page does, and
// returns its title and every operation as "METHOD /path": the page must
// show them all, whichever service it is.
func documented(t *testing.T, svc *stack.Service) (title string, ops []string) {
	t.Helper()
	resp, err := http.Get(svc.URL() + "/openapi.yaml") // local
	if err != nil {
		t.Fatalf("GET %s/openapi.yaml: %v", svc.URL(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s/openapi.yaml: %d %v", svc.URL(), resp.StatusCode, err)
	}
	var doc struct {
		Info  struct{ Title string }
		Paths map[string]map[string]any
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s openapi.yaml: %v", svc.Name, err)
	}
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options":
				ops = append(ops, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(ops)
	if doc.Info.Title == "" || len(ops) == 0 {
		t.Fatalf("%s openapi.yaml has no title or no operation", svc.Name)
	}
	return doc.Info.Title, ops
}
