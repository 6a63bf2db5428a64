package deploy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/orderly/orderly/pkg/rabbit"
	"github.com/orderly/orderly/tests/stack"
)

// definitions is the part of a RabbitMQ definitions file
// (deploy/rabbitmq/definitions.json) the checks read.
type definitions struct {
	Users []struct {
		Name             string   `json:"name"`
		PasswordHash     string   `json:"password_hash"`
		HashingAlgorithm string   `json:"hashing_algorithm"`
		Tags             []string `json:"tags"`
	} `json:"users"`
	Permissions []permission `json:"permissions"`
	Exchanges   []exchange   `json:"exchanges"`
}

// exchange is an exchange a definitions file declares.
type exchange struct {
	Name    string `json:"name"`
	Vhost   string `json:"vhost"`
	Type    string `json:"type"`
	Durable bool   `json:"durable"`
}

// permission is one user's configure, write and read regular expressions
// on a vhost.
type permission struct {
	User      string `json:"user"`
	Vhost     string `json:"vhost"`
	Configure string `json:"configure"`
	Write     string `json:"write"`
	Read      string `json:"read"`
}

func mustDefinitions(tb testing.TB) definitions {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(tb), "deploy", "rabbitmq", "definitions.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var d definitions
	if err := json.Unmarshal(raw, &d); err != nil {
		tb.Fatalf("definitions.json: %v", err)
	}
	return d
}

// servicePermission returns the permission of the service's own user on
// vhost "/".
func (d definitions) servicePermission(tb testing.TB, svc string) permission {
	tb.Helper()
	for _, p := range d.Permissions {
		if p.User == svc && p.Vhost == "/" {
			return p
		}
	}
	tb.Fatalf("definitions.json: no permission for user %s on vhost /", svc)
	return permission{}
}

// checkServicePermission checks what a service's broker user may do,
// against resource names shaped as the topology names them: its own
// exchange (<svc>.events), queues, their retry queues, DLQs and dead-letter
// exchanges (<svc>.<purpose>...) it may configure, write and read; no other
// service's may it configure or write, nor read another's queues; and no
// one may write to the default exchange, which routes to every queue. Which
// other exchanges it reads (those it binds from) the topology decides:
// tests/e2e's TestBrokerUsers runs the services with these permissions.
func checkServicePermission(tb testing.TB, where string, p permission) {
	tb.Helper()
	svc := p.User
	match := func(kind, re, name string) bool {
		m, err := regexp.MatchString(re, name)
		if err != nil {
			tb.Errorf("%s: %s permission %q of %s: %v", where, kind, re, svc, err)
		}
		return m
	}
	queues := func(s string) []string {
		q := s + ".work"
		return []string{q, rabbit.DLQName(q), rabbit.RetryQueueName(q, 1), rabbit.DLXName(q)}
	}
	for _, name := range append(queues(svc), svc+".events") {
		for kind, re := range map[string]string{"configure": p.Configure, "write": p.Write, "read": p.Read} {
			if !match(kind, re, name) {
				tb.Errorf("%s: user %s may not %s %s, its own", where, svc, kind, name)
			}
		}
	}
	for _, other := range stack.Names() {
		if other == svc {
			continue
		}
		for _, name := range append(queues(other), other+".events") {
			for kind, re := range map[string]string{"configure": p.Configure, "write": p.Write} {
				if match(kind, re, name) {
					tb.Errorf("%s: user %s may %s %s, which is %s's", where, svc, kind, name, other)
				}
			}
		}
		for _, name := range queues(other) {
			if match("read", p.Read, name) {
				tb.Errorf("%s: user %s may read %s, which is %s's", where, svc, name, other)
			}
		}
	}
	for _, name := range []string{"amq.default", "amq.topic", ""} {
		if match("write", p.Write, name) || match("configure", p.Configure, name) {
			tb.Errorf("%s: user %s may write or configure %q (the default exchange reaches every queue)", where, svc, name)
		}
	}
}

