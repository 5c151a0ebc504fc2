package scheduler_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// recordingSafety wraps the stub and records what it was asked.
type recordingSafety struct {
	mu    sync.Mutex
	asked []string
}

func (r *recordingSafety) Check(req *pb.JobRequest) (scheduler.SafetyDecision, string) {
	r.mu.Lock()
	r.asked = append(r.asked, req.GetJobId())
	r.mu.Unlock()
	return scheduler.NewSafetyStub().Check(req)
}

func (r *recordingSafety) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.asked)
}

// recordingStrategy wraps NaiveStrategy and records the registry snapshots it saw.
type recordingStrategy struct {
	mu   sync.Mutex
	seen []map[string]*pb.Heartbeat
}

func (r *recordingStrategy) PickSubject(req *pb.JobRequest, workers map[string]*pb.Heartbeat) (string, error) {
	r.mu.Lock()
	r.seen = append(r.seen, workers)
	r.mu.Unlock()
	return scheduler.NewNaiveStrategy().PickSubject(req, workers)
}

func (r *recordingStrategy) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

type harness struct {
	engine   *scheduler.Engine
	bus      *fakeBus
	registry *scheduler.MemoryRegistry
	safety   *recordingSafety
	strategy *recordingStrategy
	logs     *logBuffer
}

func newHarness(t *testing.T, level slog.Level) *harness {
	t.Helper()
	h := &harness{
		bus:      &fakeBus{},
		registry: scheduler.NewMemoryRegistry(),
		safety:   &recordingSafety{},
		strategy: &recordingStrategy{},
		logs:     &logBuffer{},
	}
	e, err := scheduler.New(scheduler.Config{
		Bus: h.bus, Safety: h.safety, Registry: h.registry, Strategy: h.strategy,
		ID: "sched-test", Logger: h.logs.logger(level),
	})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	return h
}

func submit(traceID, jobID, topic string) *pb.BusPacket {
	return wire.JobRequestPacket(traceID, "client-1", &pb.JobRequest{JobId: jobID, Topic: topic})
}

