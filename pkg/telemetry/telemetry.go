// Package telemetry sets up the logs, traces and metrics that every Orderly
// service emits, so that all four services look the same to an operator: JSON
// logs on stdout carrying trace ids, W3C trace context on every hop (HTTP and
// AMQP), traces over OTLP when a collector is configured, and Prometheus
// metrics on /metrics.
//
// Setup is the only entry point that touches OpenTelemetry globals; see its
// documentation for exactly which.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Config says who is emitting telemetry and where traces go. Services fill it
// from their own environment-parsed config; this package never reads the
// environment itself.
type Config struct {
	// Service is the service name (service.name), e.g. "order". Required.
	Service string
	// Version is the build version (service.version); empty means the
	// binary's own (ReadBuild), which is what services use.
	Version string
	// ResourceAttributes are more attributes of the resource every span
	// and metric carries, in the format of OTEL_RESOURCE_ATTRIBUTES
	// (ParseResourceAttributes), such as the deployment's environment or
	// the pod's name. service.name and service.version stay Service's and
	// Version's, so that traces and orderly_build_info agree.
	ResourceAttributes string
	// OTLPEndpoint is the base URL of an OTLP/HTTP receiver, as in
	// OTEL_EXPORTER_OTLP_ENDPOINT (e.g. "http://otel-collector:4318").
	// "/v1/traces" is appended to its path, as the OpenTelemetry spec says
	// for the base endpoint. Empty turns trace export off.
	OTLPEndpoint string
	// LogLevel is one of debug, info, warn (or warning) and error, in any
	// case; empty means info.
	LogLevel string
}

// Telemetry holds the providers a service wires into its HTTP server, store,
// publisher and consumers. They are returned rather than only installed as
// globals so that dependencies stay visible in main.
type Telemetry struct {
	// Logger writes JSON to stdout with service, trace_id and span_id.
	Logger *slog.Logger
	// TracerProvider always produces valid span contexts, sampled unless
	// the SDK's OTEL_TRACES_SAMPLER says otherwise, so trace ids propagate
	// and appear in logs even when nothing is exported.
	TracerProvider trace.TracerProvider
	// MeterProvider exports every instrument into Registry.
	MeterProvider metric.MeterProvider
	// Propagator is W3C TraceContext plus Baggage, the same one Setup installs
	// globally and the Inject/Extract helpers use.
	Propagator propagation.TextMapPropagator
	// Registry holds the OpenTelemetry metrics plus the Go runtime and process
	// collectors. Services may register plain Prometheus collectors on it.
	Registry *prometheus.Registry
}

// MetricsHandler returns the handler for GET /metrics, serving everything in
// Registry in the Prometheus text format.
func (t *Telemetry) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(t.Registry, promhttp.HandlerOpts{
		// Scrape failures show up as a metric too, rather than only in the
		// scraper's log.
		Registry: t.Registry,
	})
}

// propagator is stateless, so sharing one value is safe; it is what the
// messaging contract requires (traceparent in AMQP headers).
var propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{},
)

// Setup builds the logger, tracer provider and meter provider described by
// cfg. The returned shutdown function flushes pending spans and stops both
// providers; call it last, with a deadline, when the service stops.
//
// Trace export uses OTLP over HTTP/protobuf (port 4318 on a collector) with a
// batch span processor, and only when cfg.OTLPEndpoint is set; HTTP was
// chosen over gRPC because it needs no gRPC stack and passes through ordinary
// HTTP proxies. Spans are sampled (parent-based) unless the SDK's
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose a ratio; trace ids
// exist for logs and propagation either way.
//
// Setup also installs globals, because instrumentation libraries (otelhttp,
// otelpgx) fall back to them: the text-map propagator, the tracer provider,
// the meter provider, and an error handler that sends OpenTelemetry's own
// errors (such as failed exports) to the logger at warn level.
//
// Setup returns an error, and installs nothing, when the service name is
// empty, the log level is unknown, the endpoint is not an http(s) URL, or a
// provider cannot be built.
func Setup(ctx context.Context, cfg Config) (*Telemetry, func(context.Context) error, error) {
	if cfg.Service == "" {
		return nil, nil, errors.New("telemetry: service name is required")
	}
	logger, err := NewLogger(os.Stdout, cfg.Service, cfg.LogLevel)
	if err != nil {
		return nil, nil, err
	}
	build := ReadBuild()
	if cfg.Version != "" {
		build.Version = cfg.Version
	}
	logger = logger.With("version", build.Version)
	res, err := newResource(ctx, cfg.Service, build.Version, cfg.ResourceAttributes)
	if err != nil {
		return nil, nil, err
	}

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if cfg.OTLPEndpoint != "" {
		endpoint, err := tracesURL(cfg.OTLPEndpoint)
		if err != nil {
			return nil, nil, err
		}
		// New does not dial; an unreachable collector only costs dropped
		// spans, reported through the error handler below.
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		if err != nil {
			return nil, nil, fmt.Errorf("telemetry: OTLP trace exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(tpOpts...)

	reg := prometheus.NewRegistry()
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfoGauge(cfg.Service, build),
	} {
		if err := reg.Register(c); err != nil {
			_ = tp.Shutdown(ctx)
			return nil, nil, fmt.Errorf("telemetry: register collector: %w", err)
		}
	}
	exporter, err := otelprom.New(
		otelprom.WithRegisterer(reg),
		// Pinned so metric names do not change under us when the exporter's
		// default changes: http.server.request.duration becomes
		// http_server_request_duration_seconds.
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes),
	)
	if err != nil {
		_ = tp.Shutdown(ctx)
		return nil, nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res), sdkmetric.WithReader(exporter))

	otel.SetTextMapPropagator(propagator)
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry error", "err", err)
	}))

	shutdown := func(ctx context.Context) error {
		// Traces first: the batcher may still hold the spans of the last
		// requests, which are the most interesting ones during a shutdown.
		return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
	}
	return &Telemetry{
		Logger:         logger,
		TracerProvider: tp,
		MeterProvider:  mp,
		Propagator:     propagator,
		Registry:       reg,
	}, shutdown, nil
}

// newResource is what every span and metric of the service is attributed
// to: service.name and service.version, the attributes of
// OTEL_RESOURCE_ATTRIBUTES (envAttrs), the SDK, the host and the process.
// It returns an error when envAttrs does not parse.
func newResource(ctx context.Context, service, version, envAttrs string) (*resource.Resource, error) {
	extra, err := ParseResourceAttributes(envAttrs)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource attributes: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithHost(),
		resource.WithProcessPID(),
		resource.WithAttributes(extra...),
		// Last, so that it wins over a service.name or service.version
		// in envAttrs.
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(version)),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: build resource: %w", err)
	}
	return res, nil
}

// tracesURL turns an OTLP base endpoint into the traces URL, following the
// OpenTelemetry rule for OTEL_EXPORTER_OTLP_ENDPOINT. It returns an error for
// anything that is not an absolute http or https URL, because the exporter
// would otherwise silently fall back to localhost.
func tracesURL(base string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("telemetry: OTLP endpoint %q: %w", base, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("telemetry: OTLP endpoint %q: want an http:// or https:// URL such as http://otel-collector:4318", base)
	}
	u.Path = path.Join("/", u.Path, "v1/traces")
	return u.String(), nil
}