// checkExchange reports an exchange that is not a durable topic exchange
// <service>.events of a registered service on vhost "/".
func checkExchange(tb testing.TB, where string, e exchange) {
	tb.Helper()
	owner, ok := strings.CutSuffix(e.Name, ".events")
	if !ok || !slices.Contains(stack.Names(), owner) || e.Type != "topic" || !e.Durable || e.Vhost != "/" {
		tb.Errorf("%s: exchange %+v, want a durable topic exchange <service>.events on vhost /", where, e)
	}
}

// checkPassword reports a RabbitMQ SHA-256 password hash (a 4-byte salt,
// then SHA-256 of salt and password, in base64) that password does not
// match.
func checkPassword(tb testing.TB, user, hash, password string) {
	tb.Helper()
	raw, err := base64.StdEncoding.DecodeString(hash)
	if err != nil || len(raw) != 4+sha256.Size {
		tb.Errorf("user %s: password_hash is not a salted SHA-256 hash", user)
		return
	}
	sum := sha256.Sum256(append(slices.Clone(raw[:4]), password...))
	if !bytes.Equal(sum[:], raw[4:]) {
		tb.Errorf("user %s: the password in its AMQP_URL does not match its password_hash in definitions.json", user)
	}
}

// amqpUser returns the user and password of an AMQP URL.
func amqpUser(tb testing.TB, raw string) (user, password string) {
	tb.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		tb.Errorf("AMQP_URL names no user")
		return "", ""
	}
	password, _ = u.User.Password()
	return u.User.Username(), password
}

// TestComposeBrokerUsers checks that the compose broker loads the
// definitions, which give each service a user of its own with the
// permissions its topology needs and nothing more, and that each service
// logs in as that user.
func TestComposeBrokerUsers(t *testing.T) {
	t.Parallel()
	p := mustLoadCompose(t, nil)
	d := mustDefinitions(t)

	// The broker loads definitions.json at start.
	mq := p.Services["rabbitmq"]
	mounts := map[string]string{}
	for _, v := range mq.Volumes {
		mounts[v.Target] = v.Source
	}
	defs := filepath.Join(repoRoot(t), "deploy", "rabbitmq", "definitions.json")
	if got := mounts["/etc/rabbitmq/definitions.json"]; got != defs {
		t.Errorf("rabbitmq mounts %q at /etc/rabbitmq/definitions.json, want %s", got, defs)
	}
	loads := false
	for target, src := range mounts {
		if !strings.HasPrefix(target, "/etc/rabbitmq/conf.d/") {
			continue
		}
		conf, err := os.ReadFile(src) //nolint:gosec // the repository's own file
		if err != nil {
			t.Fatal(err)
		}
		loads = loads || regexp.MustCompile(`(?m)^load_definitions\s*=\s*/etc/rabbitmq/definitions\.json\s*$`).Match(conf)
	}
	if !loads {
		t.Errorf("no rabbitmq conf.d file sets load_definitions = /etc/rabbitmq/definitions.json")
	}

	// The publishers' exchanges exist before any service starts: a
	// consumer may bind to one but not create it.
	if len(d.Exchanges) == 0 {
		t.Errorf("definitions.json declares no exchange")
	}
	for _, e := range d.Exchanges {
		checkExchange(t, "definitions.json", e)
	}

	for _, svc := range mustAppServices(t) {
		perm := d.servicePermission(t, svc.name)
		checkServicePermission(t, "definitions.json", perm)
		user, password := amqpUser(t, composeEnv(t, p.Services[svc.name])["AMQP_URL"])
		if user != svc.name {
			t.Errorf("compose service %s logs in to RabbitMQ as %q, want its own user %s", svc.name, user, svc.name)
		}
		for _, u := range d.Users {
			if u.Name == user {
				if u.HashingAlgorithm != "rabbit_password_hashing_sha256" || len(u.Tags) != 0 {
					t.Errorf("user %s: algorithm %s, tags %v; want SHA-256 and no tags (no management access)", u.Name, u.HashingAlgorithm, u.Tags)
				}
				checkPassword(t, u.Name, u.PasswordHash, password)
			}
		}
	}
}

