package deploy

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/orderly/orderly/pkg/boot"
)

// manifests are the objects a kustomization builds, decoded into the
// Kubernetes API types and keyed by name.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	pdbs        map[string]*policyv1.PodDisruptionBudget
}

// mustBuild runs kustomize on dir, as `kubectl apply -k dir` does, and
// decodes every object strictly (an unknown field, such as a misspelled
// probe, is an error). Kinds other than those in manifests are errors: the
// base deploys nothing else.
func mustBuild(tb testing.TB, dir string) manifests {
	tb.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		tb.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := manifests{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		configMaps:  map[string]*corev1.ConfigMap{},
		secrets:     map[string]*corev1.Secret{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
	}
	for _, r := range rm.Resources() {
		raw, err := r.AsYAML()
		if err != nil {
			tb.Fatal(err)
		}
		kind, name := r.GetKind(), r.GetName()
		switch kind {
		case "Deployment":
			m.deployments[name] = decodeStrict[appsv1.Deployment](tb, raw, kind, name)
		case "Service":
			m.services[name] = decodeStrict[corev1.Service](tb, raw, kind, name)
		case "ConfigMap":
			m.configMaps[name] = decodeStrict[corev1.ConfigMap](tb, raw, kind, name)
		case "Secret":
			m.secrets[name] = decodeStrict[corev1.Secret](tb, raw, kind, name)
		case "PodDisruptionBudget":
			m.pdbs[name] = decodeStrict[policyv1.PodDisruptionBudget](tb, raw, kind, name)
		default:
			tb.Errorf("%s: unexpected %s %s in the base", dir, kind, name)
		}
	}
	return m
}

// apiVersions are the API versions of the kinds the base deploys.
var apiVersions = map[string]string{
	"Deployment":          "apps/v1",
	"Service":             "v1",
	"ConfigMap":           "v1",
	"Secret":              "v1",
	"PodDisruptionBudget": "policy/v1",
}

// decodeStrict decodes one object, failing on unknown fields and on an
// apiVersion other than the one T belongs to.
func decodeStrict[T any](tb testing.TB, raw []byte, kind, name string) *T {
	tb.Helper()
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		tb.Fatalf("%s %s: %v", kind, name, err)
	}
	if want := apiVersions[kind]; meta.APIVersion != want {
		tb.Errorf("%s %s: apiVersion %s, want %s", kind, name, meta.APIVersion, want)
	}
	obj := new(T)
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		tb.Errorf("%s %s does not decode into the Kubernetes type: %v", kind, name, err)
	}
	return obj
}