func TestSafetyStubBlocksDestroy(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(submit("trace-d", "job-d", scheduler.ForbiddenTopic))

	if p := h.bus.publishes(); len(p) != 0 {
		t.Fatalf("a denied job was published: %+v", p)
	}
	if s := h.engine.Stats(); s.Submitted != 1 || s.Denied != 1 || s.Dispatched != 0 {
		t.Errorf("stats = %+v", s)
	}
	if h.strategy.calls() != 0 {
		t.Error("the strategy was consulted for a denied job")
	}
	logs := h.logs.String()
	for _, want := range []string{"[SAFETY]", "BLOCKED", "job_id=job-d", "trace_id=trace-d", "forbidden topic"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestSafetyStub(t *testing.T) {
	t.Parallel()
	stub := scheduler.NewSafetyStub()
	if d, reason := stub.Check(&pb.JobRequest{Topic: "sys.destroy"}); d != scheduler.SafetyDeny || reason == "" {
		t.Errorf("Check(sys.destroy) = %v, %q; want deny with a reason", d, reason)
	}
	for _, topic := range []string{"job.echo", "", "sys.destroy.all", "SYS.DESTROY"} {
		if d, _ := stub.Check(&pb.JobRequest{Topic: topic}); d != scheduler.SafetyAllow {
			t.Errorf("Check(%q) = %v, want allow", topic, d)
		}
	}
	if d, _ := stub.Check(nil); d != scheduler.SafetyAllow {
		t.Errorf("Check(nil) = %v", d)
	}
	for d, want := range map[scheduler.SafetyDecision]string{scheduler.SafetyAllow: "allow", scheduler.SafetyDeny: "deny", 7: "unknown"} {
		if d.String() != want {
			t.Errorf("SafetyDecision(%d).String() = %q, want %q", int(d), d.String(), want)
		}
	}
}

func TestAllowedJobIsDispatchedWithItsTraceID(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelDebug)
	req := &pb.JobRequest{
		JobId: "job-1", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_INTERACTIVE,
		ContextPtr: "redis://jobs/job-1/context", EnvVars: map[string]string{"A": "1"},
	}
	h.engine.HandlePacket(wire.JobRequestPacket("trace-1", "client-1", req))

	pubs := h.bus.publishes()
	if len(pubs) != 1 {
		t.Fatalf("%d publishes, want 1: %+v", len(pubs), pubs)
	}
	p := pubs[0]
	if p.subject != "job.echo" {
		t.Errorf("subject = %q, want job.echo", p.subject)
	}
	if p.packet.GetTraceId() != "trace-1" {
		t.Errorf("trace_id = %q, want trace-1", p.packet.GetTraceId())
	}
	if p.packet.GetSenderId() != "sched-test" || h.engine.ID() != "sched-test" {
		t.Errorf("sender_id = %q, engine ID %q; want sched-test", p.packet.GetSenderId(), h.engine.ID())
	}
	if p.packet.GetProtocolVersion() != wire.ProtocolVersion || p.packet.GetCreatedAt() == nil {
		t.Errorf("envelope = %v", p.packet)
	}
	if !proto.Equal(p.packet.GetJobRequest(), req) {
		t.Errorf("dispatched request %v, want %v", p.packet.GetJobRequest(), req)
	}
	if s := h.engine.Stats(); s.Submitted != 1 || s.Dispatched != 1 || s.Denied+s.Rejected+s.Unroutable+s.DispatchErrors != 0 {
		t.Errorf("stats = %+v", s)
	}
	if !strings.Contains(h.logs.String(), "[SCHEDULER]") || !strings.Contains(h.logs.String(), "trace_id=trace-1") {
		t.Errorf("debug log lacks the job's way:\n%s", h.logs.String())
	}
}

func TestNoPerJobLogsAtInfo(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(submit("t", "j", "job.echo"))
	h.engine.HandlePacket(wire.HeartbeatPacket("t", "w", &pb.Heartbeat{WorkerId: "w"}))
	h.engine.HandlePacket(wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j"}))
	if logs := h.logs.String(); logs != "" {
		t.Errorf("per-job events logged at info:\n%s", logs)
	}
}

func TestMissingTraceIDGetsOne(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(submit("", "job-a", "job.echo"))
	h.engine.HandlePacket(submit("", "job-b", "job.echo"))
	pubs := h.bus.publishes()
	if len(pubs) != 2 {
		t.Fatalf("%d publishes, want 2", len(pubs))
	}
	a, b := pubs[0].packet.GetTraceId(), pubs[1].packet.GetTraceId()
	if a == "" || b == "" || a == b {
		t.Errorf("trace ids %q and %q: want two distinct new ones", a, b)
	}
}

func TestMissingJobIDIsRejected(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(submit("t", "", "job.echo"))
	// A job_request field that is present but empty.
	h.engine.HandlePacket(&pb.BusPacket{TraceId: "t", Payload: &pb.BusPacket_JobRequest{}})

	if p := h.bus.publishes(); len(p) != 0 {
		t.Fatalf("a job without job_id was published: %+v", p)
	}
	if s := h.engine.Stats(); s.Submitted != 2 || s.Rejected != 2 || s.Dispatched != 0 {
		t.Errorf("stats = %+v", s)
	}
	if h.safety.calls() != 0 {
		t.Error("the safety checker was asked about a rejected job")
	}
	if !strings.Contains(h.logs.String(), "without job_id") {
		t.Errorf("rejection not logged:\n%s", h.logs.String())
	}
}

func TestUnroutableJobIsNotPublished(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	for _, topic := range []string{"", wire.SubjectSubmit, "job.>", "echo"} {
		h.engine.HandlePacket(submit("t", "j-"+topic, topic))
	}
	if p := h.bus.publishes(); len(p) != 0 {
		t.Fatalf("unroutable jobs were published: %+v", p)
	}
	if s := h.engine.Stats(); s.Unroutable != 4 || s.Dispatched != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestDispatchErrorIsCounted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.bus.publishErr = errors.New("bus down")
	h.engine.HandlePacket(submit("t", "j", "job.echo"))
	if s := h.engine.Stats(); s.DispatchErrors != 1 || s.Dispatched != 0 {
		t.Errorf("stats = %+v", s)
	}
	if !strings.Contains(h.logs.String(), "bus down") {
		t.Errorf("dispatch error not logged:\n%s", h.logs.String())
	}
}

func TestHeartbeatsGoToTheRegistry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(wire.HeartbeatPacket("hb", "w1", &pb.Heartbeat{WorkerId: "w1", ActiveJobs: 1}))
	h.engine.HandlePacket(wire.HeartbeatPacket("hb", "w2", &pb.Heartbeat{WorkerId: "w2"}))
	h.engine.HandlePacket(wire.HeartbeatPacket("hb", "w1", &pb.Heartbeat{WorkerId: "w1", ActiveJobs: 5}))

	snap := h.registry.Snapshot()
	if len(snap) != 2 || snap["w1"].GetActiveJobs() != 5 || snap["w2"] == nil {
		t.Fatalf("registry = %v", snap)
	}
	if s := h.engine.Stats(); s.Heartbeats != 3 {
		t.Errorf("Heartbeats = %d, want 3", s.Heartbeats)
	}
	// The strategy decides over the registry's content.
	h.engine.HandlePacket(submit("t", "j", "job.echo"))
	h.strategy.mu.Lock()
	defer h.strategy.mu.Unlock()
	if len(h.strategy.seen) != 1 || len(h.strategy.seen[0]) != 2 {
		t.Errorf("strategy saw %v, want the two workers", h.strategy.seen)
	}
}

func TestResultsAlertsAndUnknownAreCounted(t *testing.T) {
	t.Parallel()
	h := newHarness(t, slog.LevelInfo)
	h.engine.HandlePacket(wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "j", Status: pb.JobStatus_JOB_STATUS_COMPLETED}))
	h.engine.HandlePacket(wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "k", Status: pb.JobStatus_JOB_STATUS_FAILED}))
	h.engine.HandlePacket(&pb.BusPacket{SenderId: "x", Payload: &pb.BusPacket_Alert{Alert: &pb.SystemAlert{Level: "WARN", Message: "disk", Component: "w"}}})
	h.engine.HandlePacket(&pb.BusPacket{SenderId: "ghost", TraceId: "t-ghost"})

	s := h.engine.Stats()
	if s.Results != 2 || s.Alerts != 1 || s.Unknown != 1 || s.Submitted != 0 || s.Heartbeats != 0 {
		t.Errorf("stats = %+v", s)
	}
	if p := h.bus.publishes(); len(p) != 0 {
		t.Errorf("results, alerts or unknown packets caused publishes: %+v", p)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "alert") || !strings.Contains(logs, "disk") || !strings.Contains(logs, "sender_id=ghost") {
		t.Errorf("alert or unknown packet not logged:\n%s", logs)
	}
}

