package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// The design document's promise: a job published straight on the topic
// (attempt 0, no reply subject) runs and its result is published.
func TestJobProducesResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})

	trace := e.send(t, "job-1")
	p := e.results.waitResult(t, "job-1")
	res := p.GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || res.GetResultPtr() != "memory://test/job-1" {
		t.Errorf("result = %v", res)
	}
	if res.GetAttempt() != 0 || res.GetError() != "" {
		t.Errorf("attempt %d, error %q; want 0 and none", res.GetAttempt(), res.GetError())
	}
	if res.GetWorkerId() != r.w.ID() || p.GetSenderId() != r.w.ID() {
		t.Errorf("worker_id %q, sender_id %q; want %q", res.GetWorkerId(), p.GetSenderId(), r.w.ID())
	}
	if p.GetTraceId() != trace {
		t.Errorf("trace_id = %q, want %q", p.GetTraceId(), trace)
	}
	if res.GetExecutionMs() < 0 || p.GetProtocolVersion() != wire.ProtocolVersion {
		t.Errorf("result packet = %v", p)
	}
	systest.Eventually(t, waitFor, "Completed == 1", func() bool { s := r.w.Stats(); return s.Completed == 1 })
	if s := r.w.Stats(); s.Received != 1 || s.Failed != 0 || s.PublishErrors != 0 || s.Active != 0 || s.Refused != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestCustomTopicAndQueueGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "py")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler), Topic: "job.code.python", QueueGroup: "pythons"})
	req := &pb.JobRequest{JobId: "p1", Topic: "job.code.python"}
	if err := e.observer.Publish("job.code.python", wire.JobRequestPacket("t", "s", req)); err != nil {
		t.Fatal(err)
	}
	e.results.waitResult(t, "p1")
	// Its heartbeats name the topic it serves.
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool {
		return hb.GetWorkerId() == r.w.ID() && slices.Equal(hb.GetTopics(), []string{"job.code.python"})
	}, "a heartbeat with topics [job.code.python]")
}

func TestHandlerErrorFailsTheJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(func(context.Context, *worker.Job) (worker.Result, error) {
		return worker.Result{Ptr: "ignored"}, errors.New("model exploded")
	})})
	trace := e.publish(t, e.job("bad", 2))
	p := e.results.waitResult(t, "bad")
	res := p.GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_FAILED || p.GetTraceId() != trace || res.GetWorkerId() != r.w.ID() {
		t.Errorf("result = %v", p)
	}
	if res.GetError() != "model exploded" || res.GetAttempt() != 2 {
		t.Errorf("error %q, attempt %d; want the handler's error and attempt 2", res.GetError(), res.GetAttempt())
	}
	systest.Eventually(t, waitFor, "Failed == 1", func() bool { return r.w.Stats().Failed == 1 })
}

func TestHandlerPanicFailsTheJobAndWorkerGoesOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Concurrency: 1, Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if job.ID() == "panic" {
			panic("handler bug")
		}
		return echoHandler(ctx, job)
	})})
	e.send(t, "panic")
	e.send(t, "after")
	p := e.results.waitResult(t, "panic")
	if res := p.GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_FAILED || !strings.Contains(res.GetError(), "handler bug") {
		t.Errorf("panicking job: %v", p)
	}
	if p := e.results.waitResult(t, "after"); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job after the panic: %v", p)
	}
	systest.Eventually(t, waitFor, "stats after panic", func() bool { s := r.w.Stats(); return s.Failed == 1 && s.Completed == 1 && s.Active == 0 })
}

func TestNonJobPacketsAreIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	subject := wire.JobSubjectPrefix + e.kind
	if err := e.observer.Publish(subject, wire.HeartbeatPacket("t", "x", &pb.Heartbeat{WorkerId: "x"})); err != nil {
		t.Fatal(err)
	}
	if err := e.observer.Conn().Publish(subject, []byte("garbage\xff\xff")); err != nil {
		t.Fatal(err)
	}
	e.send(t, "real")
	e.results.waitResult(t, "real")
	if s := r.w.Stats(); s.Received != 1 {
		t.Errorf("Received = %d, want 1 (only the job)", s.Received)
	}
	if n := e.results.len(); n != 1 {
		t.Errorf("%d results, want 1", n)
	}
}

func TestHeartbeatIsSentAtOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	// An interval far beyond the test: only the immediate heartbeat can arrive.
	r := e.start(t, worker.Config{
		Handler: worker.HandlerFunc(echoHandler), HeartbeatInterval: time.Hour,
		ID: "w-fixed", Region: "eu-west", Type: "gpu", Capabilities: []string{"echo", "python"},
	})
	if r.w.ID() != "w-fixed" {
		t.Fatalf("ID = %q", r.w.ID())
	}
	p := e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == "w-fixed" }, "heartbeat")
	hb := p.GetHeartbeat()
	if hb.GetRegion() != "eu-west" || hb.GetType() != "gpu" || !slices.Equal(hb.GetCapabilities(), []string{"echo", "python"}) || hb.GetActiveJobs() != 0 {
		t.Errorf("heartbeat = %v", hb)
	}
	// The lifecycle fields: idle, so the next heartbeat is an idle interval
	// away, no leases, not draining, the topic it serves, and it confirms.
	if hb.GetIntervalMs() != time.Hour.Milliseconds() || len(hb.GetHeld()) != 0 || hb.GetDraining() ||
		!slices.Equal(hb.GetTopics(), []string{"job.echo"}) || !hb.GetConfirms() {
		t.Errorf("heartbeat lifecycle fields = %v", hb)
	}
	if p.GetSenderId() != "w-fixed" || p.GetTraceId() == "" {
		t.Errorf("heartbeat envelope = %v", p)
	}
	if l := hb.GetCpuLoad(); l < 0 || l > 100 {
		t.Errorf("cpu_load = %v, want 0-100", l)
	}
}

func TestHeartbeatDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	p := e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() }, "heartbeat")
	hb := p.GetHeartbeat()
	if hb.GetRegion() != "local" || hb.GetType() != "cpu" || !slices.Equal(hb.GetCapabilities(), []string{"echo"}) {
		t.Errorf("heartbeat defaults = %v", hb)
	}
	if hb.GetIntervalMs() != 5000 || !hb.GetConfirms() || !slices.Equal(hb.GetTopics(), []string{"job.echo"}) {
		t.Errorf("heartbeat lifecycle defaults = %v, want interval_ms 5000", hb)
	}
	if !strings.HasPrefix(r.w.ID(), "worker-echo-") || strings.ContainsAny(r.w.ID(), ". *>") {
		t.Errorf("default ID = %q", r.w.ID())
	}
}

func TestHeartbeatReportsActiveJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	gate := newReleaser()
	r := e.start(t, worker.Config{
		HeartbeatInterval: 20 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			<-gate.ch
			return echoHandler(ctx, job)
		}),
	})
	t.Cleanup(gate.release)
	const n = 3
	for i := range n {
		e.send(t, fmt.Sprint("j", i))
	}
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() && hb.GetActiveJobs() == n },
		"a heartbeat with active_jobs == %d", n)
	if s := r.w.Stats(); s.Active != n {
		t.Errorf("Stats().Active = %d, want %d", s.Active, n)
	}
	seen := e.heartbeats.len()
	gate.release()
	for i := range n {
		e.results.waitResult(t, fmt.Sprint("j", i))
	}
	// A heartbeat sent after the jobs ended shows them gone.
	systest.Eventually(t, waitFor, "a heartbeat with active_jobs == 0", func() bool {
		all := e.heartbeats.all()
		return len(all) > seen && all[len(all)-1].GetHeartbeat().GetActiveJobs() == 0
	})
}

