// Package deploy checks the deployment files against the code they deploy:
// docker-compose.yml (loaded with compose-go), the Kubernetes base in
// deploy/k8s (built with kustomize and decoded into the Kubernetes API
// types) and deploy/Dockerfile (parsed, and its build replayed with go
// build). The settings each file gives a service are run through
// boot.LoadConfig, the function the service itself starts with. Nothing
// here needs Docker or a cluster.
package deploy

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/distribution/reference"

	"github.com/orderly/orderly/pkg/boot"
	"github.com/orderly/orderly/tests/stack"
)

// appService is one of the repository's service binaries.
type appService struct {
	name string // "order"
	addr string // default HTTP_ADDR, ":8080"
	port int    // its port, 8080
}

// runtimeVars are environment variables read by something other than
// boot.Config (the Go runtime) that deployment files may set.
var runtimeVars = map[string]bool{"GOMEMLIMIT": true, "GOMAXPROCS": true, "GODEBUG": true}

// strongSecret is a JWT secret production mode accepts, and
// strongTrackingSecret a tracking secret.
const (
	strongSecret         = "test-secret-0123456789abcdef0123456789abcdef"
	strongTrackingSecret = "test-tracking-secret-0123456789abcdef0123456789"
)

// productionIdentity is what production mode requires beyond the secret:
// the identity provider's issuer and audience.
var productionIdentity = map[string]string{"AUTH_JWT_ISSUER": "https://id.example.com/", "AUTH_JWT_AUDIENCE": "orderly-api"}

// repoRoot returns the repository's root directory.
func repoRoot(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		tb.Fatalf("repository root not found at %s: %v", root, err)
	}
	return root
}

// mustAppServices returns every services/<name>/cmd/<name>/main.go of the
// repository, with the default HTTP address that main passes to
// boot.LoadConfig, sorted by name.
func mustAppServices(tb testing.TB) []appService {
	tb.Helper()
	root := repoRoot(tb)
	mains, err := filepath.Glob(filepath.Join(root, "services", "*", "cmd", "*", "main.go"))
	if err != nil {
		tb.Fatal(err)
	}
	var svcs []appService
	for _, main := range mains {
		svc, err := parseMain(main)
		if err != nil {
			tb.Fatalf("%s: %v", main, err)
		}
		svcs = append(svcs, svc)
	}
	sort.Slice(svcs, func(i, j int) bool { return svcs[i].name < svcs[j].name })
	var names []string
	for _, s := range svcs {
		names = append(names, s.name)
	}
	var want []string
	for _, s := range stack.Services {
		want = append(want, s.Name)
		if i := slices.IndexFunc(svcs, func(a appService) bool { return a.name == s.Name }); i >= 0 && svcs[i].port != s.Port {
			tb.Errorf("%s listens on :%d by default, but the registry (tests/stack) says :%d", s.Name, svcs[i].port, s.Port)
		}
	}
	slices.Sort(want)
	if !reflect.DeepEqual(names, want) {
		tb.Fatalf("service binaries in services/*/cmd: %v, but the registry (tests/stack) lists %v", names, want)
	}
	return svcs
}

// parseMain finds the boot.Load(environ, "name", ":port", …) call in a
// service's main.go.
func parseMain(path string) (appService, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		return appService{}, err
	}
	var svc appService
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) < 3 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Load" {
			return true
		}
		if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "boot" {
			return true
		}
		name, err1 := stringLit(call.Args[1])
		addr, err2 := stringLit(call.Args[2])
		if err1 == nil && err2 == nil {
			svc.name, svc.addr = name, addr
		}
		return false
	})
	if svc.name == "" {
		return appService{}, fmt.Errorf(`no boot.Load(environ, "service", ":port", …) call with literal arguments`)
	}
	if want := filepath.Base(filepath.Dir(path)); svc.name != want {
		return appService{}, fmt.Errorf("service name %q in a binary named %q", svc.name, want)
	}
	svc.port, err = addrPort(svc.addr)
	if err != nil {
		return appService{}, fmt.Errorf("default address: %w", err)
	}
	return svc, nil
}

