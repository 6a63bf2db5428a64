package boot

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/jackc/pgx/v5/pgconn"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/orderly/orderly/pkg/authn"
	"github.com/orderly/orderly/pkg/httpx"
	"github.com/orderly/orderly/pkg/telemetry"
)

// DevelopmentJWTSecret is the AUTH_JWT_SECRET used when none is set, so that
// `make run` works with no setup. Everyone can read it here, which is why
// only ORDERLY_ENV=development accepts it.
const DevelopmentJWTSecret = "orderly-development-secret-not-for-production"

// minProductionSecretLen is the shortest AUTH_JWT_SECRET accepted in
// production: HS256 keys shorter than the hash output (32 bytes) weaken it
// (RFC 7518, section 3.2).
const minProductionSecretLen = 32

// Environments ORDERLY_ENV accepts. Production is the default, so that a
// binary started without settings refuses what is only safe on a
// developer's machine; `make run`, the tests and compose set development.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// Config holds the settings every service reads from its environment. Create
// it with LoadConfig; a service with settings of its own embeds Config in its
// config struct and calls Validate after parsing it.
type Config struct {
	// Service names the service ("order"); it is not read from the
	// environment but set by LoadConfig.
	Service string `env:"-"`

	// DatabaseURL is the service's own Postgres database; it defaults to
	// orderly_<service> on the local server.
	DatabaseURL string `env:"DATABASE_URL"`
	// AMQPURL is the RabbitMQ broker (with its vhost).
	AMQPURL string `env:"AMQP_URL" envDefault:"amqp://guest:guest@127.0.0.1:5672/"`
	// HTTPAddr is the listen address; the default is the service's port on
	// the loopback interface (127.0.0.1:8080 for order), so that a binary
	// started without settings is not reachable from the network; a
	// deployment sets ":8080" explicitly. ":0" picks a free port, which the
	// "http server listening" log line names.
	HTTPAddr string `env:"HTTP_ADDR"`
	// JWTSecret is the HS256 secret of bearer tokens.
	// It defaults to DevelopmentJWTSecret.
	JWTSecret string `env:"AUTH_JWT_SECRET"`
	// JWTIssuer, when set, must equal the "iss" of every bearer token.
	JWTIssuer string `env:"AUTH_JWT_ISSUER"`
	// JWTAudience, when set, must be among the "aud" of every bearer token.
	JWTAudience string `env:"AUTH_JWT_AUDIENCE"`
	// RateLimitRPS is how many requests per second one caller (a token's
	// subject, else a client address) may make to the service's API, per
	// replica.
	RateLimitRPS int `env:"RATE_LIMIT_RPS" envDefault:"100"`
	// ConsumerWorkers is how many messages each of the service's queues
	// handles at once (messages of one order always go to the same
	// worker). It has no envDefault because 0 stands for the service's
	// own default: rabbit.Consumer's 4, or 16 in notification.
	ConsumerWorkers int `env:"CONSUMER_WORKERS"`
	// Env is development or production (the default); production refuses
	// the development JWT secret, short secrets, the broker's guest user,
	// plain amqp:// and a database connection that does not verify the
	// server (productionProblems).
	Env string `env:"ORDERLY_ENV" envDefault:"production"`
	// OTLPEndpoint is the OTLP/HTTP collector base URL; empty turns trace
	// export off.
	OTLPEndpoint string `env:"OTEL_EXPORTER_OTLP_ENDPOINT"`
	// ResourceAttributes are added to the resource of every span and
	// metric (telemetry.ParseResourceAttributes), for what only the
	// deployment knows: its environment, the pod's name.
	ResourceAttributes string `env:"OTEL_RESOURCE_ATTRIBUTES"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`
	// ConnectTimeout bounds reaching Postgres and RabbitMQ at start, so a
	// wrong address stops the service instead of leaving it hanging.
	ConnectTimeout time.Duration `env:"CONNECT_TIMEOUT" envDefault:"15s"`
	// ShutdownTimeout bounds the whole graceful shutdown after SIGTERM. Keep
	// it below the orchestrator's grace period (30s in Kubernetes).
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"20s"`
	// ShutdownDelay is how long /readyz answers 503 before the HTTP server
	// stops accepting, so load balancers stop routing here first.
	ShutdownDelay time.Duration `env:"SHUTDOWN_DELAY" envDefault:"1s"`
	// Bearer-token rules beyond the secret (issue 11): a bounded
	// lifetime and a rotation.
	//
	// JWTSecretPrevious, when set, also verifies bearer tokens, so that
	// AUTH_JWT_SECRET can be rotated: tokens are minted with the new
	// secret while those signed with the old one stay valid until they
	// expire (AUTH_JWT_MAX_TTL at most), then this is unset.
	JWTSecretPrevious string `env:"AUTH_JWT_SECRET_PREVIOUS"`
	// JWTMaxTTL is how far ahead of now a bearer token's exp may lie; a
	// token meant to live longer is refused.
	JWTMaxTTL time.Duration `env:"AUTH_JWT_MAX_TTL" envDefault:"24h"`

	// PprofAddr, when set, serves Go's profiler (net/http/pprof) on its own
	// listener at this address, for an operator profiling a live process.
	// Keep it on a loopback or internal address: it is not authenticated.
	PprofAddr string `env:"PPROF_ADDR"`
	// AdminAddr, when set, moves GET /readyz and GET /metrics off the
	// public listener onto one of their own at this address (GET /healthz
	// is on both), for the kubelet and Prometheus only. It is plain HTTP
	// even when TLS_CERT_FILE is set: it is meant for the cluster's
	// network, not the internet. Unset, they stay on HTTP_ADDR.
	AdminAddr string `env:"ADMIN_ADDR"`
	// TrustedProxies lists the reverse proxies (comma-separated CIDRs or
	// addresses) whose X-Forwarded-For names the client, for rate limits,
	// logs and traces (httpx.TrustedProxies). Unset, nobody's is
	// believed and the client is the TCP peer.
	TrustedProxies string `env:"TRUSTED_PROXIES"`

	// RequestTimeout bounds each HTTP request of the API (httpx.Deadline):
	// a request still running then is answered 503 with Retry-After, and
	// its database work is cancelled, its connection discarded. It is what
	// ends a request when the database stops answering altogether, which
	// DB_STATEMENT_TIMEOUT (enforced by the server) cannot. Streams
	// (WebSocket, Server-Sent Events) are bounded only while they are set
	// up. Keep it above DB_STATEMENT_TIMEOUT and below the server's write
	// timeout (30s).
	RequestTimeout time.Duration `env:"REQUEST_TIMEOUT" envDefault:"10s"`

	// Database timeouts (issue 11): every connection of the service's pool
	// carries them, so a stuck statement or lock wait fails (503 to an
	// HTTP client, a later retry for a message) instead of holding a
	// connection and its locks. Migrations run without the statement
	// timeout, and the table maintenance's VACUUM too. 0 turns one off.
	//
	// DBStatementTimeout is PostgreSQL's statement_timeout.
	DBStatementTimeout time.Duration `env:"DB_STATEMENT_TIMEOUT" envDefault:"5s"`
	// DBLockTimeout is PostgreSQL's lock_timeout: the longest one
	// statement waits for a lock.
	DBLockTimeout time.Duration `env:"DB_LOCK_TIMEOUT" envDefault:"2s"`

	// Transport security (see tls.go). Files are PEM, read at start; a
	// certificate and its key are read again whenever they change.
	//
	// TLSCertFile and TLSKeyFile, both set, make the HTTP server serve
	// HTTPS (and WSS) with that certificate (leaf first, then any
	// intermediates) and key.
	TLSCertFile string `env:"TLS_CERT_FILE"`
	TLSKeyFile  string `env:"TLS_KEY_FILE"`
	// AMQPCAFile is the CA an amqps:// broker's certificate must chain to;
	// when it is unset the system's roots are used.
	AMQPCAFile string `env:"AMQP_CA_FILE"`
	// AMQPCertFile and AMQPKeyFile, both set, are the client certificate
	// presented to an amqps:// broker that asks for one.
	AMQPCertFile string `env:"AMQP_CERT_FILE"`
	AMQPKeyFile  string `env:"AMQP_KEY_FILE"`
}

// DefaultDatabaseURL is the database a service uses when DATABASE_URL is
// unset: orderly_<service> on the local development server.
func DefaultDatabaseURL(service string) string {
	return "postgres://postgres@127.0.0.1:5432/orderly_" + service + "?sslmode=disable"
}

// LoadConfig parses environ (as from os.Environ) into a Config for service,
// whose HTTP address defaults to httpAddr. It returns an error naming every
// variable that is invalid, on a single line, or that breaks a rule (the
// production rules apply unless ORDERLY_ENV=development).
func LoadConfig(environ []string, service, httpAddr string) (Config, error) {
	cfg := Config{
		Service:     service,
		DatabaseURL: DefaultDatabaseURL(service),
		HTTPAddr:    httpAddr,
		JWTSecret:   DevelopmentJWTSecret,
	}
	if err := Parse(environ, &cfg); err != nil {
		return Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Settings is a service's configuration struct: Config embedded, and the
// service's own fields with `env` tags.
type Settings interface{ base() *Config }

func (c *Config) base() *Config { return c }

// Load reads environ into dst for service, whose HTTP address defaults to
// httpAddr: the shared settings (LoadConfig), then the service's own, then
// check, which states the service's rules on dst with Problems.Require. It
// returns one error naming every invalid variable, on a single line.
func Load(environ []string, service, httpAddr string, dst Settings, check func(*Problems)) error {
	base, err := LoadConfig(environ, service, httpAddr)
	if err != nil {
		return err
	}
	*dst.base() = base
	if err := Parse(environ, dst); err != nil {
		return err
	}
	var p Problems
	if check != nil {
		check(&p)
	}
	return p.Err()
}

// Problems collects what is wrong with a configuration, so that one error
// names every offending variable rather than the first.
type Problems []string

// Require records key's problem, format and args, unless ok.
func (p *Problems) Require(ok bool, key, format string, args ...any) {
	if !ok {
		*p = append(*p, key+": "+fmt.Sprintf(format, args...))
	}
}

// Err is nil when nothing was recorded, else the one-line error.
func (p Problems) Err() error {
	if len(p) == 0 {
		return nil
	}
	return errors.New("invalid configuration: " + strings.Join(p, "; "))
}

// Parse fills dst, a pointer to a struct with `env` tags (Config, or a
// service's struct embedding it), from environ. Fields whose variable is
// unset or empty keep their current value unless they have an envDefault,
// so callers preset per-service defaults. Errors name the variable rather
// than the Go field. A secret may come from a file named by <NAME>_FILE
// (secretVariables).
func Parse(environ []string, dst any) error {
	vars := env.ToMap(environ)
	if err := readSecretFiles(vars); err != nil {
		return err
	}
	err := env.ParseWithOptions(dst, env.Options{Environment: vars})
	if err == nil {
		return nil
	}
	keys := envKeys(reflect.TypeOf(dst).Elem())
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	var msgs []string
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			msgs = append(msgs, fmt.Sprintf("%s: %v", keys[pe.Name], pe.Err))
			continue
		}
		msgs = append(msgs, e.Error())
	}
	return errors.New("invalid configuration: " + strings.Join(msgs, "; "))
}

// envKeys maps the field names of a struct (and of structs it embeds) to
// their environment variable names, for error messages.
func envKeys(t reflect.Type) map[string]string {
	keys := make(map[string]string)
	if t.Kind() != reflect.Struct {
		return keys
	}
	for f := range t.Fields() {
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			for k, v := range envKeys(f.Type) {
				keys[k] = v
			}
			continue
		}
		if tag, ok := f.Tag.Lookup("env"); ok {
			keys[f.Name], _, _ = strings.Cut(tag, ",")
		}
	}
	return keys
}

// Validate checks the settings that parsing cannot: URLs that the clients
// would reject later, the log level, and the production rules. It returns
// one error naming every offending variable.
func (c Config) Validate() error {
	var p Problems
	p.Require(c.Service != "", "service", "name is empty")
	if c.DatabaseURL == "" {
		p.Require(false, "DATABASE_URL", "is empty")
	} else if _, err := pgconn.ParseConfig(c.DatabaseURL); err != nil {
		// pgconn echoes the URL, password included, in some errors.
		p.Require(false, "DATABASE_URL", "not a valid Postgres URL (%s)", redactDSN(err.Error()))
	}
	if _, err := amqp.ParseURI(c.AMQPURL); err != nil {
		p.Require(false, "AMQP_URL", "%v (want amqp://user:password@host:5672/vhost)", err)
	}
	p.Require(isHostPort(c.HTTPAddr), "HTTP_ADDR", "%q is not host:port (for example :8080 or 127.0.0.1:0)", c.HTTPAddr)
	p.Require(c.PprofAddr == "" || isHostPort(c.PprofAddr), "PPROF_ADDR", "%q is not host:port (for example 127.0.0.1:6060)", c.PprofAddr)
	p.Require(c.AdminAddr == "" || isHostPort(c.AdminAddr), "ADMIN_ADDR", "%q is not host:port (for example :9090)", c.AdminAddr)
	p.Require(c.AdminAddr == "" || !samePort(c.AdminAddr, c.HTTPAddr), "ADMIN_ADDR", "%q is HTTP_ADDR's port; the admin listener needs its own", c.AdminAddr)
	if _, err := httpx.ParseTrustedProxies(c.TrustedProxies); err != nil {
		p.Require(false, "TRUSTED_PROXIES", "%v (want comma-separated CIDRs or addresses, for example 10.0.0.0/8,192.0.2.10)", err)
	}
	switch c.Env {
	case EnvDevelopment:
	case EnvProduction:
		p = append(p, c.productionProblems()...)
	default:
		p.Require(false, "ORDERLY_ENV", "%q is not development or production", c.Env)
	}
	p.Require(c.JWTSecret != "", "AUTH_JWT_SECRET", "is empty")
	// Bearer-token lifetime, rotation, and production's issuer and
	// audience (issue 11). A previous secret is held to the rules of the
	// current one, as it verifies the same tokens.
	p.Require(c.JWTMaxTTL > 0, "AUTH_JWT_MAX_TTL", "must be positive")
	if c.Env != EnvDevelopment && c.JWTSecretPrevious != "" {
		p.Require(c.JWTSecretPrevious != DevelopmentJWTSecret && len(c.JWTSecretPrevious) >= minProductionSecretLen, "AUTH_JWT_SECRET_PREVIOUS",
			"must be at least %d bytes, and not the development default, unless ORDERLY_ENV=development", minProductionSecretLen)
	}
	if c.Env == EnvProduction {
		p.Require(c.JWTIssuer != "", "AUTH_JWT_ISSUER", "must be set when ORDERLY_ENV=production (the iss your identity provider puts in tokens)")
		p.Require(c.JWTAudience != "", "AUTH_JWT_AUDIENCE", "must be set when ORDERLY_ENV=production (the aud your identity provider puts in tokens)")
	}
	p.Require(c.RateLimitRPS > 0, "RATE_LIMIT_RPS", "must be positive")
	p.Require(c.ConsumerWorkers >= 0 && c.ConsumerWorkers <= 256, "CONSUMER_WORKERS", "must be between 0 (the service's default) and 256")
	if c.OTLPEndpoint != "" {
		u, err := url.Parse(c.OTLPEndpoint)
		p.Require(err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "", "OTEL_EXPORTER_OTLP_ENDPOINT",
			"%q is not an http:// or https:// URL", c.OTLPEndpoint)
	}
	if _, err := telemetry.ParseResourceAttributes(c.ResourceAttributes); err != nil {
		p.Require(false, "OTEL_RESOURCE_ATTRIBUTES", "%v (want key=value pairs separated by commas, values percent-encoded)", err)
	}
	_, err := telemetry.ParseLevel(c.LogLevel)
	p.Require(err == nil, "LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	p.Require(c.ConnectTimeout > 0, "CONNECT_TIMEOUT", "must be positive")
	p.Require(c.ShutdownTimeout > 0, "SHUTDOWN_TIMEOUT", "must be positive")
	p.Require(c.ShutdownDelay >= 0 && c.ShutdownDelay < c.ShutdownTimeout, "SHUTDOWN_DELAY", "must be at least 0 and less than SHUTDOWN_TIMEOUT")

	p.Require(c.RequestTimeout > 0 && c.RequestTimeout < httpx.WriteTimeout, "REQUEST_TIMEOUT",
		"must be positive and below the server's write timeout (%s), or the answer could not be written", httpx.WriteTimeout)

	// Database timeouts. PostgreSQL counts them in whole milliseconds.
	p.Require(c.DBStatementTimeout == 0 || c.DBStatementTimeout >= time.Millisecond, "DB_STATEMENT_TIMEOUT", "must be 0 (off) or at least 1ms")
	p.Require(c.DBLockTimeout == 0 || c.DBLockTimeout >= time.Millisecond, "DB_LOCK_TIMEOUT", "must be 0 (off) or at least 1ms")
	p.Require(c.DBStatementTimeout == 0 || c.DBLockTimeout <= c.DBStatementTimeout, "DB_LOCK_TIMEOUT", "must not exceed DB_STATEMENT_TIMEOUT (%s), which would cut its waits short", c.DBStatementTimeout)
	// Transport security: the files themselves are read by Start.
	p.Require((c.TLSCertFile == "") == (c.TLSKeyFile == ""), "TLS_CERT_FILE/TLS_KEY_FILE", "set both or neither")
	p.Require((c.AMQPCertFile == "") == (c.AMQPKeyFile == ""), "AMQP_CERT_FILE/AMQP_KEY_FILE", "set both or neither")
	p.Require(c.amqpTLS() || c.AMQPCAFile+c.AMQPCertFile+c.AMQPKeyFile == "", "AMQP_CA_FILE/AMQP_CERT_FILE/AMQP_KEY_FILE",
		"apply only to an amqps:// AMQP_URL")
	if uri, err := amqp.ParseURI(c.AMQPURL); err == nil {
		p.Require(uri.CACertFile+uri.CertFile+uri.KeyFile == "", "AMQP_URL",
			"cacertfile, certfile and keyfile are not read from the URL; set AMQP_CA_FILE, AMQP_CERT_FILE and AMQP_KEY_FILE")
	}
	return p.Err()
}

// productionProblems are the production rules (secure by default): what is
// fine on a developer's machine but not where the service faces a network.
// When any rule is broken, a last entry says how production was chosen, since
// it is the default.
func (c Config) productionProblems() Problems {
	var p Problems
	p.Require(c.JWTSecret != DevelopmentJWTSecret, "AUTH_JWT_SECRET",
		"the development default is refused in production; set a secret of at least %d bytes", minProductionSecretLen)
	p.Require(c.JWTSecret == DevelopmentJWTSecret || len(c.JWTSecret) >= minProductionSecretLen, "AUTH_JWT_SECRET",
		"must be at least %d bytes in production", minProductionSecretLen)
	// An AMQP_URL that does not parse is reported by Validate already.
	if u, err := amqp.ParseURI(c.AMQPURL); err == nil {
		p.Require(u.Scheme == "amqps", "AMQP_URL",
			"plain amqp:// is refused in production; use amqps:// (TLS)")
		// ParseURI fills in guest when the URL names no user: that is
		// who the client would log in as.
		p.Require(u.Username != "guest", "AMQP_URL",
			"the guest user is refused in production; give the service a broker user of its own (docs/deploy.md, \"Broker users\")")
	}
	if pc, err := pgconn.ParseConfig(c.DatabaseURL); err == nil {
		p.Require(verifiesServer(pc), "DATABASE_URL",
			"sslmode must be verify-full in production (disable, allow, prefer, require and verify-ca, or no sslmode, do not check the server's name)")
	}
	if len(p) > 0 {
		p.Require(false, "ORDERLY_ENV", "production (the default when unset) applies these rules; only a developer's machine sets ORDERLY_ENV=development")
	}
	return p
}

// verifiesServer reports whether every connection attempt of cfg uses TLS
// and checks the server's certificate and host name: sslmode=verify-full.
// pgconn turns sslmode into a TLS configuration (and fallbacks for allow
// and prefer), so this reads what the pool will do, whether sslmode came
// from the URL, a key=value string or PGSSLMODE.
func verifiesServer(cfg *pgconn.Config) bool {
	verified := func(t *tls.Config) bool { return t != nil && !t.InsecureSkipVerify }
	if !verified(cfg.TLSConfig) {
		return false
	}
	for _, f := range cfg.Fallbacks {
		if !verified(f.TLSConfig) {
			return false
		}
	}
	return true
}

// samePort reports whether two listen addresses name the same fixed port
// (":0" picks a free one each time, so it never clashes).
func samePort(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	return errA == nil && errB == nil && pa == pb && pa != "0"
}

func isHostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	return err == nil && port != ""
}

// Verifier returns the bearer-token verifier of the service's
// configuration: HS256 with AUTH_JWT_SECRET (or AUTH_JWT_SECRET_PREVIOUS,
// when set), an exp no more than AUTH_JWT_MAX_TTL ahead, checking
// AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE when they are set.
func (c Config) Verifier() *authn.Verifier {
	return authn.NewVerifier([]byte(c.JWTSecret), c.JWTIssuer, c.JWTAudience,
		authn.WithPreviousSecret([]byte(c.JWTSecretPrevious)), authn.WithMaxTTL(c.JWTMaxTTL))
}

// Issue returns a bearer token with claims that Verifier accepts: HS256
// with AUTH_JWT_SECRET, carrying AUTH_JWT_ISSUER and AUTH_JWT_AUDIENCE
// when they are set. It is for development tools and tests; it returns
// authn.Issue's error for an empty subject or expiry.
func (c Config) Issue(claims authn.Claims) (string, error) {
	return authn.Issue([]byte(c.JWTSecret), claims, c.JWTIssuer, c.JWTAudience)
}

// LoadTokenConfig reads from environ, with the services' defaults, what
// signs and checks bearer tokens (AUTH_JWT_SECRET or AUTH_JWT_SECRET_FILE,
// AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE, AUTH_JWT_MAX_TTL) and ORDERLY_ENV,
// for the tools that mint development tokens (orderly-token, devrun), so
// that they sign what the services accept. Unlike LoadConfig it applies no
// production rules and checks nothing a token does not depend on; deciding
// whether to mint in production is the caller's. It returns one error
// naming every invalid variable.
func LoadTokenConfig(environ []string) (Config, error) {
	cfg := Config{JWTSecret: DevelopmentJWTSecret}
	if err := Parse(environ, &cfg); err != nil {
		return Config{}, err
	}
	var p Problems
	p.Require(cfg.JWTMaxTTL > 0, "AUTH_JWT_MAX_TTL", "must be positive")
	if err := p.Err(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LogValue is what the config looks like in logs: passwords in URLs and the
// JWT secret are masked, so the start-up line can be shared freely.
func (c Config) LogValue() slog.Value {
	secret := "[set]"
	if c.JWTSecret == DevelopmentJWTSecret {
		secret = "[development default]"
	}
	return slog.GroupValue(
		slog.String("service", c.Service),
		slog.String("env", c.Env),
		slog.String("database_url", redactDSN(c.DatabaseURL)),
		slog.String("amqp_url", redactDSN(c.AMQPURL)),
		slog.String("http_addr", c.HTTPAddr),
		slog.String("auth_jwt_secret", secret),
		slog.String("auth_jwt_issuer", c.JWTIssuer),
		slog.String("auth_jwt_audience", c.JWTAudience),
		slog.String("auth_jwt_secret_previous", maskSet(c.JWTSecretPrevious)),
		slog.String("auth_jwt_max_ttl", c.JWTMaxTTL.String()),
		slog.Int("rate_limit_rps", c.RateLimitRPS),
		slog.Int("consumer_workers", c.ConsumerWorkers),
		slog.String("otel_exporter_otlp_endpoint", redactDSN(c.OTLPEndpoint)),
		slog.String("otel_resource_attributes", c.ResourceAttributes),
		slog.String("log_level", c.LogLevel),
		slog.String("connect_timeout", c.ConnectTimeout.String()),
		slog.String("shutdown_timeout", c.ShutdownTimeout.String()),
		slog.String("shutdown_delay", c.ShutdownDelay.String()),
		slog.String("pprof_addr", c.PprofAddr),
		slog.String("admin_addr", c.AdminAddr),
		slog.String("trusted_proxies", c.TrustedProxies),
		slog.String("db_statement_timeout", c.DBStatementTimeout.String()),
		slog.String("db_lock_timeout", c.DBLockTimeout.String()),
		slog.String("request_timeout", c.RequestTimeout.String()),
		slog.String("tls_cert_file", c.TLSCertFile),
		slog.String("tls_key_file", c.TLSKeyFile),
		slog.String("amqp_ca_file", c.AMQPCAFile),
		slog.String("amqp_cert_file", c.AMQPCertFile),
		slog.String("amqp_key_file", c.AMQPKeyFile),
	)
}

// maskSet is how an optional secret appears in logs: "[set]" or "".
func maskSet(secret string) string {
	if secret == "" {
		return ""
	}
	return "[set]"
}

// String formats the config with secrets masked, so that a stray %v in a log
// or error message does not leak them either.
func (c Config) String() string {
	var b strings.Builder
	for i, a := range c.LogValue().Group() {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(a.Key + "=" + a.Value.String())
	}
	return b.String()
}

var (
	// urlUserinfo matches the password part of scheme://user:password@ in
	// any text, including a URL quoted inside an error message.
	urlUserinfo = regexp.MustCompile(`(://[^:/@\s]*):[^@\s]*@`)
	// dsnPassword matches password=... in a key/value connection string.
	dsnPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
)

// redactDSN masks passwords in connection URLs and key/value connection
// strings found anywhere in s.
func redactDSN(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "$1:xxxxx@")
	return dsnPassword.ReplaceAllString(s, "${1}xxxxx")
}
