package deploy

import (
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"

	"github.com/orderly/orderly/pkg/boot"
)

// infraImages are the images of the compose services other than Orderly's
// own, by service name: the repository each must come from, and a prefix
// its tag must have (the versions the code is tested against).
// Jaeger v2 runs both Jaeger and the collector (ADR 0018); Prometheus is
// the version of Debian's package, which the local images use.
var infraImages = map[string]struct{ name, tagPrefix string }{
	"postgres":       {"postgres", "15"},
	"rabbitmq":       {"rabbitmq", "3.10"},
	"otel-collector": {"jaegertracing/jaeger", "2."},
	"jaeger":         {"jaegertracing/jaeger", "2."},
	"prometheus":     {"prom/prometheus", "v2.42"},
}

// seedService is the one-shot service that puts the demo catalog on sale;
// grafanaService runs only under its profile (Debian has no package to
// build a local image from).
const (
	seedService    = "seed"
	grafanaService = "grafana"
)

// mustLoadCompose loads docker-compose.yml as `docker compose` does, with
// environment as the caller's environment (for ${VAR} interpolation), and
// validates it against the Compose schema.
func mustLoadCompose(tb testing.TB, environment map[string]string) *types.Project {
	tb.Helper()
	return mustLoadComposeFiles(tb, environment, "docker-compose.yml")
}

// mustLoadComposeFiles loads files (relative to the repository root), each
// overriding the ones before, as `docker compose -f … -f …` does.
func mustLoadComposeFiles(tb testing.TB, environment map[string]string, files ...string) *types.Project {
	tb.Helper()
	root := repoRoot(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cfs []types.ConfigFile
	for _, f := range files {
		cfs = append(cfs, types.ConfigFile{Filename: filepath.Join(root, f)})
	}
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: cfs,
		Environment: environment,
	}, func(o *loader.Options) { o.SetProjectName("orderly", true) })
	if err != nil {
		tb.Fatalf("load %v: %v", files, err)
	}
	return p
}

// composeEnv returns a compose service's environment as a map; a variable
// without a value (passed through from the caller) is an error.
func composeEnv(tb testing.TB, s types.ServiceConfig) map[string]string {
	tb.Helper()
	env := make(map[string]string)
	for k, v := range s.Environment {
		if v == nil {
			tb.Errorf("service %s: %s has no value", s.Name, k)
			continue
		}
		env[k] = *v
	}
	return env
}

func TestComposeServices(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t, nil)
	want := []string{seedService}
	for name := range infraImages {
		want = append(want, name)
	}
	for _, svc := range mustAppServices(t) {
		want = append(want, svc.name)
	}
	got := p.ServiceNames()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("compose services = %v, want %v", got, want)
	}
	for name, s := range p.Services {
		if err := checkPinned(s.Image); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
		if w, ok := infraImages[name]; ok {
			if got := imageName(s.Image); got != w.name {
				t.Errorf("service %s runs image %s, want %s", name, got, w.name)
			}
			if tag := imageTag(s.Image); !strings.HasPrefix(tag, w.tagPrefix) {
				t.Errorf("service %s runs %s, want a tag starting with %q", name, s.Image, w.tagPrefix)
			}
		}
	}
	if tag := imageTag(p.Services["rabbitmq"].Image); !strings.HasSuffix(tag, "-management") {
		t.Errorf("rabbitmq image %s is not a -management variant (the UI on 15672)", p.Services["rabbitmq"].Image)
	}
	for svc, port := range map[string]uint32{"rabbitmq": 15672, "jaeger": 16686} {
		checkPublished(t, p.Services[svc], port)
	}
}

// checkPublished reports a compose service that does not publish its
// container port target on the same host port.
func checkPublished(tb testing.TB, s types.ServiceConfig, target uint32) {
	tb.Helper()
	for _, p := range s.Ports {
		if p.Target == target {
			if p.Published != strconv.Itoa(int(target)) {
				tb.Errorf("service %s publishes port %d on host port %q, want %d", s.Name, target, p.Published, target)
			}
			return
		}
	}
	tb.Errorf("service %s does not publish port %d", s.Name, target)
}

