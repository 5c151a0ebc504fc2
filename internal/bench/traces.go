package bench

import (
	"context"
	"sync/atomic"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/tracing"
)

// benchTraces records the system's spans during a bench with
// Options.Traces: the scheduler's and the workers', with trace headers on
// the bus, batched as OTLP export would batch them, into an exporter that
// counts and drops them (no collector is measured).
type benchTraces struct {
	tp       *sdktrace.TracerProvider
	exported atomic.Int64
}

type countingExporter struct{ n *atomic.Int64 }

func (c countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	c.n.Add(int64(len(spans)))
	return nil
}
func (countingExporter) Shutdown(context.Context) error { return nil }

func newBenchTraces(on bool) *benchTraces {
	if !on {
		return nil
	}
	t := &benchTraces{}
	t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(countingExporter{&t.exported}))
	tracing.Use(t.tp)
	return t
}

// observer is the scheduler's tracing observer on sb, which it turns trace
// headers on for.
func (t *benchTraces) observer(sb *bus.NatsBus) scheduler.Observer {
	if t == nil {
		return nil
	}
	sb.EnableTraceHeaders()
	return tracing.NewScheduler(sb)
}

func (t *benchTraces) provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.tp
}

// stop flushes and turns tracing off.
func (t *benchTraces) stop(p *parts) {
	if t == nil {
		return
	}
	p.stop = append(p.stop, func() error {
		err := t.tp.Shutdown(context.Background())
		tracing.Off()
		return err
	})
}
