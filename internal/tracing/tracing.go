// Package tracing is CortexOS's OpenTelemetry tracing: a job's way from
// the client's submit through the scheduler's admission, placement and
// dispatch to the worker's run and back to the result is one trace, whose
// id is the job's trace_id (a UUID is 32 hex digits: the same 128 bits).
// The trace context travels in the W3C traceparent header of the NATS
// messages (bus.HeaderTraceparent). Spans are exported with OTLP/HTTP when
// OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is
// set; otherwise nothing is set up and tracing costs nothing but an atomic
// load per packet. docs/observability.md.
package tracing

import (
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of CortexOS's spans.
const ScopeName = "github.com/cortex-os/core"

// Span names, in a job's order.
const (
	SpanSubmit    = "submit"
	SpanAdmission = "admission"
	SpanPlacement = "placement"
	SpanDispatch  = "dispatch"
	SpanWorkerRun = "worker run"
	SpanResult    = "result"
)

var on atomic.Bool

// Enabled reports whether spans are recorded: Setup found an endpoint, or
// Use installed a provider.
func Enabled() bool { return on.Load() }

// Tracer is CortexOS's tracer on the global provider.
func Tracer() trace.Tracer { return otel.Tracer(ScopeName) }

// Use installs tp as the global provider, with the W3C trace-context
// propagator, and turns tracing on. Tests install a provider with an
// in-memory exporter.
func Use(tp trace.TracerProvider) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	on.Store(true)
}

// Off turns tracing off again (tests).
func Off() { on.Store(false) }

// EndpointSet reports whether the environment names an OTLP endpoint.
func EndpointSet() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup exports spans with OTLP/HTTP, configured by the standard
// OTEL_EXPORTER_OTLP_* variables, when an endpoint is set; service names
// the process (OTEL_SERVICE_NAME overrides it). Without an endpoint it does
// nothing. shutdown flushes the spans still buffered.
func Setup(ctx context.Context, service string, log *slog.Logger) (shutdown func(context.Context) error, err error) {
	if !EndpointSet() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("tracing: %w", err)
	}
	if s := os.Getenv("OTEL_SERVICE_NAME"); s != "" {
		service = s
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attribute.String("service.name", service)))
	if err != nil {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	Use(tp)
	if log != nil {
		log.Info("traces exported with OTLP", "service", service)
	}
	return tp.Shutdown, nil
}

// TraceID is the OpenTelemetry trace id of a job's trace_id: a UUID's 16
// bytes, or 32 hex digits. ok is false for any other trace_id.
func TraceID(jobTraceID string) (id trace.TraceID, ok bool) {
	if u, err := uuid.Parse(jobTraceID); err == nil {
		copy(id[:], u[:])
		return id, id.IsValid()
	}
	if len(jobTraceID) == 32 {
		if _, err := hex.Decode(id[:], []byte(strings.ToLower(jobTraceID))); err == nil {
			return id, id.IsValid()
		}
	}
	return trace.TraceID{}, false
}

// JobTraceID is the trace_id a job gets for the trace id: the same 16
// bytes as a UUID (8-4-4-4-12 hex digits).
func JobTraceID(id trace.TraceID) string {
	return uuid.UUID(id).String()
}

// Traceparent is the W3C traceparent header of sc ("" if sc is invalid):
// 00-<trace id>-<span id>-<flags>.
func Traceparent(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	var b [55]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tid[:])
	b[35] = '-'
	hex.Encode(b[36:52], sid[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{byte(sc.TraceFlags())})
	return string(b[:])
}

// Remote is the span context of a traceparent header, marked remote;
// invalid if tp does not parse.
func Remote(tp string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	ctx := propagation.TraceContext{}.Extract(context.Background(), propagation.MapCarrier{"traceparent": tp})
	return trace.SpanContextFromContext(ctx)
}

// Parent is the context to start a job's span in: the traceparent it came
// with, else a remote parent in the job's own trace (its trace_id's) with
// a span id derived from it, so that every span of a job is in the job's
// trace even where the header was lost (a job recovered from the store
// after a restart).
func Parent(ctx context.Context, jobTraceID, tp string) context.Context {
	if sc := Remote(tp); sc.IsValid() {
		if id, ok := TraceID(jobTraceID); !ok || sc.TraceID() == id {
			return trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	id, ok := TraceID(jobTraceID)
	if !ok {
		return ctx
	}
	var sid trace.SpanID
	copy(sid[:], id[8:])
	sid[0] |= 1 // never all zero
	return trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: id, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true,
	}))
}
