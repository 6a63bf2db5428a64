package telemetry

import (
	"fmt"
	"net/url"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
)

// version and revision are the build's version and commit, stamped by the
// linker:
//
//	go build -ldflags "-X github.com/orderly/orderly/pkg/telemetry.version=$(git describe --tags --always --dirty)
//	                   -X github.com/orderly/orderly/pkg/telemetry.revision=$(git rev-parse HEAD)"
//
// `make build` and deploy/Dockerfile do. The go command records the commit
// itself only outside a workspace and with .git at hand, which neither
// `make build` (go.work) nor the image build (no .git in the context) has.
// They are variables only because -X can set nothing else; nothing assigns
// them at run time.
var version, revision string

// unknown is a build-info label whose value the binary does not carry, so
// that the label is still there: Prometheus drops empty labels, and a query
// grouping by revision would then miss the series.
const unknown = "unknown"

// Build identifies the running binary: service.version on every span and
// metric, and the labels of orderly_build_info.
type Build struct {
	// Version is the linker's (see version), else the main module's version
	// as the go command recorded it, else the VCS revision it recorded
	// (shortened, "-dirty" when the tree had changes), else "unknown".
	Version string
	// Revision is the commit: the linker's (see revision), else the one
	// the go command recorded (vcs.revision), else "unknown".
	Revision string
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string
}

// ReadBuild returns the running binary's Build, from the linker's version
// and what the go command recorded in the binary (debug.ReadBuildInfo).
func ReadBuild() Build {
	info, _ := debug.ReadBuildInfo()
	return readBuild(version, revision, info)
}

// readBuild is ReadBuild for a given linker version and revision and
// build info (nil when the binary has none).
func readBuild(linkedVersion, linkedRevision string, info *debug.BuildInfo) Build {
	b := Build{Version: linkedVersion, Revision: unknown, GoVersion: runtime.Version()}
	var modified bool
	if info != nil {
		if info.GoVersion != "" {
			b.GoVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if linkedRevision == "" {
					b.Revision = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		// "(devel)" is what a build in a workspace or without a tag
		// records: it names no build.
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
	}
	if linkedRevision != "" {
		b.Revision = linkedRevision
	}
	if b.Version == "" && b.Revision != unknown {
		b.Version = b.Revision[:min(12, len(b.Revision))]
		if modified {
			b.Version += "-dirty"
		}
	}
	if b.Version == "" {
		b.Version = unknown
	}
	return b
}

// buildInfoGauge is orderly_build_info: always 1, its labels saying which
// build of which service answers, so that a dashboard can show what runs
// where and a query can join it to other series during a rollout.
func buildInfoGauge(service string, b Build) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "orderly_build_info",
		Help: "Always 1; the labels name the build of the service that serves these metrics.",
		ConstLabels: prometheus.Labels{
			"service":   service,
			"version":   b.Version,
			"revision":  b.Revision,
			"goversion": b.GoVersion,
		},
	})
	g.Set(1)
	return g
}

// ParseResourceAttributes parses s, in the format of
// OTEL_RESOURCE_ATTRIBUTES: comma-separated key=value pairs whose values
// are percent-encoded, as in "deployment.environment.name=staging,
// k8s.pod.name=order-7d9f". Spaces around keys and values are dropped. It
// returns an error naming the first pair that has no "=", an empty key or
// a bad percent-encoding; the OpenTelemetry SDK would drop such a pair and
// keep going, but a typo in a deployment's settings is better caught at
// start.
func ParseResourceAttributes(s string) ([]attribute.KeyValue, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var attrs []attribute.KeyValue
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", strings.TrimSpace(pair))
		}
		val, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("value of %s: %w", k, err)
		}
		attrs = append(attrs, attribute.String(k, val))
	}
	return attrs, nil
}
