package client

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/tracing"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// startSubmit starts the submit span of a job when spans are recorded
// (OTEL_EXPORTER_OTLP_ENDPOINT set up, or ctx carries a span of the
// caller's), and returns the job's trace id: the span's trace id as a UUID
// when traceID is "" (the job's trace_id is its OpenTelemetry trace), else
// traceID, in whose trace the span is then started. Its traceparent goes
// in the submission's header. Without tracing it returns a new UUID and a
// nil end.
func (c *Client) startSubmit(ctx context.Context, req *pb.JobRequest, traceID string) (string, func(error)) {
	caller := trace.SpanContextFromContext(ctx)
	if !tracing.Enabled() && !caller.IsValid() {
		if traceID == "" {
			traceID = newTraceID()
		}
		return traceID, nil
	}
	if traceID != "" {
		ctx = tracing.Parent(ctx, traceID, tracing.Traceparent(caller))
	}
	_, span := tracing.Tracer().Start(ctx, tracing.SpanSubmit, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("cortex.job_id", req.GetJobId()), attribute.String("cortex.topic", req.GetTopic())))
	sc := span.SpanContext()
	if traceID == "" {
		if sc.IsValid() {
			traceID = tracing.JobTraceID(sc.TraceID())
		} else {
			traceID = newTraceID()
		}
	}
	c.bus.EnableTraceHeaders()
	c.bus.SetTraceparent(traceID, tracing.Traceparent(sc))
	return traceID, func(err error) {
		c.bus.SetTraceparent(traceID, "")
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}
}