// topologyObject is the part of a Messaging Topology Operator object the
// checks read.
type topologyObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Name                     string `json:"name"`
		Vhost                    string `json:"vhost"`
		User                     string `json:"user"`
		Type                     string `json:"type"`
		Durable                  bool   `json:"durable"`
		AutoDelete               bool   `json:"autoDelete"`
		RabbitmqClusterReference struct {
			Name string `json:"name"`
		} `json:"rabbitmqClusterReference"`
		ImportCredentialsSecret struct {
			Name string `json:"name"`
		} `json:"importCredentialsSecret"`
		Permissions struct {
			Configure string `json:"configure"`
			Write     string `json:"write"`
			Read      string `json:"read"`
		} `json:"permissions"`
	} `json:"spec"`
}

// TestKubernetesBrokerUsers checks deploy/k8s/rabbitmq-users.yaml: a user
// per service on the example cluster, with the same permissions as the
// compose definitions, the publishers' exchanges, and that every service's
// AMQP_URL (in the base) names its own user.
func TestKubernetesBrokerUsers(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "rabbitmq-users.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cluster := mustRabbitmqCluster(t).Metadata.Name
	d := mustDefinitions(t)
	users, perms := map[string]bool{}, map[string]permission{}
	var exchanges []exchange
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		var o topologyObject
		if err := yaml.UnmarshalStrict([]byte(doc), &o); err != nil {
			t.Fatalf("rabbitmq-users.yaml: %v", err)
		}
		if o.Kind == "" {
			continue // comments only
		}
		if o.APIVersion != "rabbitmq.com/v1beta1" || o.Spec.RabbitmqClusterReference.Name != cluster {
			t.Errorf("%s %s: apiVersion %s on cluster %q, want rabbitmq.com/v1beta1 on %s", o.Kind, o.Metadata.Name, o.APIVersion, o.Spec.RabbitmqClusterReference.Name, cluster)
		}
		switch o.Kind {
		case "User":
			users[o.Spec.ImportCredentialsSecret.Name] = true
		case "Permission":
			p := o.Spec.Permissions
			perms[o.Spec.User] = permission{User: o.Spec.User, Vhost: o.Spec.Vhost, Configure: p.Configure, Write: p.Write, Read: p.Read}
		case "Exchange":
			if o.Spec.AutoDelete {
				t.Errorf("Exchange %s is auto-deleted", o.Spec.Name)
			}
			exchanges = append(exchanges, exchange{Name: o.Spec.Name, Vhost: o.Spec.Vhost, Type: o.Spec.Type, Durable: o.Spec.Durable})
		default:
			t.Errorf("rabbitmq-users.yaml: unexpected %s %s", o.Kind, o.Metadata.Name)
		}
	}
	if !slices.Equal(exchanges, d.Exchanges) {
		t.Errorf("rabbitmq-users.yaml declares the exchanges %+v, definitions.json %+v", exchanges, d.Exchanges)
	}
	for _, e := range exchanges {
		checkExchange(t, "rabbitmq-users.yaml", e)
	}
	m := mustBuild(t, filepath.Join(root, "deploy", "k8s"))
	for _, svc := range mustAppServices(t) {
		if !users["orderly-rabbitmq-"+svc.name] {
			t.Errorf("rabbitmq-users.yaml: no User with credentials from Secret orderly-rabbitmq-%s", svc.name)
		}
		got, ok := perms[svc.name]
		if !ok {
			t.Errorf("rabbitmq-users.yaml: no Permission for user %s", svc.name)
			continue
		}
		if want := d.servicePermission(t, svc.name); got != want {
			t.Errorf("rabbitmq-users.yaml: permission of %s = %+v, but definitions.json says %+v", svc.name, got, want)
		}
		checkServicePermission(t, "rabbitmq-users.yaml", got)
		env := mustContainerEnv(t, m, m.deployments[svc.name].Spec.Template.Spec.Containers[0])
		if user, _ := amqpUser(t, env["AMQP_URL"]); user != svc.name {
			t.Errorf("Deployment %s logs in to RabbitMQ as %q, want its own user %s", svc.name, user, svc.name)
		}
	}
}