func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	const limit, jobs = 3, 12
	var current, peak atomic.Int32
	gate := newReleaser()
	r := e.start(t, worker.Config{
		Concurrency: limit,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			n := current.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			<-gate.ch
			current.Add(-1)
			return echoHandler(ctx, job)
		}),
	})
	t.Cleanup(gate.release)
	// Published straight on the topic (attempt 0): at capacity they wait for
	// a slot rather than being refused.
	for i := range jobs {
		e.send(t, fmt.Sprint("c", i))
	}
	systest.Eventually(t, waitFor, fmt.Sprintf("%d handlers running", limit), func() bool { return current.Load() == limit })
	// The next job has been taken off the subscription and waits for a slot.
	systest.Eventually(t, waitFor, fmt.Sprintf("job %d waiting", limit+1), func() bool { return r.w.Stats().Received == limit+1 })
	flush(t, e.workerBus)
	if p := peak.Load(); p != limit {
		t.Fatalf("%d handlers ran at once, limit %d", p, limit)
	}
	gate.release()
	for i := range jobs {
		e.results.waitResult(t, fmt.Sprint("c", i))
	}
	if p := peak.Load(); p > limit {
		t.Errorf("%d handlers ran at once, limit %d", p, limit)
	}
	if s := r.w.Stats(); s.Completed != jobs || s.Received != jobs || s.Refused != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestShutdownLetsInFlightJobsFinish(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	started := make(chan struct{})
	gate := newReleaser()
	var handlerErr atomic.Value
	r := e.start(t, worker.Config{
		ShutdownGrace: time.Minute,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			close(started)
			<-gate.ch
			handlerErr.Store(fmt.Sprint(ctx.Err()))
			return echoHandler(ctx, job)
		}),
	})
	t.Cleanup(gate.release)
	e.send(t, "long")
	<-started

	subs := e.srv.NumSubscriptions()
	r.cancel()
	// Shutdown is announced at once: a heartbeat with draining set.
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() && hb.GetDraining() },
		"a heartbeat with draining=true")
	// The worker has stopped taking jobs once the server lost its subscription.
	systest.Eventually(t, waitFor, "the job subscription to be drained", func() bool { return e.srv.NumSubscriptions() < subs })
	if r.returned() {
		t.Fatal("Run returned with a job in flight")
	}
	// A job sent now is not taken.
	e.send(t, "late")
	flush(t, e.observer)

	gate.release()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if p := e.results.waitResult(t, "long"); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("in-flight job: %v", p)
	}
	if got := handlerErr.Load(); got != "<nil>" {
		t.Errorf("in-flight job's context: %v, want not cancelled", got)
	}
	if s := r.w.Stats(); s.Received != 1 {
		t.Errorf("Received = %d after shutdown began, want 1", s.Received)
	}
	// A last heartbeat reports the final load.
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool {
		return hb.GetWorkerId() == r.w.ID() && hb.GetActiveJobs() == 0 && hb.GetDraining() && len(hb.GetHeld()) == 0
	}, "the last heartbeat")
}

// A job still running when the grace ends is handed back: its context is
// cancelled and its result says CANCELLED, "worker shutting down", for the
// attempt it was, so the scheduler offers it again without counting a failure.
func TestShutdownHandsBackUnfinishedJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{ShutdownGrace: 50 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)
	req := e.job("stuck", 3)
	waitAck(t, e.request(req), req, r.w.ID())
	r.cancel()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	p := e.results.waitResult(t, "stuck")
	res := p.GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetError() != "worker shutting down" || res.GetAttempt() != 3 {
		t.Errorf("handed-back job: %v", p)
	}
	if s := r.w.Stats(); s.Cancelled != 1 || s.Failed != 0 || s.Active != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// With every slot taken and more jobs waiting, shutdown still ends when the
// grace runs out: the waiting jobs are not left behind the running ones, and
// are handed back too.
func TestShutdownGraceWithBacklog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	var startedN atomic.Int32
	r := e.start(t, worker.Config{
		Concurrency:   1,
		ShutdownGrace: 50 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, _ *worker.Job) (worker.Result, error) {
			startedN.Add(1)
			<-ctx.Done()
			return worker.Result{}, ctx.Err()
		}),
	})
	e.send(t, "b1")
	e.send(t, "b2")
	systest.Eventually(t, waitFor, "one job running, one waiting", func() bool { return startedN.Load() == 1 && r.w.Stats().Received == 2 })
	r.cancel()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, id := range []string{"b1", "b2"} {
		p := e.results.waitResult(t, id)
		if res := p.GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetError() != "worker shutting down" {
			t.Errorf("job %s: %v", id, p)
		}
	}
	if s := r.w.Stats(); s.Active != 0 {
		t.Errorf("Active = %d after Run returned", s.Active)
	}
}

func TestRunTwiceAtOnceIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	if err := r.w.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("second Run = %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	b := &nopBus{}
	h := worker.HandlerFunc(echoHandler)
	if _, err := worker.New(nil, worker.Config{Handler: h, Kind: "echo"}); err == nil || !strings.Contains(err.Error(), "connection") {
		t.Errorf("New without a connection = %v, want an error saying so", err)
	}
	for name, cfg := range map[string]worker.Config{
		"Handler": {Kind: "echo"},
		"Kind":    {Handler: h},
	} {
		if _, err := worker.NewOnTransport(b, cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("New without %s = %v, want an error naming it", name, err)
		}
	}
	w1, err := worker.NewOnTransport(b, worker.Config{Handler: h, Kind: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := worker.NewOnTransport(b, worker.Config{Handler: h, Kind: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID() == w2.ID() || w1.ID() == "" {
		t.Errorf("two workers without an ID got %q and %q", w1.ID(), w2.ID())
	}
}

// The worker's ID is one token of its cancel subject, sys.worker.<id>.cancel.
func TestIDMustBeOneSubjectToken(t *testing.T) {
	t.Parallel()
	b := &nopBus{}
	h := worker.HandlerFunc(echoHandler)
	for _, id := range []string{"w.1", "w 1", "w*", "w>", "a.b.c", "w\t1"} {
		if w, err := worker.NewOnTransport(b, worker.Config{Handler: h, Kind: "echo", ID: id}); err == nil {
			t.Errorf("New with ID %q = %q, want an error", id, w.ID())
		} else if !strings.Contains(err.Error(), "id") {
			t.Errorf("New with ID %q: %v, want an error about the id", id, err)
		}
	}
	for _, id := range []string{"w-1", "worker_echo_host", "W1"} {
		if w, err := worker.NewOnTransport(b, worker.Config{Handler: h, Kind: "echo", ID: id}); err != nil || w.ID() != id {
			t.Errorf("New with ID %q = %v", id, err)
		}
	}
	// The default ID is one token whatever the host is called (the hostname
	// cannot be set here; the check is that no dot gets through) and
	// whatever the kind is: a kind may name a dotted topic.
	for _, kind := range []string{"echo", "code.python"} {
		w, err := worker.NewOnTransport(b, worker.Config{Handler: h, Kind: kind})
		if err != nil {
			t.Errorf("New with kind %q and no ID: %v", kind, err)
			continue
		}
		if id := w.ID(); strings.ContainsAny(id, ". *>") || !strings.HasPrefix(id, "worker-") {
			t.Errorf("default ID for kind %q = %q, want one subject token", kind, id)
		}
	}
}

// A running job's request and trace id stay whole while the worker takes
// later dispatches: the packets they came in are pooled by the bus and
// reused once the worker has taken them (bus.SubscribeRequests).
func TestJobsOutliveTheirDispatchPackets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	const limit, jobs = 2, 8
	gate := newReleaser()
	t.Cleanup(gate.release)
	type seen struct{ id, ctxPtr, env, tenant, trace string }
	var (
		mu  sync.Mutex
		got []seen
	)
	r := e.start(t, worker.Config{
		Concurrency: limit,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			<-gate.ch // until later dispatches have been decoded
			mu.Lock()
			got = append(got, seen{job.ID(), job.ContextPtr(), job.Env()["k"], job.Tenant(), job.TraceID()})
			mu.Unlock()
			return echoHandler(ctx, job)
		}),
	})
	for i := range jobs {
		req := e.job(fmt.Sprint("o", i), 0)
		req.ContextPtr = fmt.Sprint("memory://ctx/", i)
		req.EnvVars = map[string]string{"k": fmt.Sprint("v", i)}
		req.Tenant = fmt.Sprint("tenant-", i)
		e.publish(t, req)
	}
	// limit jobs run, one more waits for a slot: limit+1 dispatches were
	// taken, and the first limit handed back to the pool.
	systest.Eventually(t, waitFor, "a job waiting for a slot", func() bool { return r.w.Stats().Received == limit+1 })
	gate.release()
	for i := range jobs {
		e.results.waitResult(t, fmt.Sprint("o", i))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != jobs {
		t.Fatalf("%d jobs ran, want %d", len(got), jobs)
	}
	for _, s := range got {
		var i int
		if _, err := fmt.Sscanf(s.id, "o%d", &i); err != nil {
			t.Fatalf("job id %q", s.id)
		}
		want := seen{s.id, fmt.Sprint("memory://ctx/", i), fmt.Sprint("v", i), fmt.Sprint("tenant-", i), "trace-" + s.id}
		if s != want {
			t.Errorf("job ran with %+v, want %+v", s, want)
		}
	}
}
