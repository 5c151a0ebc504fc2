package worker_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// waitFor bounds every wait of these tests. Nothing is timed: a wait that
// reaches it has failed.
const waitFor = 10 * time.Second

var discard = slog.New(slog.DiscardHandler)

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

// results returns the results of jobID received so far, in order.
func (c *packets) results(jobID string) []*pb.BusPacket {
	var out []*pb.BusPacket
	for _, p := range c.all() {
		if p.GetJobResult().GetJobId() == jobID {
			out = append(out, p)
		}
	}
	return out
}

// waitResult waits for the result of jobID (any attempt) and returns the first.
func (c *packets) waitResult(t testing.TB, jobID string) *pb.BusPacket {
	t.Helper()
	return c.waitResultAttempt(t, jobID, -1)
}

// waitResultAttempt waits for the result of one attempt of jobID (-1: any).
func (c *packets) waitResultAttempt(t testing.TB, jobID string, attempt int32) *pb.BusPacket {
	t.Helper()
	var found *pb.BusPacket
	systest.Eventually(t, waitFor, fmt.Sprintf("the result of %s (attempt %d)", jobID, attempt), func() bool {
		for _, p := range c.results(jobID) {
			if attempt < 0 || p.GetJobResult().GetAttempt() == attempt {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

// env is a NATS server with an observer connection that sees results and
// heartbeats and plays the scheduler, and a separate connection for the worker.
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
		srv: srv, observer: systest.Connect(t, srv.ClientURL(), ""), workerBus: systest.Connect(t, srv.ClientURL(), ""),
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
// subscribed: its first heartbeat, sent after both its subscriptions (jobs
// and cancellations) on the same connection, has arrived.
func (e *env) start(t *testing.T, cfg worker.Config) *running {
	t.Helper()
	cfg.Kind = e.kind
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	w, err := worker.New(e.workerBus.Conn(), cfg)
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

// heartbeatsOf returns the heartbeats of one worker received so far, in order.
func (e *env) heartbeatsOf(workerID string) []*pb.Heartbeat {
	var out []*pb.Heartbeat
	for _, p := range e.heartbeats.all() {
		if hb := p.GetHeartbeat(); hb.GetWorkerId() == workerID {
			out = append(out, hb)
		}
	}
	return out
}

func (e *env) waitHeartbeat(t testing.TB, match func(*pb.Heartbeat) bool, format string, args ...any) *pb.BusPacket {
	t.Helper()
	var found *pb.BusPacket
	systest.Eventually(t, waitFor, fmt.Sprintf(format, args...), func() bool {
		for _, p := range e.heartbeats.all() {
			if match(p.GetHeartbeat()) {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

// job is a request for the env's topic.
func (e *env) job(jobID string, attempt int32) *pb.JobRequest {
	return &pb.JobRequest{JobId: jobID, Topic: wire.JobSubjectPrefix + e.kind, Attempt: attempt}
}

// publish publishes req on the env's topic with no reply subject, as the
// design document's sender does (attempt 0) or a scheduler might.
func (e *env) publish(t testing.TB, req *pb.JobRequest) string {
	t.Helper()
	trace := "trace-" + req.GetJobId()
	if err := e.observer.Publish(wire.JobSubjectPrefix+e.kind, wire.JobRequestPacket(trace, "test-scheduler", req)); err != nil {
		t.Fatal(err)
	}
	return trace
}

// send publishes job jobID, attempt 0.
func (e *env) send(t testing.TB, jobID string) string {
	t.Helper()
	return e.publish(t, e.job(jobID, 0))
}

// answer is what a request got: the worker's JobAck or JobAnswer, or an error.
type answer struct {
	p   *pb.BusPacket
	err error
}

// request dispatches req as the scheduler does, with bus.Request, and
// delivers the worker's answer on the returned channel.
func (e *env) request(req *pb.JobRequest) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		p, err := e.observer.Request(ctx, wire.JobSubjectPrefix+e.kind, wire.JobRequestPacket("trace-"+req.GetJobId(), "test-scheduler", req))
		ch <- answer{p, err}
	}()
	return ch
}

// waitAnswer waits for a request's answer, failing on an error.
func waitAnswer(t testing.TB, ch <-chan answer) *pb.BusPacket {
	t.Helper()
	a := waitAnswerOrErr(t, ch)
	if a.err != nil {
		t.Fatalf("request: %v", a.err)
	}
	return a.p
}

func waitAnswerOrErr(t testing.TB, ch <-chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(waitFor + 5*time.Second):
		t.Fatal("the request was never answered")
		return answer{}
	}
}

// waitAck waits for a request's answer and checks it is the JobAck of the
// attempt by workerID.
func waitAck(t testing.TB, ch <-chan answer, req *pb.JobRequest, workerID string) {
	t.Helper()
	p := waitAnswer(t, ch)
	ack := p.GetJobAck()
	if ack == nil {
		t.Fatalf("dispatch of %s attempt %d answered %v, want a JobAck", req.GetJobId(), req.GetAttempt(), p)
	}
	if ack.GetJobId() != req.GetJobId() || ack.GetAttempt() != req.GetAttempt() || ack.GetWorkerId() != workerID {
		t.Errorf("JobAck = %v, want job %s attempt %d worker %s", ack, req.GetJobId(), req.GetAttempt(), workerID)
	}
	if p.GetSenderId() != workerID || p.GetTraceId() != "trace-"+req.GetJobId() || p.GetProtocolVersion() != wire.ProtocolVersion {
		t.Errorf("JobAck envelope = %v", p)
	}
}

// waitRefusal waits for a request's answer and checks it is a retryable
// refusal for reason.
func waitRefusal(t testing.TB, ch <-chan answer, reason string) {
	t.Helper()
	p := waitAnswer(t, ch)
	a := p.GetJobAnswer()
	if a == nil || a.GetOk() || a.GetError() != reason || !a.GetRetryable() {
		t.Fatalf("answer = %v, want a retryable refusal %q", p, reason)
	}
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

// returned reports whether Run has returned, without waiting.
func (r *running) returned() bool {
	select {
	case err := <-r.done:
		r.done <- err
		return true
	default:
		return false
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

// gates holds each attempt of each job in its handler until the test
// releases it, or the handler's context ends.
type gates struct {
	mu      sync.Mutex
	gate    map[string]*releaser
	started map[string]bool
	causes  map[string]error // why the context of an attempt ended, if it did
}

func newGates() *gates {
	return &gates{gate: map[string]*releaser{}, started: map[string]bool{}, causes: map[string]error{}}
}

func gateKey(jobID string, attempt int32) string { return fmt.Sprintf("%s#%d", jobID, attempt) }

func (g *gates) get(key string) *releaser {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.gate[key]
	if r == nil {
		r = newReleaser()
		g.gate[key] = r
	}
	return r
}

func (g *gates) release(jobID string, attempt int32) { g.get(gateKey(jobID, attempt)).release() }

func (g *gates) releaseAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, r := range g.gate {
		r.release()
	}
	g.gate = map[string]*releaser{}
}

func (g *gates) handler() worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		key := gateKey(job.ID(), int32(job.Attempt()))
		gate := g.get(key)
		g.mu.Lock()
		g.started[key] = true
		g.mu.Unlock()
		select {
		case <-gate.ch:
			return echoHandler(ctx, job)
		case <-ctx.Done():
			g.mu.Lock()
			g.causes[key] = context.Cause(ctx)
			g.mu.Unlock()
			return worker.Result{}, ctx.Err()
		}
	})
}

func (g *gates) waitStarted(t testing.TB, jobID string, attempt int32) {
	t.Helper()
	key := gateKey(jobID, attempt)
	systest.Eventually(t, waitFor, fmt.Sprintf("the handler of %s to start", key), func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.started[key]
	})
}

// cause is why the context of an attempt ended (nil: it has not).
func (g *gates) cause(jobID string, attempt int32) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.causes[gateKey(jobID, attempt)]
}

func echoHandler(_ context.Context, job *worker.Job) (worker.Result, error) {
	return worker.Result{Ptr: "memory://test/" + job.ID()}, nil
}

// nopBus is a worker.Transport for tests that never run the worker.
type nopBus struct{}

func (nopBus) Publish(string, *pb.BusPacket) error { return nil }
func (nopBus) Subscribe(string, string, func(*pb.BusPacket)) (func() error, error) {
	return func() error { return nil }, nil
}
func (nopBus) SubscribeWithReply(string, string, func(*pb.BusPacket, string)) (func() error, error) {
	return func() error { return nil }, nil
}