// mustContainerEnv resolves the environment a container gets: envFrom
// ConfigMaps and Secrets, then env (literals and keys of ConfigMaps and
// Secrets), as the kubelet does. A reference to a missing object or key is
// an error: the pod would not start.
func mustContainerEnv(tb testing.TB, m manifests, c corev1.Container) map[string]string {
	tb.Helper()
	env := make(map[string]string)
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, ok := m.configMaps[from.ConfigMapRef.Name]
			if !ok {
				tb.Errorf("container %s: envFrom ConfigMap %s does not exist", c.Name, from.ConfigMapRef.Name)
				continue
			}
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		case from.SecretRef != nil:
			s, ok := m.secrets[from.SecretRef.Name]
			if !ok {
				tb.Errorf("container %s: envFrom Secret %s does not exist", c.Name, from.SecretRef.Name)
				continue
			}
			for k, v := range secretData(s) {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			if strings.Contains(e.Value, "$(") {
				tb.Errorf("container %s: %s uses $(VAR) expansion, which this test does not follow", c.Name, e.Name)
			}
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			s, ok := m.secrets[ref.Name]
			if !ok {
				tb.Errorf("container %s: %s: Secret %s does not exist", c.Name, e.Name, ref.Name)
				continue
			}
			v, ok := secretData(s)[ref.Key]
			if !ok {
				tb.Errorf("container %s: %s: Secret %s has no key %s", c.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			cm, ok := m.configMaps[ref.Name]
			if !ok {
				tb.Errorf("container %s: %s: ConfigMap %s does not exist", c.Name, e.Name, ref.Name)
				continue
			}
			v, ok := cm.Data[ref.Key]
			if !ok {
				tb.Errorf("container %s: %s: ConfigMap %s has no key %s", c.Name, e.Name, ref.Name, ref.Key)
			}
			env[e.Name] = v
		default:
			tb.Errorf("container %s: %s: a valueFrom this test does not follow", c.Name, e.Name)
		}
	}
	return env
}

// secretData returns a Secret's data and stringData, decoded.
func secretData(s *corev1.Secret) map[string]string {
	d := make(map[string]string)
	for k, v := range s.Data {
		d[k] = string(v)
	}
	for k, v := range s.StringData {
		d[k] = v
	}
	return d
}

func TestKustomizeBase(t *testing.T) {
	t.Parallel()
	m := mustBuild(t, filepath.Join(repoRoot(t), "deploy", "k8s"))
	rabbit := mustRabbitmqCluster(t)

	for _, svc := range mustAppServices(t) {
		t.Run(svc.name, func(t *testing.T) {
			d, ok := m.deployments[svc.name]
			if !ok {
				t.Fatalf("no Deployment %s", svc.name)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("replicas %s, want at least 2", replicasString(d.Spec.Replicas))
			}
			pod := d.Spec.Template
			podLabels := labels.Set(pod.Labels)
			if !selects(t, d.Spec.Selector, podLabels) {
				t.Errorf("the Deployment's selector does not select its own pods")
			}
			if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
				t.Errorf("pods do not set runAsNonRoot (the image runs as nonroot)")
			}
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]

			if err := checkPinned(c.Image); err != nil {
				t.Error(err)
			}
			if name := imageName(c.Image); !strings.HasSuffix(name, "/"+svc.name) {
				t.Errorf("image %s is not the %s image", c.Image, svc.name)
			}
			checkResources(t, c)

			// The settings, as the service parses them. The base's
			// placeholder secret must be refused; with a real one the
			// service starts.
			env := mustContainerEnv(t, m, c)
			checkKnownVars(t, "Deployment "+svc.name, svc, env)
			if _, err := loadConfig(t, svc, env); err == nil || !strings.Contains(err.Error(), "AUTH_JWT_SECRET") {
				t.Errorf("the base's placeholder AUTH_JWT_SECRET is not refused (LoadConfig error: %v)", err)
			}
			env["AUTH_JWT_SECRET"] = strongSecret
			if _, err := loadConfig(t, svc, env); err == nil || !strings.Contains(err.Error(), "AUTH_JWT_ISSUER") {
				t.Errorf("production without the identity provider's issuer is not refused (LoadConfig error: %v)", err)
			}
			maps.Copy(env, productionIdentity)
			// Only the services that mint or check tracking tokens get
			// their secret, and its placeholder is refused too.
			if _, has := env["TRACKING_SECRET"]; has != usesTracking(t, svc) {
				t.Errorf("TRACKING_SECRET set: %v; the service reads it: %v", has, usesTracking(t, svc))
			}
			if _, err := loadConfig(t, svc, env); usesTracking(t, svc) && (err == nil || !strings.Contains(err.Error(), "TRACKING_SECRET")) {
				t.Errorf("the base's placeholder TRACKING_SECRET is not refused (LoadConfig error: %v)", err)
			}
			env["TRACKING_SECRET"] = strongTrackingSecret
			cfg, err := loadConfig(t, svc, env)
			if err != nil {
				t.Fatalf("with real secrets and an issuer and audience, the service would not start: %v", err)
			}
			if cfg.Env != "production" {
				t.Errorf("ORDERLY_ENV is %s, want production", cfg.Env)
			}
			if port, err := addrPort(cfg.HTTPAddr); err != nil || port != svc.port || containerPort(c, intstr.FromString("http")) != svc.port {
				t.Errorf("HTTP_ADDR %q and the container port named http do not both use port %d", cfg.HTTPAddr, svc.port)
			}
			checkListensOnNetwork(t, "HTTP_ADDR", cfg.HTTPAddr)
			checkOperationalPorts(t, pod, c, cfg, svc)
			if env["ORDERLY_ENV"] != "production" {
				t.Errorf("ORDERLY_ENV is %q, want production set explicitly", env["ORDERLY_ENV"])
			}
			checkURLPath(t, "DATABASE_URL", cfg.DatabaseURL, "/orderly_"+svc.name)
			if u, err := url.Parse(cfg.AMQPURL); err != nil || u.Hostname() != rabbit.Metadata.Name {
				t.Errorf("AMQP_URL does not point at the RabbitMQ cluster's service %s", rabbit.Metadata.Name)
			}

			// Draining: the kubelet waits longer than the service's own
			// shutdown, which starts with SHUTDOWN_DELAY of 503 on /readyz
			// (there is no preStop hook).
			if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
				t.Errorf("a preStop hook; the design relies on SHUTDOWN_DELAY instead")
			}
			if cfg.ShutdownDelay <= 0 {
				t.Errorf("SHUTDOWN_DELAY is %s: endpoints would still route to a pod that stopped accepting", cfg.ShutdownDelay)
			}
			grace := 30 * time.Second // the Kubernetes default
			if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
				grace = time.Duration(*g) * time.Second
			}
			if grace <= cfg.ShutdownTimeout {
				t.Errorf("terminationGracePeriodSeconds %s is not longer than SHUTDOWN_TIMEOUT %s", grace, cfg.ShutdownTimeout)
			}

			// A Service in front of the pods, on the same port.
			s, ok := m.services[svc.name]
			switch {
			case !ok:
				t.Errorf("no Service %s", svc.name)
			case !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) || len(s.Spec.Selector) == 0:
				t.Errorf("Service %s does not select the Deployment's pods", svc.name)
			case len(s.Spec.Ports) == 0 || containerPort(c, s.Spec.Ports[0].TargetPort) != svc.port:
				t.Errorf("Service %s does not target port %d", svc.name, svc.port)
			default:
				// Readiness details and metrics stay inside the cluster.
				for _, p := range s.Spec.Ports {
					if cfg.AdminAddr != "" && containerPort(c, p.TargetPort) == mustAddrPort(t, cfg.AdminAddr) {
						t.Errorf("Service %s exposes the admin port %d", svc.name, containerPort(c, p.TargetPort))
					}
				}
			}

			// A disruption budget that keeps one pod and lets one go.
			pdb, ok := m.pdbs[svc.name]
			if !ok {
				t.Fatalf("no PodDisruptionBudget %s", svc.name)
			}
			if !selects(t, pdb.Spec.Selector, podLabels) {
				t.Errorf("PodDisruptionBudget %s does not select the Deployment's pods", svc.name)
			}
			if err := checkBudget(pdb.Spec, int(*d.Spec.Replicas)); err != nil {
				t.Errorf("PodDisruptionBudget %s: %v", svc.name, err)
			}
			if err := checkRollout(d.Spec.Strategy, int(*d.Spec.Replicas)); err != nil {
				t.Errorf("Deployment %s: %v", svc.name, err)
			}
		})
	}
}

