package deploy

import (
	"bufio"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case: FROM, COPY, …
	args string
	line int
}

// stage is one FROM … stage of a Dockerfile.
type stage struct {
	image, name string
	body        []instruction
}

// mustParseDockerfile splits a Dockerfile into stages. It understands
// comments, line continuations and parser directives, which is all
// deploy/Dockerfile uses (no heredocs, no escape directive).
func mustParseDockerfile(tb testing.TB, file string) []stage {
	tb.Helper()
	f, err := os.Open(file)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var (
		stages  []stage
		pending strings.Builder
		start   int
	)
	globals := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			pending.WriteString(cont + " ")
			continue
		}
		pending.WriteString(line)
		cmd, args, _ := strings.Cut(pending.String(), " ")
		pending.Reset()
		ins := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args), line: start}
		if strings.Contains(ins.args, "<<") {
			tb.Fatalf("%s:%d: heredocs are not understood by this test", file, ins.line)
		}
		if ins.cmd == "FROM" {
			f := strings.Fields(ins.args)
			// A build argument declared before the first FROM stands for
			// its default, the image a build without --build-arg uses.
			image := f[0]
			if def, ok := globals[image]; ok {
				image = def
			}
			st := stage{image: image}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if ins.cmd != "ARG" {
				tb.Fatalf("%s:%d: %s before FROM", file, ins.line, ins.cmd)
			}
			if name, def, ok := strings.Cut(ins.args, "="); ok {
				globals["${"+name+"}"] = def
			}
			continue
		}
		stages[len(stages)-1].body = append(stages[len(stages)-1].body, ins)
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if len(stages) == 0 {
		tb.Fatalf("%s: no FROM", file)
	}
	return stages
}

// find returns the arguments of every cmd instruction of the stage.
func (s stage) find(cmd string) []string {
	var args []string
	for _, ins := range s.body {
		if ins.cmd == cmd {
			args = append(args, ins.args)
		}
	}
	return args
}

// envPairs returns the KEY=value pairs of ENV instructions.
func (s stage) envPairs() []string {
	var pairs []string
	for _, a := range s.find("ENV") {
		pairs = append(pairs, strings.Fields(a)...)
	}
	return pairs
}