func TestNewRequiresEveryDependency(t *testing.T) {
	t.Parallel()
	full := func() scheduler.Config {
		return scheduler.Config{
			Bus: &fakeBus{}, Safety: scheduler.NewSafetyStub(),
			Registry: scheduler.NewMemoryRegistry(), Strategy: scheduler.NewNaiveStrategy(),
		}
	}
	for name, mutate := range map[string]func(*scheduler.Config){
		"Bus":      func(c *scheduler.Config) { c.Bus = nil },
		"Safety":   func(c *scheduler.Config) { c.Safety = nil },
		"Registry": func(c *scheduler.Config) { c.Registry = nil },
		"Strategy": func(c *scheduler.Config) { c.Strategy = nil },
	} {
		cfg := full()
		mutate(&cfg)
		if _, err := scheduler.New(cfg); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("New without %s = %v, want an error naming it", name, err)
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewEngine without %s did not panic", name)
				}
			}()
			scheduler.NewEngine(cfg.Bus, cfg.Safety, cfg.Registry, cfg.Strategy)
		}()
	}

	a, err := scheduler.New(full())
	if err != nil {
		t.Fatal(err)
	}
	b := scheduler.NewEngine(&fakeBus{}, scheduler.NewSafetyStub(), scheduler.NewMemoryRegistry(), scheduler.NewNaiveStrategy())
	if !strings.HasPrefix(a.ID(), "cortex-scheduler-") || a.ID() == b.ID() {
		t.Errorf("default IDs %q and %q: want distinct cortex-scheduler-... ids", a.ID(), b.ID())
	}
}