// TestKustomizeDashboardSources: notification's dashboard reads every
// registry service's /metrics through that service's cluster-internal
// <name>-metrics Service, which selects its pods and targets only their
// admin port; no other Deployment is given the setting.
func TestKustomizeDashboardSources(t *testing.T) {
	t.Parallel()
	m := mustBuild(t, filepath.Join(repoRoot(t), "deploy", "k8s"))
	sources := map[string]string{}
	for name, d := range m.deployments {
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name != "NOTIFICATION_DASHBOARD_SOURCES" {
				continue
			}
			if name != "notification" {
				t.Errorf("Deployment %s sets NOTIFICATION_DASHBOARD_SOURCES", name)
				continue
			}
			for _, kv := range strings.Split(e.Value, ",") {
				k, v, _ := strings.Cut(kv, "=")
				sources[k] = v
			}
		}
	}
	for _, svc := range mustAppServices(t) {
		d, ok := m.deployments[svc.name]
		if !ok {
			t.Fatalf("no Deployment %s", svc.name)
		}
		c := d.Spec.Template.Spec.Containers[0]
		admin := containerPort(c, intstr.FromString("admin"))
		s, ok := m.services[svc.name+"-metrics"]
		switch {
		case !ok:
			t.Errorf("no Service %s-metrics", svc.name)
			continue
		case len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)):
			t.Errorf("Service %s-metrics does not select %s's pods", svc.name, svc.name)
		}
		for _, p := range s.Spec.Ports {
			if containerPort(c, p.TargetPort) != admin {
				t.Errorf("Service %s-metrics targets port %s, want only the admin port %d", svc.name, p.TargetPort.String(), admin)
			}
		}
		if len(s.Spec.Ports) != 1 {
			t.Fatalf("Service %s-metrics has %d ports, want the admin port alone", svc.name, len(s.Spec.Ports))
		}
		want := fmt.Sprintf("http://%s-metrics:%d/metrics", svc.name, s.Spec.Ports[0].Port)
		if sources[svc.name] != want {
			t.Errorf("the dashboard reads %s at %q, want %q", svc.name, sources[svc.name], want)
		}
	}
	if len(sources) != len(mustAppServices(t)) {
		t.Errorf("the dashboard reads %v, want exactly the registry's services", sources)
	}
}