func TestComposeAppServices(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	p := mustLoadCompose(t, nil)
	for _, svc := range mustAppServices(t) {
		t.Run(svc.name, func(t *testing.T) {
			s, ok := p.Services[svc.name]
			if !ok {
				t.Fatalf("no compose service %s", svc.name)
			}

			// Built from the shared Dockerfile, for this service.
			if s.Build == nil {
				t.Fatalf("not built from deploy/Dockerfile")
			}
			if s.Build.Context != root {
				t.Errorf("build context %s, want the repository root %s", s.Build.Context, root)
			}
			if s.Build.Dockerfile != "deploy/Dockerfile" {
				t.Errorf("dockerfile %q, want deploy/Dockerfile", s.Build.Dockerfile)
			}
			for arg, want := range map[string]string{"SERVICE": svc.name, "PORT": strconv.Itoa(svc.port)} {
				if got := s.Build.Args[arg]; got == nil || *got != want {
					t.Errorf("build arg %s = %s, want %s", arg, deref(got), want)
				}
			}
			if name := imageName(s.Image); !strings.HasSuffix(name, "/"+svc.name) {
				t.Errorf("image %s is not named after the service", s.Image)
			}
			checkPublished(t, s, uint32(svc.port))

			// The settings, as the service parses them.
			env := composeEnv(t, s)
			checkKnownVars(t, "compose service "+svc.name, svc, env)
			for _, k := range []string{"DATABASE_URL", "AMQP_URL", "AUTH_JWT_SECRET", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
				if _, ok := env[k]; !ok {
					t.Errorf("%s is not set", k)
				}
			}
			cfg, err := loadConfig(t, svc, env)
			if err != nil {
				t.Fatalf("the service would not start: %v", err)
			}
			if port, err := addrPort(cfg.HTTPAddr); err != nil || port != svc.port {
				t.Errorf("HTTP_ADDR %q does not listen on the published port %d", cfg.HTTPAddr, svc.port)
			}
			checkListensOnNetwork(t, "HTTP_ADDR", cfg.HTTPAddr)
			checkURL(t, "DATABASE_URL", cfg.DatabaseURL, "postgres", "/orderly_"+svc.name)
			checkURL(t, "AMQP_URL", cfg.AMQPURL, "rabbitmq", "")
			checkURL(t, "OTEL_EXPORTER_OTLP_ENDPOINT", cfg.OTLPEndpoint, "otel-collector", "")
			if env["ORDERLY_ENV"] != boot.EnvDevelopment || cfg.JWTSecret != boot.DevelopmentJWTSecret {
				t.Errorf("without settings from the caller, ORDERLY_ENV is %q and the secret %q; want development set explicitly (production is the services' default) and the development secret", env["ORDERLY_ENV"], cfg.JWTSecret)
			}

			// Start order and shutdown.
			for dep, cond := range map[string]string{
				"postgres":       types.ServiceConditionHealthy,
				"rabbitmq":       types.ServiceConditionHealthy,
				"otel-collector": types.ServiceConditionStarted,
			} {
				if got := s.DependsOn[dep].Condition; got != cond {
					t.Errorf("depends_on %s: condition %q, want %q", dep, got, cond)
				}
			}
			switch {
			case s.StopGracePeriod == nil:
				t.Errorf("no stop_grace_period: docker's default (10s) is shorter than SHUTDOWN_TIMEOUT (%s)", cfg.ShutdownTimeout)
			case time.Duration(*s.StopGracePeriod) <= cfg.ShutdownTimeout:
				t.Errorf("stop_grace_period %s is not longer than SHUTDOWN_TIMEOUT %s", time.Duration(*s.StopGracePeriod), cfg.ShutdownTimeout)
			}
		})
	}
}

// checkURL reports a URL whose host is not host or, when path is not
// empty, whose path is not path.
func checkURL(tb testing.TB, key, raw, host, path string) {
	tb.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		tb.Errorf("%s: %v", key, err)
		return
	}
	if u.Hostname() != host {
		tb.Errorf("%s %s: host %q, want %q", key, u.Redacted(), u.Hostname(), host)
	}
	if path != "" && u.Path != path {
		tb.Errorf("%s %s: path %q, want %q", key, u.Redacted(), u.Path, path)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<unset>"
	}
	return *s
}