// copyArgs splits COPY arguments into flags, sources and destination.
func copyArgs(args string) (flags, srcs []string, dst string) {
	for _, f := range strings.Fields(args) {
		if strings.HasPrefix(f, "--") {
			flags = append(flags, f)
		} else {
			srcs = append(srcs, f)
		}
	}
	if len(srcs) == 0 {
		return flags, nil, ""
	}
	return flags, srcs[:len(srcs)-1], srcs[len(srcs)-1]
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	stages := mustParseDockerfile(t, filepath.Join(root, "deploy", "Dockerfile"))
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build and runtime)", len(stages))
	}
	build, run := stages[0], stages[1]

	if !strings.HasPrefix(build.image, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26", build.image)
	}
	if !strings.HasPrefix(run.image, "gcr.io/distroless/static") || !strings.HasSuffix(run.image, ":nonroot") {
		t.Errorf("runtime stage FROM %s, want gcr.io/distroless/static…:nonroot", run.image)
	}
	for _, s := range stages {
		if err := checkPinned(s.image); err != nil {
			t.Error(err)
		}
	}

	if !slices.Contains(build.find("ARG"), "SERVICE") {
		t.Errorf("the build stage has no ARG SERVICE")
	}
	env := build.envPairs()
	for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off"} {
		if !slices.Contains(env, want) {
			t.Errorf("the build stage does not set %s", want)
		}
	}
	goBuild := ""
	for _, r := range build.find("RUN") {
		if strings.Contains(r, "go build") {
			goBuild = r
		}
	}
	// The linker sets a variable it does not find to nothing, silently: the
	// name is the one pkg/telemetry's build_test.go stamps.
	for _, arg := range []string{"VERSION", "REVISION"} {
		if !slices.Contains(build.find("ARG"), arg) {
			t.Errorf("the build stage has no ARG %s", arg)
		}
	}
	for _, want := range []string{"-trimpath", "-o /out/service", "./cmd/${SERVICE}",
		"-X github.com/orderly/orderly/pkg/telemetry.version=${VERSION}", "-X github.com/orderly/orderly/pkg/telemetry.revision=${REVISION}"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build step %q lacks %s", goBuild, want)
		}
	}

	// By number: a local runtime image (a Debian rootfs) has no user named
	// nonroot.
	if !slices.Contains(run.find("USER"), "65532:65532") {
		t.Errorf("the runtime stage does not run as 65532:65532 (distroless's nonroot)")
	}
	if !slices.Contains(run.find("EXPOSE"), "${PORT}") || !slices.ContainsFunc(run.find("ARG"), func(a string) bool { return strings.HasPrefix(a, "PORT") }) {
		t.Errorf("the runtime stage does not EXPOSE ${PORT} (ARG PORT)")
	}
	// The binaries listen on loopback by default: the image must not.
	if !slices.Contains(run.envPairs(), "HTTP_ADDR=:${PORT}") {
		t.Errorf("the runtime stage does not set ENV HTTP_ADDR=:${PORT} (the binary's default, 127.0.0.1, is unreachable in a container)")
	}
	entry := run.find("ENTRYPOINT")
	if len(entry) != 1 || !strings.Contains(entry[0], `"/usr/local/bin/service"`) {
		t.Errorf("ENTRYPOINT %q, want the exec form of /usr/local/bin/service", entry)
	}
	if !slices.Contains(run.find("COPY"), "--from=build /out/service /usr/local/bin/service") {
		t.Errorf("the runtime stage does not copy /out/service from the build stage to /usr/local/bin/service")
	}

	ignore := mustDockerignore(t, root)
	for _, svc := range mustAppServices(t) {
		expand := strings.NewReplacer("${SERVICE}", svc.name, "$SERVICE", svc.name).Replace
		// Every COPY source exists and is not excluded from the context.
		for _, c := range build.find("COPY") {
			flags, srcs, _ := copyArgs(expand(c))
			if slices.ContainsFunc(flags, func(f string) bool { return strings.HasPrefix(f, "--from") }) {
				continue
			}
			for _, src := range srcs {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("%s: COPY source %s: %v", svc.name, src, err)
				}
				if ignore.match(strings.TrimSuffix(path.Clean(src), "/")) {
					t.Errorf("%s: COPY source %s is excluded by .dockerignore", svc.name, src)
				}
			}
		}
		// The go build runs where the service's cmd directory is.
		if dir := buildDir(build, expand); dir != "/src/services/"+svc.name {
			t.Errorf("%s: go build runs in %s, want /src/services/%s", svc.name, dir, svc.name)
		}
		if _, err := os.Stat(filepath.Join(root, "services", svc.name, "cmd", svc.name, "main.go")); err != nil {
			t.Errorf("%s: %v", svc.name, err)
		}
	}
}

// buildDir returns the WORKDIR of the go build step.
func buildDir(build stage, expand func(string) string) string {
	dir := "/"
	for _, ins := range build.body {
		switch {
		case ins.cmd == "WORKDIR":
			dir = joinDir(dir, expand(ins.args))
		case ins.cmd == "RUN" && strings.Contains(ins.args, "go build"):
			return dir
		}
	}
	return ""
}

// joinDir returns the directory WORKDIR dir leads to from cur.
func joinDir(cur, dir string) string {
	if path.IsAbs(dir) {
		return path.Clean(dir)
	}
	return path.Join(cur, dir)
}

