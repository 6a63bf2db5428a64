package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// NewLogger returns a JSON logger writing to w that tags every record with
// service and, when the record's context carries a span, trace_id and
// span_id. Setup uses it for stdout; it is exported so that main can log
// before telemetry is set up and tests can capture output. Log with the
// *Context methods (InfoContext, ErrorContext, …) to get the trace ids.
//
// It returns an error when level is not one ParseLevel accepts.
func NewLogger(w io.Writer, service, level string) (*slog.Logger, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, err
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl})
	return slog.New(NewTraceHandler(h)).With("service", service), nil
}

// ParseLevel maps debug, info, warn (or warning) and error, in any case, to a
// slog level; empty means info. Anything else returns an error, so that a
// typo in the configuration stops the service instead of silencing it.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("telemetry: unknown log level %q (want debug, info, warn or error)", s)
}

// TraceHandler is a slog.Handler that adds trace_id and span_id from the
// context's span to each record before passing it on. Records logged without
// a context, or outside any span, get neither.
//
// The ids are added as record attributes, so a logger derived with WithGroup
// nests them inside that group; derive with With instead where log queries
// rely on a top-level trace_id.
type TraceHandler struct {
	next slog.Handler
}

// NewTraceHandler wraps next so that its records carry trace and span ids.
func NewTraceHandler(next slog.Handler) *TraceHandler {
	return &TraceHandler{next: next}
}

// Enabled reports whether the wrapped handler handles records at level.
func (h *TraceHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the span's ids to r and passes it on; it returns the wrapped
// handler's error.
func (h *TraceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		// Clone: the record may share its attribute storage with a copy the
		// caller still holds, and slog panics if both get modified.
		r = r.Clone()
		r.AddAttrs(
			slog.String("trace_id", sc.TraceID().String()),
			slog.String("span_id", sc.SpanID().String()),
		)
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns a TraceHandler over the wrapped handler with attrs added.
func (h *TraceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &TraceHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a TraceHandler over the wrapped handler with the group
// opened.
func (h *TraceHandler) WithGroup(name string) slog.Handler {
	return &TraceHandler{next: h.next.WithGroup(name)}
}
