package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

type ctxKey struct{}

// handlerSaw is what a handler saw of its context and job.
type handlerSaw struct {
	deadline    time.Time
	hasDeadline bool
	err, cause  error
	childErr    error
	value       any
	job         string
}

// sightings collects what each job's handler saw.
type sightings struct {
	mu  sync.Mutex
	saw map[string]handlerSaw
}

func (s *sightings) put(id string, v handlerSaw) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saw == nil {
		s.saw = map[string]handlerSaw{}
	}
	s.saw[id] = v
}

func (s *sightings) get(t testing.TB, id string) handlerSaw {
	t.Helper()
	var v handlerSaw
	systest.Eventually(t, waitFor, fmt.Sprintf("the handler of %s to report", id), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		var ok bool
		v, ok = s.saw[id]
		return ok
	})
	return v
}

// runWith runs a worker for e's kind with Run's context ctx, until the test
// ends, and waits for its first heartbeat.
func (e *env) runWith(t *testing.T, ctx context.Context, cfg worker.Config) (*worker.Worker, context.CancelFunc, <-chan error) {
	t.Helper()
	cfg.Kind, cfg.Logger = e.kind, discard
	w, err := worker.New(e.workerBus.Conn(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx); close(done) }() // closed: the cleanup's wait ends too
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == w.ID() }, "the first heartbeat of %s", w.ID())
	return w, cancel, done
}

// The handler's context derives from Run's (its values reach the handler)
// and carries the attempt's deadline: ctx.Deadline reports it, and at the
// deadline ctx.Err() is context.DeadlineExceeded, for the context and for a
// child of it, whether the handler waits on it or looks only later; the job
// ends TIMEOUT.
func TestHandlerContextCarriesValuesAndDeadline(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ctx")
	var saw sightings
	h := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		switch job.ID() {
		case "values": // returns at once, having read the deadline and a value
			d, ok := ctx.Deadline()
			saw.put(job.ID(), handlerSaw{deadline: d, hasDeadline: ok, value: ctx.Value(ctxKey{}), err: ctx.Err()})
			return worker.Result{Ptr: "ok"}, nil
		case "waits": // waits on a child of its context
			child, stop := context.WithCancel(ctx)
			defer stop()
			<-child.Done()
			saw.put(job.ID(), handlerSaw{err: ctx.Err(), cause: context.Cause(ctx), childErr: child.Err()})
			return worker.Result{}, ctx.Err()
		default: // "late": looks only once its deadline has passed
			until := time.Now().Add(time.Duration(job.Request().GetTimeoutMs())*time.Millisecond + 20*time.Millisecond)
			for time.Now().Before(until) {
				time.Sleep(time.Millisecond)
			}
			saw.put(job.ID(), handlerSaw{err: ctx.Err(), cause: context.Cause(ctx)})
			return worker.Result{}, ctx.Err()
		}
	})
	runCtx := context.WithValue(context.Background(), ctxKey{}, "from Run")
	e.runWith(t, runCtx, worker.Config{Handler: h})

	// A dispatched attempt with a timeout: the deadline is the timeout after
	// the job arrived.
	req := e.job("values", 1)
	req.TimeoutMs = 60_000
	before := time.Now()
	e.publish(t, req)
	got := saw.get(t, "values")
	after := time.Now()
	if got.value != "from Run" {
		t.Errorf("ctx.Value = %v, want the value of Run's context", got.value)
	}
	if !got.hasDeadline || got.deadline.Before(before.Add(time.Minute)) || got.deadline.After(after.Add(time.Minute)) {
		t.Errorf("ctx.Deadline() = %v, %v; want about a minute after the job arrived (%v..%v)", got.deadline, got.hasDeadline, before.Add(time.Minute), after.Add(time.Minute))
	}
	if got.err != nil {
		t.Errorf("ctx.Err() while running = %v", got.err)
	}
	if res := e.results.waitResult(t, "values").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || res.GetResultPtr() != "ok" {
		t.Errorf("values: result %v", res)
	}

	for _, id := range []string{"waits", "late"} {
		req := e.job(id, 1)
		req.TimeoutMs = 50
		e.publish(t, req)
		got := saw.get(t, id)
		if !errors.Is(got.err, context.DeadlineExceeded) || !errors.Is(got.cause, context.DeadlineExceeded) {
			t.Errorf("%s: ctx.Err() = %v, Cause %v; want context.DeadlineExceeded", id, got.err, got.cause)
		}
		if id == "waits" && !errors.Is(got.childErr, context.DeadlineExceeded) {
			t.Errorf("%s: the child's Err() = %v, want context.DeadlineExceeded", id, got.childErr)
		}
		if res := e.results.waitResult(t, id).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_TIMEOUT {
			t.Errorf("%s: result %v, want TIMEOUT", id, res)
		}
	}
}