// checkOperationalPorts checks where the kubelet and Prometheus find the
// service: on the admin listener, which the base sets up (ADMIN_ADDR, a
// container port named admin on the same port, on all interfaces), with
// liveness and readiness probes there and the scrape annotation pointing
// at it; /readyz and /metrics are then not on the public port.
func checkOperationalPorts(tb testing.TB, pod corev1.PodTemplateSpec, c corev1.Container, cfg boot.Config, svc appService) {
	tb.Helper()
	if cfg.AdminAddr == "" {
		tb.Errorf("ADMIN_ADDR is unset: /readyz and /metrics would be served on the public port %d", svc.port)
		return
	}
	checkListensOnNetwork(tb, "ADMIN_ADDR", cfg.AdminAddr)
	admin := mustAddrPort(tb, cfg.AdminAddr)
	if got := containerPort(c, intstr.FromString("admin")); got != admin {
		tb.Errorf("container port named admin is %d, want ADMIN_ADDR's %d", got, admin)
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	} {
		switch {
		case p.probe == nil || p.probe.HTTPGet == nil:
			tb.Errorf("no HTTP %s probe", p.kind)
		case p.probe.HTTPGet.Path != p.path:
			tb.Errorf("%s probe on %s, want %s", p.kind, p.probe.HTTPGet.Path, p.path)
		case containerPort(c, p.probe.HTTPGet.Port) != admin:
			tb.Errorf("%s probe on port %s, want the admin port %d", p.kind, p.probe.HTTPGet.Port.String(), admin)
		case p.probe.HTTPGet.Scheme != "" && p.probe.HTTPGet.Scheme != corev1.URISchemeHTTP:
			tb.Errorf("%s probe over %s; the admin listener is plain HTTP", p.kind, p.probe.HTTPGet.Scheme)
		}
	}
	if p := c.StartupProbe; p != nil && p.HTTPGet != nil {
		if p.HTTPGet.Path != "/healthz" {
			tb.Errorf("startup probe on %s, want /healthz", p.HTTPGet.Path)
		}
		if port := containerPort(c, p.HTTPGet.Port); port != admin && port != svc.port {
			tb.Errorf("startup probe on port %d, which serves no /healthz", port)
		}
	}
	a := pod.Annotations
	if a["prometheus.io/scrape"] == "true" && (a["prometheus.io/port"] != strconv.Itoa(admin) || a["prometheus.io/path"] != "/metrics") {
		tb.Errorf("Prometheus scrapes port %s path %s, want the admin port %d, /metrics", a["prometheus.io/port"], a["prometheus.io/path"], admin)
	}
	if cfg.TrustedProxies == "" {
		tb.Errorf("TRUSTED_PROXIES is unset: behind the ingress every client would share the ingress's rate limit")
	}
}

// mustAddrPort returns the port of a listen address.
func mustAddrPort(tb testing.TB, addr string) int {
	tb.Helper()
	port, err := addrPort(addr)
	if err != nil {
		tb.Fatalf("%q: %v", addr, err)
	}
	return port
}

// selects reports whether sel, which must be set, matches set.
func selects(tb testing.TB, sel *metav1.LabelSelector, set labels.Set) bool {
	tb.Helper()
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		tb.Errorf("selector: %v", err)
		return false
	}
	return !s.Empty() && s.Matches(set)
}

// containerPort resolves a port given by number or by name in c, or
// returns 0.
func containerPort(c corev1.Container, p intstr.IntOrString) int {
	if p.Type == intstr.Int {
		return p.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort)
		}
	}
	return 0
}

// checkResources reports a container without CPU and memory requests and a
// memory limit, or with a GOMEMLIMIT the limit does not leave room above.
func checkResources(tb testing.TB, c corev1.Container) {
	tb.Helper()
	req, lim := c.Resources.Requests, c.Resources.Limits
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := req[r]; !ok || q.IsZero() {
			tb.Errorf("no %s request", r)
		}
	}
	memLimit, ok := lim[corev1.ResourceMemory]
	if !ok || memLimit.IsZero() {
		tb.Errorf("no memory limit")
		return
	}
	if memLimit.Cmp(req[corev1.ResourceMemory]) < 0 {
		tb.Errorf("memory limit %s below the request %s", memLimit.String(), req.Memory().String())
	}
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		n, err := parseGoMemLimit(e.Value)
		if err != nil {
			tb.Errorf("GOMEMLIMIT: %v", err)
		} else if n >= memLimit.Value() {
			tb.Errorf("GOMEMLIMIT %s is not below the memory limit %s", e.Value, memLimit.String())
		}
	}
}

