package tracing_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tracing"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

func TestTraceIDRoundTrip(t *testing.T) {
	const job = "400f4022-9c1e-4b53-8a36-8f1c0e2d7a11"
	id, ok := tracing.TraceID(job)
	if !ok || id.String() != "400f40229c1e4b538a368f1c0e2d7a11" {
		t.Fatalf("TraceID(%s) = %s, %v", job, id, ok)
	}
	if got := tracing.JobTraceID(id); got != job {
		t.Fatalf("JobTraceID = %s, want %s", got, job)
	}
	if _, ok := tracing.TraceID("not-a-uuid"); ok {
		t.Fatal("a trace_id that is no UUID gave a trace id")
	}
}

// TestJobTraceAcrossNATS runs a job from pkg/client through a scheduler to
// a pkg/worker worker and back over a real NATS server, with an in-memory
// exporter: every span is in the job's trace, with the parentage the
// documentation gives.
func TestJobTraceAcrossNATS(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	tracing.Use(tp)
	t.Cleanup(tracing.Off)

	srv := natstest.RunServer(t)
	url := srv.ClientURL()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, stop := context.WithCancel(context.Background())
	done, started := make(chan error, 1), make(chan struct{})
	go func() {
		done <- system.RunScheduler(ctx, system.SchedulerOptions{NatsURL: url, ID: "trace-test", Logger: log,
			Settings: config.Scheduler{MaxAttempts: 1}, Started: func() { close(started) }})
	}()
	t.Cleanup(func() { stop(); <-done })
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("scheduler: %v", err)
	}

	wnc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer wnc.Close()
	handlerSpans := make(chan trace.SpanContext, 1)
	w, err := worker.New(wnc, worker.Config{Kind: "echo", Logger: log, HeartbeatInterval: 100 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, j *worker.Job) (worker.Result, error) {
			select {
			case handlerSpans <- trace.SpanContextFromContext(ctx):
			default:
			}
			return worker.Result{Ptr: "memory://echo/" + j.ID()}, nil
		})})
	if err != nil {
		t.Fatal(err)
	}
	wctx, wstop := context.WithCancel(context.Background())
	wdone := make(chan error, 1)
	go func() { wdone <- w.Run(wctx) }()
	defer func() { wstop(); <-wdone }()
	<-w.Ready()

	cnc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer cnc.Close()
	c, err := client.New(cnc, client.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	// The worker must be known before the job goes: wait for it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, err := c.Workers(context.Background())
		if err == nil && len(ws) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the worker was not seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	wctx2, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	job, err := c.Submit(wctx2, &pb.JobRequest{Topic: "job.echo"})
	if err != nil {
		t.Fatal(err)
	}
	if job, err = c.Wait(wctx2, job.GetJobId()); err != nil || job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		t.Fatalf("job: %v %v", job.GetState(), err)
	}

	want, ok := tracing.TraceID(job.GetTraceId())
	if !ok {
		t.Fatalf("the job's trace_id %q is no trace id", job.GetTraceId())
	}
	// The result span ends when the scheduler records the result, which
	// Wait saw: all six are exported by now, or very soon.
	names := []string{tracing.SpanSubmit, tracing.SpanAdmission, tracing.SpanPlacement, tracing.SpanDispatch, tracing.SpanWorkerRun, tracing.SpanResult}
	byName := map[string]tracetest.SpanStub{}
	deadline = time.Now().Add(5 * time.Second)
	for {
		byName = map[string]tracetest.SpanStub{}
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID() == want {
				byName[s.Name] = s
			}
		}
		if len(byName) == len(names) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, n := range names {
		if _, ok := byName[n]; !ok {
			t.Errorf("no %q span in the job's trace %s (have %d spans)", n, want, len(byName))
		}
	}
	if t.Failed() {
		for _, s := range exp.GetSpans() {
			t.Logf("span %q trace %s id %s parent %s", s.Name, s.SpanContext.TraceID(), s.SpanContext.SpanID(), s.Parent.SpanID())
		}
		t.FailNow()
	}
	parentOf := map[string]string{
		tracing.SpanAdmission: tracing.SpanSubmit,
		tracing.SpanPlacement: tracing.SpanSubmit,
		tracing.SpanDispatch:  tracing.SpanSubmit,
		tracing.SpanWorkerRun: tracing.SpanDispatch,
		tracing.SpanResult:    tracing.SpanWorkerRun,
	}
	for child, parent := range parentOf {
		if got, want := byName[child].Parent.SpanID(), byName[parent].SpanContext.SpanID(); got != want {
			t.Errorf("%q's parent is %s, want %q (%s)", child, got, parent, want)
		}
	}
	if byName[tracing.SpanSubmit].Parent.IsValid() {
		t.Errorf("the submit span has a parent: %s", byName[tracing.SpanSubmit].Parent.SpanID())
	}
	// The handler runs in the worker run span.
	if handlerSpan := <-handlerSpans; handlerSpan.SpanID() != byName[tracing.SpanWorkerRun].SpanContext.SpanID() {
		t.Errorf("the handler's context holds span %s, not the worker run's", handlerSpan.SpanID())
	}
	attrs := map[string]string{}
	for _, kv := range byName[tracing.SpanAdmission].Attributes {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	if attrs["cortex.decision"] != "allow" || attrs["cortex.job_id"] != job.GetJobId() {
		t.Errorf("admission attributes %v", attrs)
	}
	if _, ok := attrs["cortex.rule_id"]; !ok {
		t.Errorf("admission has no cortex.rule_id: %v", attrs)
	}
}
