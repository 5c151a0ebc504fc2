package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

const waitFor = 10 * time.Second

func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var discard = slog.New(slog.DiscardHandler)

func connect(t testing.TB, url string) *bus.NatsBus {
	t.Helper()
	b, err := bus.Connect(bus.Config{URL: url, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func flush(t testing.TB, b *bus.NatsBus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// packets collects what a subscription receives.
type packets struct {
	mu sync.Mutex
	ps []*pb.BusPacket
}

func (c *packets) add(p *pb.BusPacket) {
	c.mu.Lock()
	c.ps = append(c.ps, p)
	c.mu.Unlock()
}

func (c *packets) all() []*pb.BusPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ps)
}

func (c *packets) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ps)
}

// result returns the result of jobID, if it arrived.
func (c *packets) result(jobID string) (*pb.BusPacket, bool) {
	for _, p := range c.all() {
		if p.GetJobResult().GetJobId() == jobID {
			return p, true
		}
	}
	return nil, false
}

func (c *packets) waitResult(t testing.TB, jobID string) *pb.BusPacket {
	t.Helper()
	var p *pb.BusPacket
	eventually(t, waitFor, func() bool {
		var ok bool
		p, ok = c.result(jobID)
		return ok
	}, "the result of %s", jobID)
	return p
}

// env is a NATS server with an observer connection that sees results and
// heartbeats, and a separate connection for the worker.
type env struct {
	srv        *server.Server
	observer   *bus.NatsBus
	workerBus  *bus.NatsBus
	results    *packets
	heartbeats *packets
	kind       string
}

func newEnv(t *testing.T, kind string) *env {
	t.Helper()
	srv := natstest.RunServer(t)
	e := &env{
		srv: srv, observer: connect(t, srv.ClientURL()), workerBus: connect(t, srv.ClientURL()),
		results: &packets{}, heartbeats: &packets{}, kind: kind,
	}
	if _, err := e.observer.Subscribe(wire.SubjectResult, "", e.results.add); err != nil {
		t.Fatal(err)
	}
	if _, err := e.observer.Subscribe(wire.HeartbeatSubject(kind), "", e.heartbeats.add); err != nil {
		t.Fatal(err)
	}
	flush(t, e.observer)
	return e
}

// running is a worker started by start.
type running struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
}

// start runs a worker until the test ends, and returns once the worker has
// subscribed: its first heartbeat, sent after the subscription on the same
// connection, has arrived.
func (e *env) start(t *testing.T, cfg worker.Config) *running {
	t.Helper()
	cfg.Bus = e.workerBus
	cfg.Kind = e.kind
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == w.ID() }, "the first heartbeat of %s", w.ID())
	return r
}

func (e *env) waitHeartbeat(t testing.TB, match func(*pb.Heartbeat) bool, format string, args ...any) *pb.BusPacket {
	t.Helper()
	var found *pb.BusPacket
	eventually(t, waitFor, func() bool {
		for _, p := range e.heartbeats.all() {
			if match(p.GetHeartbeat()) {
				found = p
				return true
			}
		}
		return false
	}, format, args...)
	return found
}

func (e *env) send(t testing.TB, jobID string) string {
	t.Helper()
	trace := "trace-" + jobID
	req := &pb.JobRequest{JobId: jobID, Topic: wire.JobSubjectPrefix + e.kind}
	if err := e.observer.Publish(wire.JobSubjectPrefix+e.kind, wire.JobRequestPacket(trace, "test-scheduler", req)); err != nil {
		t.Fatal(err)
	}
	return trace
}

// waitRun waits for Run to return.
func (r *running) waitRun(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitFor):
		t.Fatal("Run did not return")
		return nil
	}
}

// releaser is a channel that blocked handlers wait on. Tests register
// release as a cleanup after starting the worker (cleanups run last-in
// first-out), so that a failing test does not leave its worker waiting.
type releaser struct {
	ch   chan struct{}
	once sync.Once
}

func newReleaser() *releaser { return &releaser{ch: make(chan struct{})} }

func (r *releaser) release() { r.once.Do(func() { close(r.ch) }) }

func echoHandler(_ context.Context, job *pb.JobRequest) (string, error) {
	return "memory://test/" + job.GetJobId(), nil
}

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
	if res.GetWorkerId() != r.w.ID() || p.GetSenderId() != r.w.ID() {
		t.Errorf("worker_id %q, sender_id %q; want %q", res.GetWorkerId(), p.GetSenderId(), r.w.ID())
	}
	if p.GetTraceId() != trace {
		t.Errorf("trace_id = %q, want %q", p.GetTraceId(), trace)
	}
	if res.GetExecutionMs() < 0 || p.GetProtocolVersion() != wire.ProtocolVersion {
		t.Errorf("result packet = %v", p)
	}
	eventually(t, waitFor, func() bool { s := r.w.Stats(); return s.Completed == 1 }, "Completed == 1")
	if s := r.w.Stats(); s.Received != 1 || s.Failed != 0 || s.PublishErrors != 0 || s.Active != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestCustomTopicAndQueueGroup(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "py")
	e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler), Topic: "job.code.python", QueueGroup: "pythons"})
	req := &pb.JobRequest{JobId: "p1", Topic: "job.code.python"}
	if err := e.observer.Publish("job.code.python", wire.JobRequestPacket("t", "s", req)); err != nil {
		t.Fatal(err)
	}
	e.results.waitResult(t, "p1")
}

func TestHandlerErrorFailsTheJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(func(context.Context, *pb.JobRequest) (string, error) {
		return "ignored", errors.New("model exploded")
	})})
	trace := e.send(t, "bad")
	p := e.results.waitResult(t, "bad")
	if p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_FAILED || p.GetTraceId() != trace || p.GetJobResult().GetWorkerId() != r.w.ID() {
		t.Errorf("result = %v", p)
	}
	eventually(t, waitFor, func() bool { return r.w.Stats().Failed == 1 }, "Failed == 1")
}

func TestHandlerPanicFailsTheJobAndWorkerGoesOn(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Concurrency: 1, Handler: worker.HandlerFunc(func(ctx context.Context, job *pb.JobRequest) (string, error) {
		if job.GetJobId() == "panic" {
			panic("handler bug")
		}
		return echoHandler(ctx, job)
	})})
	e.send(t, "panic")
	e.send(t, "after")
	if p := e.results.waitResult(t, "panic"); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_FAILED {
		t.Errorf("panicking job: %v", p)
	}
	if p := e.results.waitResult(t, "after"); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job after the panic: %v", p)
	}
	eventually(t, waitFor, func() bool { s := r.w.Stats(); return s.Failed == 1 && s.Completed == 1 && s.Active == 0 }, "stats after panic")
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
	if !strings.HasPrefix(r.w.ID(), "worker-echo-") {
		t.Errorf("default ID = %q", r.w.ID())
	}
}

func TestHeartbeatReportsActiveJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	gate := newReleaser()
	r := e.start(t, worker.Config{
		HeartbeatInterval: 20 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *pb.JobRequest) (string, error) {
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
	eventually(t, waitFor, func() bool {
		all := e.heartbeats.all()
		return len(all) > seen && all[len(all)-1].GetHeartbeat().GetActiveJobs() == 0
	}, "a heartbeat with active_jobs == 0")
}

func TestConcurrencyLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	const limit, jobs = 3, 12
	var current, peak atomic.Int32
	gate := newReleaser()
	r := e.start(t, worker.Config{
		Concurrency: limit,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *pb.JobRequest) (string, error) {
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
	for i := range jobs {
		e.send(t, fmt.Sprint("c", i))
	}
	eventually(t, waitFor, func() bool { return current.Load() == limit }, "%d handlers running", limit)
	// The next job has been taken off the subscription and waits for a slot.
	eventually(t, waitFor, func() bool { return r.w.Stats().Received == limit+1 }, "job %d waiting", limit+1)
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
	if s := r.w.Stats(); s.Completed != jobs || s.Received != jobs {
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
		Handler: worker.HandlerFunc(func(ctx context.Context, job *pb.JobRequest) (string, error) {
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
	// The worker has stopped taking jobs once the server lost its subscription.
	eventually(t, waitFor, func() bool { return e.srv.NumSubscriptions() < subs }, "the job subscription to be drained")
	select {
	case err := <-r.done:
		t.Fatalf("Run returned (%v) with a job in flight", err)
	default:
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
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() && hb.GetActiveJobs() == 0 },
		"the last heartbeat")
}

func TestShutdownGraceCancelsJobs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	started := make(chan struct{})
	r := e.start(t, worker.Config{
		ShutdownGrace: 50 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, _ *pb.JobRequest) (string, error) {
			close(started)
			<-ctx.Done() // only the end of the grace ends this job
			return "", ctx.Err()
		}),
	})
	e.send(t, "stuck")
	<-started
	r.cancel()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if p := e.results.waitResult(t, "stuck"); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_FAILED {
		t.Errorf("cancelled job: %v", p)
	}
}

// With every slot taken and more jobs waiting, shutdown still ends when the
// grace runs out: the waiting jobs are not left behind the running ones.
func TestShutdownGraceWithBacklog(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	var startedN atomic.Int32
	r := e.start(t, worker.Config{
		Concurrency:   1,
		ShutdownGrace: 50 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, _ *pb.JobRequest) (string, error) {
			startedN.Add(1)
			<-ctx.Done()
			return "", ctx.Err()
		}),
	})
	e.send(t, "b1")
	e.send(t, "b2")
	eventually(t, waitFor, func() bool { return startedN.Load() == 1 && r.w.Stats().Received == 2 }, "one job running, one waiting")
	r.cancel()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, id := range []string{"b1", "b2"} {
		if p := e.results.waitResult(t, id); p.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_FAILED {
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
	for name, cfg := range map[string]worker.Config{
		"Bus":     {Handler: h, Kind: "echo"},
		"Handler": {Bus: b, Kind: "echo"},
		"Kind":    {Bus: b, Handler: h},
	} {
		if _, err := worker.New(cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("New without %s = %v, want an error naming it", name, err)
		}
	}
	w1, err := worker.New(worker.Config{Bus: b, Handler: h, Kind: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	w2, err := worker.New(worker.Config{Bus: b, Handler: h, Kind: "echo"})
	if err != nil {
		t.Fatal(err)
	}
	if w1.ID() == w2.ID() || w1.ID() == "" {
		t.Errorf("two workers without an ID got %q and %q", w1.ID(), w2.ID())
	}
}

// nopBus satisfies worker.Bus for tests that never run the worker.
type nopBus struct{}

func (nopBus) Publish(string, *pb.BusPacket) error { return nil }
func (nopBus) Subscribe(string, string, func(*pb.BusPacket)) (func() error, error) {
	return func() error { return nil }, nil
}
