package deploy

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestServicesShareOnlyPkgAndProto checks that no service imports another:
// what services share lives in pkg/ (code) and proto/ (the contract), so a
// service can be changed, deployed and scaled alone.
func TestServicesShareOnlyPkgAndProto(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	const prefix = "github.com/orderly/orderly/services/"
	dirs, err := os.ReadDir(filepath.Join(root, "services"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		own := d.Name()
		err := filepath.WalkDir(filepath.Join(root, "services", own), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if other, ok := strings.CutPrefix(p, prefix); ok && strings.Split(other, "/")[0] != own {
					rel, _ := filepath.Rel(root, path)
					t.Errorf("%s (service %s) imports %s: services share only pkg/ and proto/", rel, own, p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