// parseGoMemLimit parses a GOMEMLIMIT value (bytes with an optional B,
// KiB, MiB, GiB or TiB suffix; see package runtime/debug).
func parseGoMemLimit(s string) (int64, error) {
	m := regexp.MustCompile(`^(\d+)(B|KiB|MiB|GiB|TiB)?$`).FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a number of bytes with a B, KiB, MiB, GiB or TiB suffix", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, err
	}
	shift := map[string]uint{"": 0, "B": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	return n << shift, nil
}

// checkBudget returns an error unless the budget allows at least one
// voluntary disruption and keeps at least one of replicas pods.
func checkBudget(spec policyv1.PodDisruptionBudgetSpec, replicas int) error {
	var kept int
	switch {
	case spec.MaxUnavailable != nil && spec.MinAvailable == nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(spec.MaxUnavailable, replicas, false)
		if err != nil {
			return err
		}
		kept = replicas - v
	case spec.MinAvailable != nil && spec.MaxUnavailable == nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(spec.MinAvailable, replicas, true)
		if err != nil {
			return err
		}
		kept = v
	default:
		return fmt.Errorf("set exactly one of minAvailable and maxUnavailable")
	}
	if kept < 1 || kept > replicas-1 {
		return fmt.Errorf("keeps %d of %d pods; want at least 1, and at most %d so that nodes can drain", kept, replicas, replicas-1)
	}
	return nil
}

// checkRollout returns an error unless an update starts each new pod before
// it stops an old one (a rolling update with no pod unavailable and a surge
// of at least one): no replica slot may sit empty while a rollout waits
// for a pod to start, and the replicas hold no identity that two pods could
// not share for a while (notification's replicas included: they share one
// queue, docs/decisions/0008-live-tracking.md).
func checkRollout(s appsv1.DeploymentStrategy, replicas int) error {
	if s.Type != "" && s.Type != appsv1.RollingUpdateDeploymentStrategyType {
		return fmt.Errorf("strategy %s, want %s", s.Type, appsv1.RollingUpdateDeploymentStrategyType)
	}
	// Kubernetes' defaults: 25% of each.
	unavailable, surge := intstr.FromString("25%"), intstr.FromString("25%")
	if r := s.RollingUpdate; r != nil && r.MaxUnavailable != nil {
		unavailable = *r.MaxUnavailable
	}
	if r := s.RollingUpdate; r != nil && r.MaxSurge != nil {
		surge = *r.MaxSurge
	}
	u, err := intstr.GetScaledValueFromIntOrPercent(&unavailable, replicas, false)
	if err != nil {
		return err
	}
	g, err := intstr.GetScaledValueFromIntOrPercent(&surge, replicas, true)
	if err != nil {
		return err
	}
	if u != 0 || g < 1 {
		return fmt.Errorf("a rollout may take %d of %d pods down and start %d extra; want 0 down and at least 1 extra", u, replicas, g)
	}
	return nil
}

// checkURLPath reports a URL whose path is not path.
func checkURLPath(tb testing.TB, key, raw, path string) {
	tb.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		tb.Errorf("%s: %v", key, err)
		return
	}
	if u.Path != path {
		tb.Errorf("%s %s: database %q, want %q", key, u.Redacted(), u.Path, path)
	}
}

// rabbitmqCluster is the part of the optional RabbitmqCluster example the
// checks read.
type rabbitmqCluster struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Replicas int    `json:"replicas"`
		Image    string `json:"image"`
	} `json:"spec"`
}

