package telemetry

import (
	"context"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
)

func TestReadBuild(t *testing.T) {
	t.Parallel()
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	for name, tc := range map[string]struct {
		linked, linkedRev string
		info              *debug.BuildInfo
		want              Build
	}{
		"linker wins": {
			linked: "v1.4.0-3-gabc",
			info:   &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.3.0"}, Settings: vcs("false")},
			want:   Build{Version: "v1.4.0-3-gabc", Revision: rev, GoVersion: "go1.26.0"},
		},
		"linker's revision wins": {
			linked: "v1.4.0", linkedRev: "fedcba",
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Settings: vcs("false")},
			want: Build{Version: "v1.4.0", Revision: "fedcba", GoVersion: "go1.26.0"},
		},
		"module version": {
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.3.0"}, Settings: vcs("false")},
			want: Build{Version: "v1.3.0", Revision: rev, GoVersion: "go1.26.0"},
		},
		"devel falls back to the revision": {
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			want: Build{Version: "0123456789ab-dirty", Revision: rev, GoVersion: "go1.26.0"},
		},
		"nothing recorded": {
			info: &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}},
			want: Build{Version: "unknown", Revision: "unknown", GoVersion: "go1.26.0"},
		},
		"no build info": {
			want: Build{Version: "unknown", Revision: "unknown", GoVersion: runtime.Version()},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if diff := cmp.Diff(tc.want, readBuild(tc.linked, tc.linkedRev, tc.info)); diff != "" {
				t.Errorf("readBuild (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseResourceAttributes(t *testing.T) {
	t.Parallel()
	got, err := ParseResourceAttributes(" deployment.environment.name = staging,team=payments%20ops,empty=")
	if err != nil {
		t.Fatalf("ParseResourceAttributes: %v", err)
	}
	want := []attribute.KeyValue{
		attribute.String("deployment.environment.name", "staging"),
		attribute.String("team", "payments ops"),
		attribute.String("empty", ""),
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b attribute.KeyValue) bool { return a == b })); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"staging", "=x", "a=1,,b=2", "a=%zz"} {
		if _, err := ParseResourceAttributes(bad); err == nil {
			t.Errorf("ParseResourceAttributes(%q) = nil error, want one", bad)
		}
	}
	if got, err := ParseResourceAttributes(""); err != nil || got != nil {
		t.Errorf("ParseResourceAttributes(\"\") = %v, %v; want nothing", got, err)
	}
}

func TestNewResourceTakesEnvironmentAttributes(t *testing.T) {
	t.Parallel()
	res, err := newResource(context.Background(), "order", "v1.2.3",
		"deployment.environment.name=staging,service.name=impostor,k8s.pod.name=order-7d9f")
	if err != nil {
		t.Fatalf("newResource: %v", err)
	}
	got := map[string]string{}
	for _, kv := range res.Attributes() {
		got[string(kv.Key)] = kv.Value.String()
	}
	for k, v := range map[string]string{
		"deployment.environment.name": "staging",
		"k8s.pod.name":                "order-7d9f",
		// The service's own name and version win over the environment's.
		"service.name":    "order",
		"service.version": "v1.2.3",
	} {
		if got[k] != v {
			t.Errorf("resource %s = %q, want %q", k, got[k], v)
		}
	}
	if _, err := newResource(context.Background(), "order", "v1", "oops"); err == nil {
		t.Error("newResource with a malformed attribute list = nil error, want one")
	}
}

// TestSetupExposesBuildInfo checks what an operator reads off /metrics:
// orderly_build_info with the service's labels, and the resource
// attributes of OTEL_RESOURCE_ATTRIBUTES on target_info.
func TestSetupExposesBuildInfo(t *testing.T) {
	tel, _ := mustSetup(t, Config{Service: "payment", Version: "v9.9.9", ResourceAttributes: "deployment.environment.name=staging"})
	// target_info comes with the OpenTelemetry metrics, so there must be one.
	counter, err := tel.MeterProvider.Meter("test").Int64Counter("payments.made")
	if err != nil {
		t.Fatalf("Int64Counter: %v", err)
	}
	counter.Add(context.Background(), 1)

	families, err := tel.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}

	build := byName["orderly_build_info"]
	if build == nil || build.GetType() != dto.MetricType_GAUGE || len(build.GetMetric()) != 1 {
		t.Fatalf("orderly_build_info = %v, want one gauge", build)
	}
	m := build.GetMetric()[0]
	if v := m.GetGauge().GetValue(); v != 1 {
		t.Errorf("orderly_build_info = %v, want 1", v)
	}
	wantLabels := map[string]string{
		"service":   "payment",
		"version":   "v9.9.9",
		"revision":  ReadBuild().Revision,
		"goversion": ReadBuild().GoVersion,
	}
	if diff := cmp.Diff(wantLabels, labelMap(m)); diff != "" {
		t.Errorf("orderly_build_info labels (-want +got):\n%s", diff)
	}

	target := byName["target_info"]
	if target == nil || len(target.GetMetric()) != 1 {
		t.Fatalf("target_info = %v, want one series", target)
	}
	labels := labelMap(target.GetMetric()[0])
	for k, v := range map[string]string{
		"deployment_environment_name": "staging",
		"service_name":                "payment",
		"service_version":             "v9.9.9",
	} {
		if labels[k] != v {
			t.Errorf("target_info{%s} = %q, want %q (labels %v)", k, labels[k], v, labels)
		}
	}
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestLinkerVersion builds a binary the way `make build` and
// deploy/Dockerfile do, so that renaming the variable -X sets (which the
// linker would ignore without a word) fails here.
func TestLinkerVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "buildinfo")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/orderly/orderly/pkg/telemetry.version=v0.0.0-test -X github.com/orderly/orderly/pkg/telemetry.revision=abc123",
		"./testdata/buildinfo")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != "v0.0.0-test abc123" {
		t.Errorf("version and revision %q, want the linker's v0.0.0-test abc123", got)
	}
}