// TestComposeCallerSettings checks that settings in the caller's
// environment reach every service. Production mode reaches them too, and
// then refuses what compose can only offer a laptop: plain connections to
// the broker and the database (the secret, the caller's, is accepted).
func TestComposeCallerSettings(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t, map[string]string{
		"AUTH_JWT_SECRET":   strongSecret,
		"AUTH_JWT_ISSUER":   productionIdentity["AUTH_JWT_ISSUER"],
		"AUTH_JWT_AUDIENCE": productionIdentity["AUTH_JWT_AUDIENCE"],
		"TRACKING_SECRET":   strongTrackingSecret,
		"LOG_LEVEL":         "debug",
	})
	for _, svc := range mustAppServices(t) {
		cfg, err := loadConfig(t, svc, composeEnv(t, p.Services[svc.name]))
		if err != nil {
			t.Errorf("%s: would not start with the caller's secret: %v", svc.name, err)
			continue
		}
		if cfg.JWTSecret != strongSecret || cfg.Env != boot.EnvDevelopment || cfg.LogLevel != "debug" ||
			cfg.JWTIssuer != productionIdentity["AUTH_JWT_ISSUER"] || cfg.JWTAudience != productionIdentity["AUTH_JWT_AUDIENCE"] {
			t.Errorf("%s: the caller's AUTH_JWT_SECRET, AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE and LOG_LEVEL did not reach it", svc.name)
		}
	}
	p = mustLoadCompose(t, map[string]string{
		"AUTH_JWT_SECRET":   strongSecret,
		"AUTH_JWT_ISSUER":   productionIdentity["AUTH_JWT_ISSUER"],
		"AUTH_JWT_AUDIENCE": productionIdentity["AUTH_JWT_AUDIENCE"],
		"TRACKING_SECRET":   strongTrackingSecret,
		"ORDERLY_ENV":       "production",
	})
	for _, svc := range mustAppServices(t) {
		_, err := loadConfig(t, svc, composeEnv(t, p.Services[svc.name]))
		if err == nil || !strings.Contains(err.Error(), "AMQP_URL:") || !strings.Contains(err.Error(), "DATABASE_URL:") ||
			strings.Contains(err.Error(), "AUTH_JWT_SECRET") {
			t.Errorf("%s in production: error %v, want the plain AMQP_URL and DATABASE_URL refused and the caller's secret accepted", svc.name, err)
		}
	}
}

// checkListensOnNetwork reports a listen address (the variable key) on a
// loopback address, which nothing outside the container could reach.
func checkListensOnNetwork(tb testing.TB, key, addr string) {
	tb.Helper()
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Errorf("%s %q: %v", key, addr, err)
		return
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		tb.Errorf("%s %q listens on loopback only; a deployment must set :port or 0.0.0.0:port", key, addr)
	}
}

func TestComposeInfrastructure(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	p := mustLoadCompose(t, nil)

	pgs := p.Services["postgres"]
	checkHealthcheck(t, pgs, "pg_isready")
	initScript := ""
	for _, v := range pgs.Volumes {
		if strings.HasPrefix(v.Target, "/docker-entrypoint-initdb.d/") {
			initScript = v.Source
		}
	}
	if initScript == "" {
		t.Errorf("postgres: no init script mounted into /docker-entrypoint-initdb.d")
	} else {
		if !filepath.IsAbs(initScript) {
			initScript = filepath.Join(root, initScript)
		}
		sql, err := os.ReadFile(initScript)
		if err != nil {
			t.Fatalf("postgres init script: %v", err)
		}
		for _, svc := range mustAppServices(t) {
			re := regexp.MustCompile(`(?im)^\s*CREATE DATABASE\s+"?orderly_` + svc.name + `"?\s*;`)
			if !re.Match(sql) {
				t.Errorf("%s does not create database orderly_%s", initScript, svc.name)
			}
		}
	}

	checkHealthcheck(t, p.Services["rabbitmq"], "rabbitmq-diagnostics", "ping")

	col := p.Services["otel-collector"]
	if col.DependsOn["jaeger"].Condition == "" {
		t.Errorf("otel-collector does not depend on jaeger")
	}
	cfgPath := ""
	for _, v := range col.Volumes {
		if slices.Contains(col.Command, "--config="+v.Target) {
			cfgPath = v.Source
		}
	}
	if cfgPath == "" {
		t.Fatalf("otel-collector: no --config flag naming a mounted file (command %q)", col.Command)
	}
	if !filepath.IsAbs(cfgPath) {
		cfgPath = filepath.Join(root, cfgPath)
	}
	if want := filepath.Join(root, "deploy", "otel-collector.yaml"); cfgPath != want {
		t.Errorf("otel-collector config is %s, want %s", cfgPath, want)
	}
	checkCollectorConfig(t, cfgPath, p)
}

