package deploy

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"sigs.k8s.io/yaml"
)

// localPorts are the ports deploy/local/compose-test exports, read from the
// script: VAR=port.
func localPorts(tb testing.TB) map[string]string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(tb), "deploy", "local", "compose-test"))
	if err != nil {
		tb.Fatal(err)
	}
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`\b([A-Z_]+_PORT)=(\d+)\b`).FindAllStringSubmatch(string(b), -1) {
		env[m[1]] = m[2]
	}
	if len(env) == 0 {
		tb.Fatal("deploy/local/compose-test exports no *_PORT")
	}
	return env
}

// TestComposeHealthchecks: every long-running compose service has a
// healthcheck (compose-test waits for them), the services' is orderly-probe
// (in their image), and the services wait for the collector's.
func TestComposeHealthchecks(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t, nil)
	services := []types.ServiceConfig{}
	for _, s := range p.Services {
		services = append(services, s)
	}
	for _, s := range p.DisabledServices {
		services = append(services, s)
	}
	for _, s := range services {
		if s.Name == seedService {
			if s.Restart != "no" {
				t.Errorf("%s: restart %q, want \"no\" (a one-shot)", s.Name, s.Restart)
			}
			continue
		}
		if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) < 2 {
			t.Errorf("service %s has no healthcheck", s.Name)
		}
	}
	for _, svc := range mustAppServices(t) {
		s := p.Services[svc.name]
		if s.HealthCheck == nil || !slices.Equal(s.HealthCheck.Test, []string{"CMD", "orderly-probe"}) {
			t.Errorf("%s: healthcheck %v, want [CMD orderly-probe] (/readyz on HTTP_ADDR's port)", svc.name, s.HealthCheck)
		}
	}
	if _, ok := p.DisabledServices[grafanaService]; !ok {
		t.Errorf("no %s service under a profile", grafanaService)
	}
	seed := p.Services[seedService]
	if seed.Entrypoint == nil || seed.Entrypoint[0] != "orderly-seed" || seed.DependsOn["inventory"].Condition != types.ServiceConditionHealthy {
		t.Errorf("seed: entrypoint %v, depends_on %v; want orderly-seed once inventory is healthy", seed.Entrypoint, seed.DependsOn)
	}
}

// TestComposeLocal loads docker-compose.yml with deploy/local/compose.yml
// and compose-test's ports, as make compose-test does: every container is
// on the host's network, every address is 127.0.0.1 (nothing may reach a
// private-range address), no port is a laptop default another server on
// this machine holds, and the services start with those settings.
func TestComposeLocal(t *testing.T) {
	t.Parallel()
	ports := localPorts(t)
	p := mustLoadComposeFiles(t, ports, "docker-compose.yml", "deploy/local/compose.yml")
	names := p.ServiceNames()
	for name := range p.DisabledServices {
		names = append(names, name)
	}
	hostPort := regexp.MustCompile(`^(?:[a-z]+://)?(?:[^@/]+@)?([a-zA-Z0-9.-]*):(\d+)`)
	for _, name := range names {
		s, ok := p.Services[name]
		if !ok {
			s = p.DisabledServices[name]
		}
		if s.NetworkMode != "host" {
			t.Errorf("%s: network_mode %q, want host", name, s.NetworkMode)
		}
		for k, v := range s.Environment {
			if v == nil {
				continue
			}
			if m := hostPort.FindStringSubmatch(*v); m != nil && m[1] != "127.0.0.1" {
				t.Errorf("%s: %s=%s is not at 127.0.0.1", name, k, *v)
			}
		}
		for _, c := range s.Command {
			if _, addr, ok := strings.Cut(c, "listen-address="); ok && !strings.HasPrefix(addr, "127.0.0.1:") {
				t.Errorf("%s: listens on %s, want 127.0.0.1", name, addr)
			}
		}
	}
	// The host's own servers (docs/deploy.md): compose-test must not take
	// their ports.
	taken := []string{"5432", "5672", "4369", "25672", "15672", "6379", "4222", "3306", "1883"}
	for v, port := range ports {
		if slices.Contains(taken, port) {
			t.Errorf("compose-test puts %s on %s, which this machine's own servers use", v, port)
		}
	}
	rmq := composeEnv(t, p.Services["rabbitmq"])
	if rmq["RABBITMQ_NODENAME"] == "" || strings.HasPrefix(rmq["RABBITMQ_NODENAME"], "rabbit@") {
		t.Errorf("rabbitmq: RABBITMQ_NODENAME %q; want a node of its own, not the host broker's rabbit@", rmq["RABBITMQ_NODENAME"])
	}

	for _, svc := range mustAppServices(t) {
		env := composeEnv(t, p.Services[svc.name])
		cfg, err := loadConfig(t, svc, env)
		if err != nil {
			t.Errorf("%s would not start: %v", svc.name, err)
			continue
		}
		want := "127.0.0.1:" + ports[strings.ToUpper(svc.name)+"_PORT"]
		if cfg.HTTPAddr != want {
			t.Errorf("%s: HTTP_ADDR %s, want %s (compose-test's %s_PORT)", svc.name, cfg.HTTPAddr, want, strings.ToUpper(svc.name))
		}
		for k, raw := range map[string]string{"DATABASE_URL": cfg.DatabaseURL, "AMQP_URL": cfg.AMQPURL, "OTEL_EXPORTER_OTLP_ENDPOINT": cfg.OTLPEndpoint} {
			u, err := url.Parse(raw)
			if err != nil || u.Hostname() != "127.0.0.1" {
				t.Errorf("%s: %s is not at 127.0.0.1", svc.name, k)
			}
		}
		if b := p.Services[svc.name].Build; b == nil || b.Network != "host" {
			t.Errorf("%s: builds without network host (dockerd runs with no bridge)", svc.name)
		}
	}
}

// promConfig is the part of a Prometheus configuration read here.
type promConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// TestPrometheusScrapesEveryService: both Prometheus configurations scrape
// every registry service, as a job named after it (the alert rules group
// by job), at the address each compose file gives it, and load the alert
// rules.
func TestPrometheusScrapesEveryService(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	ports := localPorts(t)
	for file, target := range map[string]func(name string, port int) string{
		"deploy/prometheus/prometheus.yml": func(name string, port int) string { return net.JoinHostPort(name, strconv.Itoa(port)) },
		"deploy/local/prometheus.yml": func(name string, _ int) string {
			return net.JoinHostPort("127.0.0.1", ports[strings.ToUpper(name)+"_PORT"])
		},
	} {
		raw, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			t.Fatal(err)
		}
		var cfg promConfig
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !slices.ContainsFunc(cfg.RuleFiles, func(f string) bool { return filepath.Base(f) == "alerts.yml" }) {
			t.Errorf("%s: rule_files %v lacks alerts.yml", file, cfg.RuleFiles)
		}
		got := map[string]string{}
		for _, sc := range cfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				for _, tg := range st.Targets {
					got[sc.JobName] = tg
				}
			}
		}
		for _, svc := range mustAppServices(t) {
			if want := target(svc.name, svc.port); got[svc.name] != want {
				t.Errorf("%s: service %s scraped at %q, want %q", file, svc.name, got[svc.name], want)
			}
		}
		if len(got) != len(mustAppServices(t)) {
			t.Errorf("%s scrapes %v, want exactly the registry's services", file, got)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "deploy", "prometheus", "alerts.yml")); err != nil {
		t.Error(err)
	}
}