// A job without a timeout has no deadline; a cancelled job's context says
// context.Canceled with the cause ErrCancelled; at the end of the shutdown
// grace a held job's context says context.Canceled with the cause
// ErrShutdown, and the attempt is handed back (CANCELLED).
func TestHandlerContextCancelAndShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "ctx2")
	var saw sightings
	h := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		_, ok := ctx.Deadline()
		saw.put(job.ID()+"/started", handlerSaw{hasDeadline: ok})
		<-ctx.Done()
		saw.put(job.ID(), handlerSaw{err: ctx.Err(), cause: context.Cause(ctx)})
		return worker.Result{}, ctx.Err()
	})
	w, stop, done := e.runWith(t, context.Background(), worker.Config{Handler: h, ShutdownGrace: 20 * time.Millisecond})

	e.send(t, "cancelled")
	if s := saw.get(t, "cancelled/started"); s.hasDeadline {
		t.Error("a job without a timeout has a deadline")
	}
	p := wire.NewPacket("trace-cancel", "test-scheduler")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "cancelled", Reason: "user asked"}}
	if err := e.observer.Publish(wire.WorkerCancelSubject(w.ID()), p); err != nil {
		t.Fatal(err)
	}
	got := saw.get(t, "cancelled")
	if !errors.Is(got.err, context.Canceled) || !errors.Is(got.cause, worker.ErrCancelled) {
		t.Errorf("cancelled: ctx.Err() = %v, Cause %v; want context.Canceled, worker.ErrCancelled", got.err, got.cause)
	}
	if res := e.results.waitResult(t, "cancelled").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED {
		t.Errorf("cancelled: result %v", res)
	}

	e.send(t, "held")
	saw.get(t, "held/started")
	stop()
	got = saw.get(t, "held")
	if !errors.Is(got.err, context.Canceled) || !errors.Is(got.cause, worker.ErrShutdown) {
		t.Errorf("held at shutdown: ctx.Err() = %v, Cause %v; want context.Canceled, worker.ErrShutdown", got.err, got.cause)
	}
	if res := e.results.waitResult(t, "held").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetError() != worker.ErrShutdown.Error() {
		t.Errorf("held at shutdown: result %v", res)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
	}
}

// The Job a handler gets reads the dispatched request.
func TestJobAccessors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "acc")
	var (
		mu  sync.Mutex
		got []string
	)
	h := worker.HandlerFunc(func(_ context.Context, job *worker.Job) (worker.Result, error) {
		mu.Lock()
		defer mu.Unlock()
		got = []string{job.ID(), job.Topic(), fmt.Sprint(job.Attempt()), string(job.Payload()), job.ContextPtr(),
			fmt.Sprint(job.Env()), job.Tenant(), job.Priority().String(), job.TraceID(), job.WorkerID(), job.Request().GetJobId()}
		return worker.Result{Ptr: "p"}, nil
	})
	w, _, _ := e.runWith(t, context.Background(), worker.Config{Handler: h})
	req := e.job("acc-1", 2)
	req.Payload, req.ContextPtr, req.Tenant = []byte("in"), "memory://ctx", "acme"
	req.EnvVars = map[string]string{"K": "V"}
	req.Priority = pb.JobPriority_JOB_PRIORITY_CRITICAL
	e.publish(t, req)
	e.results.waitResult(t, "acc-1")
	mu.Lock()
	defer mu.Unlock()
	want := []string{"acc-1", "job.acc", "2", "in", "memory://ctx", "map[K:V]", "acme", "JOB_PRIORITY_CRITICAL", "trace-acc-1", w.ID(), "acc-1"}
	if !slices.Equal(got, want) {
		t.Errorf("the job's accessors gave\n%q\nwant\n%q", got, want)
	}
	// NewJob wraps a request for calling a handler directly.
	j := worker.NewJob(&pb.JobRequest{JobId: "unit", Attempt: 1})
	if j.ID() != "unit" || j.Attempt() != 1 || j.WorkerID() != "" || worker.NewJob(nil).ID() != "" {
		t.Errorf("NewJob: %q %d %q", j.ID(), j.Attempt(), j.WorkerID())
	}
}
