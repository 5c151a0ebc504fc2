package scheduler_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

func TestSafetyStub(t *testing.T) {
	t.Parallel()
	stub := scheduler.NewSafetyStub()
	ctx := context.Background()
	if v, err := stub.Check(ctx, &pb.JobRequest{Topic: "sys.destroy"}); err != nil || v.Decision != scheduler.SafetyDeny || v.Reason == "" || v.RuleID == "" {
		t.Errorf("Check(sys.destroy) = %+v, %v; want deny with a reason and a rule", v, err)
	}
	for _, topic := range []string{"job.echo", "", "sys.destroy.all", "SYS.DESTROY"} {
		if v, _ := stub.Check(ctx, &pb.JobRequest{Topic: topic}); v.Decision != scheduler.SafetyAllow {
			t.Errorf("Check(%q) = %v, want allow", topic, v.Decision)
		}
	}
	if v, _ := stub.Check(ctx, nil); v.Decision != scheduler.SafetyAllow {
		t.Errorf("Check(nil) = %v", v.Decision)
	}
	for d, want := range map[scheduler.SafetyDecision]string{scheduler.SafetyAllow: "allow", scheduler.SafetyDeny: "deny", scheduler.SafetyThrottle: "throttle", 7: "unknown"} {
		if d.String() != want {
			t.Errorf("SafetyDecision(%d).String() = %q, want %q", int(d), d.String(), want)
		}
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
		if !strings.HasPrefix(id, "p-") || seen[id] || strings.ContainsAny(id, ". *>") {
			t.Fatalf("UniqueID = %q (seen before: %v): want a distinct subject token", id, seen[id])
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
		fb.fallback("", ackBy("w-1"))
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
		type key struct {
			kind    subKind
			subject string
		}
		got := map[key]string{}
		replies := 0
		for _, s := range fb.subscriptions() {
			if s.kind == kindReplies {
				replies++
				if !strings.HasSuffix(s.subject, ".>") || strings.HasPrefix(s.subject, "sys.") || strings.HasPrefix(s.subject, "job.") {
					t.Errorf("replies subscription on %q: want a private wildcard", s.subject)
				}
				continue
			}
			k := key{s.kind, s.subject}
			if _, dup := got[k]; dup {
				t.Errorf("%s %s twice", s.kind, s.subject)
			}
			got[k] = s.queue
		}
		if replies != 1 {
			t.Errorf("%d replies subscriptions, want 1", replies)
		}
		want := map[key]string{
			{kindSubscribe, wire.SubjectHeartbeats}: "", // every replica sees every heartbeat
			{kindSubscribe, wire.SubjectJobFollow}:  "", // and every follow announcement
			{kindConsume, wire.SubjectSubmit}:       tc.want,
			{kindServe, wire.SubjectQuery}:          tc.want,
			{kindServe, wire.SubjectCancel}:         tc.want,
		}
		for k, queue := range want {
			if q, ok := got[k]; !ok || q != queue {
				t.Errorf("%s %s: queue %q (present %v), want %q", k.kind, k.subject, q, ok, queue)
			}
		}
		// Results are shared by the replicas too, through a durable group of their own.
		if q, ok := got[key{kindConsume, wire.SubjectResult}]; !ok || !strings.HasPrefix(q, tc.want) {
			t.Errorf("results consumed by %q (present %v), want the group %q", q, ok, tc.want)
		}
		if len(got) != len(want)+1 {
			t.Errorf("subscriptions %v", got)
		}

		// The intake's handler is the engine's: a submission through it is
		// dispatched on its topic, and confirmed through the replies.
		if err := fb.submit(t, submitPacket("t", request("j", "job.echo")), ""); err != nil {
			t.Fatal(err)
		}
		if d := fb.dispatches(); len(d) != 1 || d[0].subject != "job.echo" {
			t.Errorf("a packet through the intake gave dispatches %+v", d)
		}
		systest.Eventually(t, waitLimit, "the confirmation to be recorded", func() bool { return e.Stats().Dispatched == 1 })

		if err := e.Start(context.Background()); err == nil {
			t.Error("a second Start succeeded")
		}
		if err := e.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
		n := len(fb.subscriptions())
		if fb.drainCount() != n {
			t.Errorf("Stop drained %d of %d subscriptions", fb.drainCount(), n)
		}
		if err := e.Stop(context.Background()); err != nil || fb.drainCount() != n {
			t.Errorf("a second Stop: %v, drains %d", err, fb.drainCount())
		}
		if v := fb.violated(); len(v) != 0 {
			t.Errorf("bus misuse: %v", v)
		}
	}
}

func TestStartFailureDrainsWhatItSubscribed(t *testing.T) {
	t.Parallel()
	for _, subject := range []string{wire.SubjectHeartbeats, wire.SubjectResult, wire.SubjectCancel, wire.SubjectSubmit} {
		fb := &fakeBus{failOn: subject}
		e, err := scheduler.New(scheduler.Config{
			Bus: fb, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
			Strategy: scheduler.NewNaiveStrategy(), Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "subscribe refused") {
			t.Fatalf("Start failing on %s = %v, want the subscribe error", subject, err)
		}
		if subs, drains := len(fb.subscriptions()), fb.drainCount(); drains != subs {
			t.Errorf("failing on %s: %d subscriptions made, %d drained", subject, subs, drains)
		}
		// A failed Start leaves the engine stopped: Stop is a no-op, and it
		// can be started again once the bus works.
		if err := e.Stop(context.Background()); err != nil {
			t.Errorf("Stop after a failed Start: %v", err)
		}
		fb.mu.Lock()
		fb.failOn = ""
		fb.mu.Unlock()
		if err := e.Start(context.Background()); err != nil {
			t.Errorf("Start after a failed Start: %v", err)
		}
		if err := e.Stop(context.Background()); err != nil {
			t.Error(err)
		}
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
	systest.Eventually(t, waitLimit, "Run to subscribe", func() bool {
		for _, s := range fb.subscriptions() {
			if s.subject == wire.SubjectSubmit {
				return true
			}
		}
		return false
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not return after cancel")
	}
	if n := len(fb.subscriptions()); fb.drainCount() != n {
		t.Errorf("Run drained %d of %d subscriptions", fb.drainCount(), n)
	}
}

// ---- heartbeats, registry, strategy ----

func TestHeartbeatsGoToTheRegistryAndTheStrategy(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(r *rig) { r.strategy.blind = false })
	r.bus.fallback("", silence())
	r.heartbeat(&pb.Heartbeat{WorkerId: "w1", ActiveJobs: 1})
	r.heartbeat(&pb.Heartbeat{WorkerId: "w2"})
	r.heartbeat(&pb.Heartbeat{WorkerId: "w1", ActiveJobs: 5})

	snap := r.reg.Snapshot()
	if len(snap) != 2 || snap["w1"].GetActiveJobs() != 5 || snap["w2"] == nil {
		t.Fatalf("registry = %v", snap)
	}
	if s := r.e.Stats(); s.Heartbeats != 3 {
		t.Errorf("Heartbeats = %d, want 3", s.Heartbeats)
	}
	// A strategy that looks decides over the registry's content.
	r.submit(request("j", "job.echo"), "t", "")
	r.waitDispatches("j", 1)
	if seen := r.strategy.snapshots(); len(seen) == 0 || len(seen[0]) != 2 {
		t.Errorf("strategy saw %v, want the two workers", seen)
	}
}

func TestWorkerBlindStrategyGetsNoSnapshot(t *testing.T) {
	t.Parallel()
	r := newRig(t) // the rig's strategy is blind by default
	r.bus.fallback("", silence())
	r.heartbeat(&pb.Heartbeat{WorkerId: "w1"})
	r.submit(request("j", "job.echo"), "t", "")
	r.waitDispatches("j", 1)
	if seen := r.strategy.snapshots(); len(seen) == 0 || seen[0] != nil {
		t.Errorf("a blind strategy was given %v, want nil", seen)
	}
}

func TestAlertsAndUnknownPacketsAreCounted(t *testing.T) {
	t.Parallel()
	h := &logBuffer{}
	e, err := scheduler.New(scheduler.Config{
		Bus: &fakeBus{}, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), ID: "sched-test", Logger: h.logger(slog.LevelInfo),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.HandlePacket(wire.JobResultPacket("t", "w", &pb.JobResult{JobId: "nobody-knows", Status: pb.JobStatus_JOB_STATUS_COMPLETED}))
	e.HandlePacket(&pb.BusPacket{SenderId: "x", Payload: &pb.BusPacket_Alert{Alert: &pb.SystemAlert{Level: "WARN", Message: "disk", Component: "w"}}})
	e.HandlePacket(&pb.BusPacket{SenderId: "ghost", TraceId: "t-ghost"})

	s := e.Stats()
	if s.Results != 1 || s.LateResults != 1 || s.Alerts != 1 || s.Unknown != 1 || s.Submitted != 0 || s.Heartbeats != 0 {
		t.Errorf("stats = %+v", s)
	}
	logs := h.String()
	for _, want := range []string{"alert", "disk", "sender_id=ghost", "unknown job", "job_id=nobody-knows"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

// At info level a job's normal way (submitted, dispatched, confirmed,
// heartbeats, completed) logs nothing; at debug it is all there with its trace.
func TestPerJobEventsLogOnlyAtDebug(t *testing.T) {
	t.Parallel()
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		r := newRig(t, withLevel(level))
		r.bus.fallback("", ackBy("w"))
		startLog := r.logs.String()
		r.submit(request("j", "job.echo"), "trace-log", "")
		r.waitState("j", lifecycle.Running, 1)
		r.heartbeat(&pb.Heartbeat{WorkerId: "w", Held: []*pb.HeldJob{{JobId: "j", Attempt: 1}}})
		r.result(completed("j", 1, "w"))
		r.waitState("j", lifecycle.Completed, 1)
		logs := strings.TrimPrefix(r.logs.String(), startLog)
		if level == slog.LevelInfo && logs != "" {
			t.Errorf("per-job events logged at info:\n%s", logs)
		}
		if level == slog.LevelDebug {
			for _, want := range []string{"submitted", "dispatched", "RUNNING", "result", "COMPLETED", "trace_id=trace-log"} {
				if !strings.Contains(logs, want) {
					t.Errorf("debug log lacks %q:\n%s", want, logs)
				}
			}
		}
	}
}