func stringLit(e ast.Expr) (string, error) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", fmt.Errorf("not a string literal")
	}
	return strconv.Unquote(lit.Value)
}

// addrPort returns the port of a host:port listen address.
func addrPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// bootVars returns the environment variables boot.Config reads.
func bootVars() map[string]bool {
	vars := make(map[string]bool)
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for f := range t.Fields() {
			if f.Anonymous && f.Type.Kind() == reflect.Struct {
				walk(f.Type)
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			if name != "" && name != "-" {
				vars[name] = true
			}
		}
	}
	walk(reflect.TypeFor[boot.Config]())
	return vars
}

// serviceVars returns the environment variables the service's own code
// reads, besides boot.Config: the `env:"NAME"` struct tags in its non-test
// Go files (its config struct embeds boot.Config).
func serviceVars(tb testing.TB, svc appService) map[string]bool {
	tb.Helper()
	vars := make(map[string]bool)
	tag := regexp.MustCompile(`env:"([A-Za-z0-9_]+)`)
	err := filepath.WalkDir(filepath.Join(repoRoot(tb), "services", svc.name), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return err
		}
		src, err := os.ReadFile(p) //nolint:gosec // the repository's own files
		if err != nil {
			return err
		}
		for _, m := range tag.FindAllSubmatch(src, -1) {
			vars[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	if usesTracking(tb, svc) {
		for f := range reflect.TypeFor[boot.TrackingConfig]().Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			vars[name] = true
		}
	}
	return vars
}

// usesTracking reports whether svc's config embeds boot.TrackingConfig, the
// tracking-token settings only the services that mint or check tracking
// tokens read.
func usesTracking(tb testing.TB, svc appService) bool {
	tb.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot(tb), "services", svc.name, "cmd", svc.name, "main.go"))
	if err != nil {
		tb.Fatal(err)
	}
	return regexp.MustCompile(`(?m)^\s+boot\.TrackingConfig$`).Match(src)
}

// checkKnownVars reports every variable in env that neither boot.Config,
// the service's own config nor the Go runtime reads: a typo there would be
// silently ignored.
func checkKnownVars(tb testing.TB, where string, svc appService, env map[string]string) {
	tb.Helper()
	known, own := bootVars(), serviceVars(tb, svc)
	for k := range env {
		if !known[k] && !own[k] && !runtimeVars[k] {
			tb.Errorf("%s sets %s, which neither boot.Config nor services/%s reads (a typo?)", where, k, svc.name)
		}
	}
}

// loadConfig runs env through boot.LoadConfig, and the tracking-token
// settings' checks when svc reads them, as the service svc does at start.
func loadConfig(tb testing.TB, svc appService, env map[string]string) (boot.Config, error) {
	tb.Helper()
	environ := make([]string, 0, len(env))
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	sort.Strings(environ)
	if !usesTracking(tb, svc) {
		return boot.LoadConfig(environ, svc.name, svc.addr)
	}
	var cfg struct {
		boot.Config
		boot.TrackingConfig
	}
	err := boot.Load(environ, svc.name, svc.addr, &cfg, func(p *boot.Problems) { cfg.CheckTracking(p, cfg.Config) })
	return cfg.Config, err
}

// checkPinned reports an image reference that has neither a digest nor a
// tag other than latest.
func checkPinned(image string) error {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return fmt.Errorf("image %q: %w", image, err)
	}
	if _, ok := ref.(reference.Digested); ok {
		return nil
	}
	tagged, ok := ref.(reference.Tagged)
	switch {
	case !ok:
		return fmt.Errorf("image %q has no tag (it means :latest)", image)
	case tagged.Tag() == "latest":
		return fmt.Errorf("image %q is not pinned", image)
	}
	return nil
}

// imageName returns the repository part of an image reference, without
// tag or digest: "postgres" for "postgres:15".
func imageName(image string) string {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return image
	}
	return reference.FamiliarName(ref)
}

// imageTag returns the tag of an image reference, or "".
func imageTag(image string) string {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	if t, ok := ref.(reference.Tagged); ok {
		return t.Tag()
	}
	return ""
}
