package tracing_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/tracing"
)

func TestLogHandlerAddsTraceAndSpan(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewTextHandler(&buf, nil))).With("component", "worker")
	tid, _ := tracing.TraceID("400f4022-9c1e-4b53-8a36-8f1c0e2d7a11")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled})
	log.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "handled")
	log.Info("no span")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if !strings.Contains(lines[0], "trace_id=400f4022-9c1e-4b53-8a36-8f1c0e2d7a11") || !strings.Contains(lines[0], "span_id=0102030405060708") {
		t.Errorf("with a span: %s", lines[0])
	}
	if strings.Contains(lines[1], "span_id") {
		t.Errorf("without a span: %s", lines[1])
	}
}

func TestTraceparentRoundTrip(t *testing.T) {
	tid, _ := tracing.TraceID("400f4022-9c1e-4b53-8a36-8f1c0e2d7a11")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled})
	tp := tracing.Traceparent(sc)
	if tp != "00-400f40229c1e4b538a368f1c0e2d7a11-0102030405060708-01" {
		t.Fatalf("Traceparent = %s", tp)
	}
	back := tracing.Remote(tp)
	if back.TraceID() != tid || back.SpanID() != sc.SpanID() || !back.IsSampled() || !back.IsRemote() {
		t.Fatalf("Remote(%s) = %+v", tp, back)
	}
}