// mustRabbitmqCluster reads deploy/k8s/rabbitmq-cluster.yaml, the example
// cluster the base's AMQP_URL points at, and checks it is a three-node (or
// larger, odd) cluster, which quorum queues need to survive a node loss.
func mustRabbitmqCluster(tb testing.TB) rabbitmqCluster {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(tb), "deploy", "k8s", "rabbitmq-cluster.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	var rc rabbitmqCluster
	if err := yaml.Unmarshal(raw, &rc); err != nil {
		tb.Fatalf("rabbitmq-cluster.yaml: %v", err)
	}
	if rc.APIVersion != "rabbitmq.com/v1beta1" || rc.Kind != "RabbitmqCluster" || rc.Metadata.Name == "" {
		tb.Errorf("rabbitmq-cluster.yaml is %s %s %q, want a named rabbitmq.com/v1beta1 RabbitmqCluster", rc.APIVersion, rc.Kind, rc.Metadata.Name)
	}
	if rc.Spec.Replicas < 3 || rc.Spec.Replicas%2 == 0 {
		tb.Errorf("RabbitmqCluster replicas %d, want an odd number, at least 3", rc.Spec.Replicas)
	}
	if err := checkPinned(rc.Spec.Image); rc.Spec.Image != "" && err != nil {
		tb.Errorf("RabbitmqCluster: %v", err)
	}
	return rc
}

// TestKustomizeOverlay builds the kind of overlay docs/deploy.md describes
// (namespace, image registry and tag, real secrets replacing the
// placeholders) and checks that every service then starts.
func TestKustomizeOverlay(t *testing.T) {
	t.Parallel()
	base := filepath.Join(repoRoot(t), "deploy", "k8s")
	dir := t.TempDir()
	svcs := mustAppServices(t)
	// Kustomize accepts only relative paths to other kustomizations.
	rel, err := filepath.Rel(dir, base)
	if err != nil {
		t.Fatal(err)
	}

	var images, secrets strings.Builder
	fmt.Fprintf(&secrets, "AUTH_JWT_SECRET=%s\nTRACKING_SECRET=%s\n", strongSecret, strongTrackingSecret)
	for _, svc := range svcs {
		fmt.Fprintf(&images, "  - name: orderly/%s\n    newName: registry.example.com/orderly/%[1]s\n    newTag: 1.2.3\n", svc.name)
		fmt.Fprintf(&secrets, "%s_AMQP_URL=amqps://%s:s3cret@orderly-rabbitmq:5671/\n", strings.ToUpper(svc.name), svc.name)
		fmt.Fprintf(&secrets, "%s_DATABASE_URL=postgres://orderly_%s:s3cret@db.example.com:5432/orderly_%[2]s?sslmode=verify-full\n",
			strings.ToUpper(svc.name), svc.name)
	}
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: shop
resources:
  - %s
images:
%sconfigMapGenerator:
  - name: orderly-config
    behavior: merge
    literals:
      - AUTH_JWT_ISSUER=%s
      - AUTH_JWT_AUDIENCE=%s
secretGenerator:
  - name: orderly-secrets
    behavior: replace
    envs:
      - secrets.env
`, filepath.ToSlash(rel), images.String(), productionIdentity["AUTH_JWT_ISSUER"], productionIdentity["AUTH_JWT_AUDIENCE"])
	mustWrite(t, filepath.Join(dir, "kustomization.yaml"), kustomization)
	mustWrite(t, filepath.Join(dir, "secrets.env"), secrets.String())

	m := mustBuild(t, dir)
	for _, svc := range svcs {
		d, ok := m.deployments[svc.name]
		if !ok {
			t.Errorf("no Deployment %s", svc.name)
			continue
		}
		if d.Namespace != "shop" {
			t.Errorf("Deployment %s in namespace %q, want shop", svc.name, d.Namespace)
		}
		c := d.Spec.Template.Spec.Containers[0]
		if want := "registry.example.com/orderly/" + svc.name + ":1.2.3"; c.Image != want {
			t.Errorf("Deployment %s runs %s, want %s", svc.name, c.Image, want)
		}
		cfg, err := loadConfig(t, svc, mustContainerEnv(t, m, c))
		if err != nil {
			t.Errorf("%s would not start with the overlay's secrets: %v", svc.name, err)
			continue
		}
		if cfg.JWTSecret != strongSecret || !strings.Contains(cfg.DatabaseURL, "db.example.com") {
			t.Errorf("%s does not get the overlay's secrets", svc.name)
		}
	}
	if len(m.secrets) != 1 {
		t.Errorf("%d Secrets after the overlay replaced the placeholders, want 1", len(m.secrets))
	}
}

func mustWrite(tb testing.TB, path, content string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// replicasString formats a Deployment's replicas, nil as the default.
func replicasString(r *int32) string {
	if r == nil {
		return "unset (1)"
	}
	return strconv.Itoa(int(*r))
}
