package worker

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/tracing"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// traceHeaders is the bus's side of trace propagation (the NATS bus).
type traceHeaders interface {
	EnableTraceHeaders()
	TakeTraceparent(traceID string) string
	SetTraceparent(traceID, tp string)
}

// setupTracing turns trace propagation on when spans are recorded: the
// process set up OTLP export (OTEL_EXPORTER_OTLP_ENDPOINT), or
// Config.TracerProvider is set.
func (w *Worker) setupTracing() {
	h, ok := w.bus.(traceHeaders)
	if !ok || (w.cfg.TracerProvider == nil && !tracing.Enabled()) {
		return
	}
	h.EnableTraceHeaders()
	w.traceHeaders = h
	if w.cfg.TracerProvider != nil {
		w.tracer = w.cfg.TracerProvider.Tracer(tracing.ScopeName)
	} else {
		w.tracer = tracing.Tracer()
	}
}

// startRun starts the job's "worker run" span, the child of the
// scheduler's dispatch span (its context came in the job's traceparent
// header), and returns the handler's context with it. Without tracing it
// returns ctx and a nil span.
func (w *Worker) startRun(ctx context.Context, req *pb.JobRequest, traceID string) (context.Context, trace.Span) {
	if w.tracer == nil {
		return ctx, nil
	}
	parent := tracing.Parent(ctx, traceID, w.traceHeaders.TakeTraceparent(traceID))
	return w.tracer.Start(parent, tracing.SpanWorkerRun, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("cortex.job_id", req.GetJobId()), attribute.String("cortex.topic", req.GetTopic()),
		attribute.Int("cortex.attempt", int(req.GetAttempt())), attribute.String("cortex.worker_id", w.cfg.ID)))
}

// sendingResult makes the result of the job carry span's context, so that
// the scheduler's result span is its child; done ends it.
func (w *Worker) sendingResult(span trace.Span, traceID string, res *pb.JobResult) (done func()) {
	if span == nil {
		return func() {}
	}
	span.SetAttributes(attribute.String("cortex.status", res.GetStatus().String()))
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		span.SetStatus(codes.Error, res.GetError())
	}
	w.traceHeaders.SetTraceparent(traceID, tracing.Traceparent(span.SpanContext()))
	return func() {
		w.traceHeaders.SetTraceparent(traceID, "")
		span.End()
	}
}

// spanID is the span's id for log lines ("" without a span).
func spanID(span trace.Span) string {
	if span == nil {
		return ""
	}
	return span.SpanContext().SpanID().String()
}