// checkHealthcheck reports a compose service without a healthcheck whose
// command contains every word of want.
func checkHealthcheck(tb testing.TB, s types.ServiceConfig, want ...string) {
	tb.Helper()
	if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 {
		tb.Errorf("service %s has no healthcheck", s.Name)
		return
	}
	for _, w := range want {
		if !slices.Contains(s.HealthCheck.Test, w) {
			tb.Errorf("service %s: healthcheck %q does not run %s", s.Name, s.HealthCheck.Test, w)
		}
	}
}

// collectorConfig is the part of an OpenTelemetry collector configuration
// the checks below read.
type collectorConfig struct {
	Receivers map[string]struct {
		Protocols map[string]struct {
			Endpoint string `json:"endpoint"`
		} `json:"protocols"`
	} `json:"receivers"`
	Processors map[string]any `json:"processors"`
	Exporters  map[string]struct {
		Endpoint string `json:"endpoint"`
	} `json:"exporters"`
	Extensions map[string]any `json:"extensions"`
	Service    struct {
		Extensions []string `json:"extensions"`
		Pipelines  map[string]struct {
			Receivers  []string `json:"receivers"`
			Processors []string `json:"processors"`
			Exporters  []string `json:"exporters"`
		} `json:"pipelines"`
	} `json:"service"`
}

// checkCollectorConfig checks that the collector accepts OTLP/HTTP where
// the services send it, and that its traces pipeline is complete and ends
// at a compose service.
func checkCollectorConfig(tb testing.TB, path string, p *types.Project) {
	tb.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var cfg collectorConfig
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		tb.Fatalf("%s: %v", path, err)
	}

	// The services' OTEL_EXPORTER_OTLP_ENDPOINT port, on all interfaces.
	otlp := *p.Services["order"].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
	u, err := url.Parse(otlp)
	if err != nil {
		tb.Fatal(err)
	}
	if got, want := collectorDefault(cfg.Receivers["otlp"].Protocols["http"].Endpoint), "0.0.0.0:"+u.Port(); got != want {
		tb.Errorf("collector OTLP/HTTP receiver listens on %q, want %q (the services send to %s)", got, want, otlp)
	}

	traces, ok := cfg.Service.Pipelines["traces"]
	if !ok {
		tb.Fatalf("%s: no traces pipeline", path)
	}
	for _, r := range traces.Receivers {
		if _, ok := cfg.Receivers[r]; !ok {
			tb.Errorf("traces pipeline: receiver %s is not configured", r)
		}
	}
	for _, pr := range traces.Processors {
		if _, ok := cfg.Processors[pr]; !ok {
			tb.Errorf("traces pipeline: processor %s is not configured", pr)
		}
	}
	for _, e := range cfg.Service.Extensions {
		if _, ok := cfg.Extensions[e]; !ok {
			tb.Errorf("extension %s is not configured", e)
		}
	}
	toJaeger := false
	for _, e := range traces.Exporters {
		exp, ok := cfg.Exporters[e]
		if !ok {
			tb.Errorf("traces pipeline: exporter %s is not configured", e)
			continue
		}
		host, _, _ := strings.Cut(collectorDefault(exp.Endpoint), ":")
		if host == "jaeger" {
			toJaeger = true
		}
	}
	if !toJaeger {
		tb.Errorf("the traces pipeline exports to no endpoint on the jaeger service")
	}
}

// collectorDefault returns the value a collector setting takes when the
// environment variable it names is unset: the default of
// ${env:NAME:-default}, or the setting itself.
func collectorDefault(v string) string {
	if rest, ok := strings.CutPrefix(v, "${env:"); ok {
		if _, def, ok := strings.Cut(strings.TrimSuffix(rest, "}"), ":-"); ok {
			return def
		}
	}
	return v
}
