package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
)

// TableCarrier adapts an AMQP header table (amqp091's amqp.Table is a
// map[string]interface{}) to a propagation.TextMapCarrier, without this
// package depending on an AMQP client.
type TableCarrier map[string]any

// Get returns the header value for key when it is a string or a byte slice
// (brokers and other clients may send either), and "" otherwise.
func (c TableCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

// Set stores value under key as a string. On a nil TableCarrier it does
// nothing, rather than panicking in a publish path.
func (c TableCarrier) Set(key, value string) {
	if c == nil {
		return
	}
	c[key] = value
}

// Keys lists the header names present.
func (c TableCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// InjectHeaders writes the W3C traceparent, tracestate and baggage of ctx into
// AMQP headers. headers must be non-nil to receive anything; a context
// without a span writes nothing.
func InjectHeaders(ctx context.Context, headers map[string]any) {
	propagator.Inject(ctx, TableCarrier(headers))
}

// ExtractHeaders returns ctx with the remote span context and baggage found in
// AMQP headers, so that a consumer's span becomes a child of the publisher's.
// Missing or malformed headers leave ctx unchanged.
func ExtractHeaders(ctx context.Context, headers map[string]any) context.Context {
	return propagator.Extract(ctx, TableCarrier(headers))
}

// InjectMap writes the W3C trace context and baggage of ctx into a string map,
// the form in which the outbox stores headers until the relay publishes them.
// m must be non-nil to receive anything.
func InjectMap(ctx context.Context, m map[string]string) {
	if m == nil {
		return
	}
	propagator.Inject(ctx, propagation.MapCarrier(m))
}

// ExtractMap returns ctx with the remote span context and baggage found in a
// string map. Missing or malformed entries leave ctx unchanged.
func ExtractMap(ctx context.Context, m map[string]string) context.Context {
	return propagator.Extract(ctx, propagation.MapCarrier(m))
}
