package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/orderly/orderly/tests/stack"
)

// maxTouchPoints is the most files docs/adding-a-service.md may list: a
// new service should cost its own files and a line or a block in a few
// shared ones, not an edit in every corner of the repository. (Two of them
// are the broker user every service gets, in the compose definitions and
// the Kubernetes objects: permissions are the broker's own lists.)
const maxTouchPoints = 20

// TestAddingAServiceDoc keeps docs/adding-a-service.md true: each file it
// says to create exists in the payment service (the example, with payment
// for shipping), each file it says to touch names the services today, the
// lists stay short, and no file outside them names the services one by
// one.
func TestAddingAServiceDoc(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	doc, err := os.ReadFile(filepath.Join(root, "docs", "adding-a-service.md"))
	if err != nil {
		t.Fatal(err)
	}
	create := docList(t, string(doc), "create")
	touch := docList(t, string(doc), "touch")
	if n := len(create) + len(touch); n > maxTouchPoints {
		t.Errorf("adding a service takes %d files (%d to create, %d to touch), want at most %d", n, len(create), len(touch), maxTouchPoints)
	}
	for _, f := range create {
		example := strings.ReplaceAll(f, "shipping", "payment")
		if m, _ := filepath.Glob(filepath.Join(root, strings.ReplaceAll(example, "00001_shipments", "00001_*"))); len(m) == 0 {
			t.Errorf("the doc says to create %s, but payment has no %s to copy", f, example)
		}
	}
	listed := map[string]bool{}
	for _, f := range touch {
		listed[f] = true
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Errorf("the doc says to touch %s: %v", f, err)
			continue
		}
		if !strings.Contains(string(b), "payment") {
			t.Errorf("the doc says to touch %s, but it does not name the services", f)
		}
	}

	// A file that names every service but one is a list of services to
	// keep in step (order is too common a word to count).
	out, err := exec.Command("git", "-C", root, "ls-files").Output()
	if err != nil {
		t.Skipf("git ls-files: %v", err)
	}
	others := stack.Names()[1:]
	words := make([]*regexp.Regexp, len(others))
	for i, n := range others {
		words[i] = regexp.MustCompile(`\b` + n + `\b`)
	}
	for _, f := range strings.Fields(string(out)) {
		if listed[f] || allowedLists[f] || strings.HasPrefix(f, "services/") || strings.HasPrefix(f, "docs/") ||
			strings.HasSuffix(f, ".md") || strings.HasPrefix(f, "proto/") || strings.HasPrefix(f, "tests/e2ebench/") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue
		}
		all := true
		for _, w := range words {
			all = all && w.Match(b)
		}
		if all {
			t.Errorf("%s names the services one by one but is not among the files docs/adding-a-service.md lists: read the registry (tests/stack.Services) instead, or list it", f)
		}
	}
}

// allowedLists name the services in prose or in a registry, not in a list
// a new service must join. (tests/e2ebench, skipped above, has one column
// per service in its reports; a new service's CPU shows in "other" until it
// gets its own.)
var allowedLists = map[string]bool{
	"tests/stack/services.go":    true, // the registry itself
	"tests/stack/stack.go":       true, // the named fields Order, Inventory, Payment, Notification for the tests that drive them
	"tests/browser/main_test.go": true, // package comment
	"tests/live/live_test.go":    true, // package comment
	// Refusals between particular services (payment may not publish to
	// order.events), which a new service need not join.
	"tests/e2e/broker_users_test.go": true,
}

// docList returns the backquoted paths of the list between
// <!-- adding-a-service:name --> and <!-- adding-a-service:end -->.
func docList(tb testing.TB, doc, name string) []string {
	tb.Helper()
	_, rest, ok := strings.Cut(doc, "<!-- adding-a-service:"+name+" -->")
	if !ok {
		tb.Fatalf("docs/adding-a-service.md has no %q list", name)
	}
	body, _, _ := strings.Cut(rest, "<!-- adding-a-service:end -->")
	var out []string
	for _, m := range regexp.MustCompile("(?m)^- `([^`]+)`").FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	if len(out) == 0 {
		tb.Fatalf("the %q list of docs/adding-a-service.md is empty", name)
	}
	return out
}