func TestUniqueID(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		id := scheduler.UniqueID("p")
		if !strings.HasPrefix(id, "p-") || seen[id] {
			t.Fatalf("UniqueID = %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func TestStartSubscriptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ group, want string }{
		{"", scheduler.DefaultQueueGroup},
		{"my-group", "my-group"},
	} {
		fb := &fakeBus{}
		e, err := scheduler.New(scheduler.Config{
			Bus: fb, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
			Strategy: scheduler.NewNaiveStrategy(), QueueGroup: tc.group, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, s := range fb.subscriptions() {
			if _, dup := got[s.subject]; dup {
				t.Errorf("subscribed %s twice", s.subject)
			}
			got[s.subject] = s.queue
			if s.handler == nil {
				t.Errorf("nil handler for %s", s.subject)
			}
		}
		want := map[string]string{
			wire.SubjectHeartbeats: "", // every replica sees every heartbeat
			wire.SubjectSubmit:     tc.want,
			wire.SubjectResult:     tc.want,
		}
		if len(got) != len(want) {
			t.Errorf("subscriptions %v, want %v", got, want)
		}
		for subject, queue := range want {
			if q, ok := got[subject]; !ok || q != queue {
				t.Errorf("subscription %s: queue %q (present %v), want %q", subject, q, ok, queue)
			}
		}

		// The submit subscription's handler is the engine's.
		for _, s := range fb.subscriptions() {
			if s.subject == wire.SubjectSubmit {
				s.handler(submit("t", "j", "job.echo"))
			}
		}
		if p := fb.publishes(); len(p) != 1 || p[0].subject != "job.echo" {
			t.Errorf("a packet through the submit subscription gave publishes %+v", p)
		}

		if err := e.Start(context.Background()); err == nil {
			t.Error("a second Start succeeded")
		}
		if err := e.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		if n := fb.drainCount(); n != 3 {
			t.Errorf("Stop drained %d subscriptions, want 3", n)
		}
		if err := e.Stop(context.Background()); err != nil || fb.drainCount() != 3 {
			t.Errorf("a second Stop: %v, drains %d", err, fb.drainCount())
		}
	}
}

func TestStartFailureDrainsWhatItSubscribed(t *testing.T) {
	t.Parallel()
	fb := &fakeBus{failOn: wire.SubjectResult}
	e, err := scheduler.New(scheduler.Config{
		Bus: fb, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "subscribe refused") {
		t.Fatalf("Start = %v, want the subscribe error", err)
	}
	if subs, drains := len(fb.subscriptions()), fb.drainCount(); drains != subs {
		t.Errorf("%d subscriptions made, %d drained", subs, drains)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	fb := &fakeBus{}
	e, err := scheduler.New(scheduler.Config{
		Bus: fb, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(fb.subscriptions()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not subscribe")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if fb.drainCount() != 3 {
		t.Errorf("Run drained %d subscriptions, want 3", fb.drainCount())
	}
}