// TestDockerBuild replays the build stage of deploy/Dockerfile for each
// service without Docker: the COPY sources go into a fresh directory as
// they would into the image (minus what .dockerignore excludes), and go
// build runs there with the stage's ENV. It fails where an image build
// would, for example on a go.sum that lacks what a replaced module needs.
func TestDockerBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every service")
	}
	t.Parallel()
	root := repoRoot(t)
	build := mustParseDockerfile(t, filepath.Join(root, "deploy", "Dockerfile"))[0]
	ignore := mustDockerignore(t, root)
	goBin := filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	if os.Getenv("GOROOT") == "" {
		goBin = "go"
	}

	for _, svc := range mustAppServices(t) {
		t.Run(svc.name, func(t *testing.T) {
			expand := strings.NewReplacer("${SERVICE}", svc.name, "$SERVICE", svc.name).Replace
			ctxDir := t.TempDir()
			workdir := "/"
			for _, ins := range build.body {
				switch ins.cmd {
				case "WORKDIR":
					workdir = joinDir(workdir, expand(ins.args))
				case "COPY":
					_, srcs, dst := copyArgs(expand(ins.args))
					if !path.IsAbs(dst) {
						dst = path.Join(workdir, dst) + "/"
					}
					target := filepath.Join(ctxDir, filepath.FromSlash(dst))
					if strings.HasSuffix(dst, "/") {
						target += string(filepath.Separator)
					}
					for _, src := range srcs {
						mustCopyContext(t, root, src, target, ignore)
					}
				}
			}
			out := filepath.Join(t.TempDir(), "service")
			cmd := exec.Command(goBin, "build", "-trimpath", "-o", out, "./cmd/"+svc.name) //nolint:gosec // the go tool on a service name from services/*/cmd
			cmd.Dir = filepath.Join(ctxDir, filepath.FromSlash(workdir))
			cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
			cmd.Env = append(cmd.Env, build.envPairs()...)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build in the image's build stage (%s, env %v) fails:\n%s", workdir, build.envPairs(), b)
			}
		})
	}
}

// mustCopyContext copies src (relative to root: a file, or a directory
// whose contents are copied) to dst as Docker's COPY does; dst ending in a
// separator is a directory. Paths .dockerignore excludes are skipped.
func mustCopyContext(tb testing.TB, root, src, dst string, ignore dockerignore) {
	tb.Helper()
	srcAbs := filepath.Join(root, filepath.FromSlash(src))
	info, err := os.Stat(srcAbs)
	if err != nil {
		tb.Fatalf("COPY %s: %v", src, err)
	}
	if !info.IsDir() {
		if strings.HasSuffix(dst, string(filepath.Separator)) {
			dst = filepath.Join(dst, filepath.Base(srcAbs))
		}
		mustCopyFile(tb, srcAbs, dst)
		return
	}
	err = filepath.WalkDir(srcAbs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if ignore.match(filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		inner, err := filepath.Rel(srcAbs, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, inner)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		mustCopyFile(tb, p, target)
		return nil
	})
	if err != nil {
		tb.Fatalf("COPY %s: %v", src, err)
	}
}

func mustCopyFile(tb testing.TB, src, dst string) {
	tb.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil { //nolint:gosec // dst is under the test's temporary directory
		tb.Fatal(err)
	}
}

// dockerignore holds the patterns of a .dockerignore file.
type dockerignore []string

// mustDockerignore reads root/.dockerignore. Only the pattern forms that
// match reads correctly are accepted: no exceptions (!).
func mustDockerignore(tb testing.TB, root string) dockerignore {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		tb.Fatal(err)
	}
	var pats dockerignore
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			tb.Fatalf(".dockerignore: exception %q is not understood by this test", l)
		}
		pats = append(pats, path.Clean(strings.TrimPrefix(l, "/")))
	}
	return pats
}

// match reports whether rel (slash-separated, relative to the context) or
// one of its parent directories matches a pattern: a path.Match pattern
// anchored at the context root, or **/pattern at any depth.
func (d dockerignore) match(rel string) bool {
	segs := strings.Split(rel, "/")
	for n := 1; n <= len(segs); n++ {
		for _, p := range d {
			if matchSegments(p, segs[:n]) {
				return true
			}
		}
	}
	return false
}

func matchSegments(pattern string, segs []string) bool {
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		for i := range segs {
			if matchSegments(rest, segs[i:]) {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pattern, strings.Join(segs, "/"))
	return ok
}
