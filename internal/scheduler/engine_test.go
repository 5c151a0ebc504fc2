package scheduler_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
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
		eventually(t, "the confirmation to be recorded", func() bool { return e.Stats().Dispatched == 1 })

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
	eventually(t, "Run to subscribe", func() bool {
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

// ---- admission ----

// A job the strategy has a subject for is recorded once, already DISPATCHED
// at attempt 1, and published.
func TestValidJobIsRecordedDispatchedAndAnswered(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence()) // the dispatch goes unanswered: the job stays put
	req := &pb.JobRequest{
		JobId: "job-1", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_INTERACTIVE,
		ContextPtr: "redis://jobs/job-1/context", EnvVars: map[string]string{"A": "1"},
	}
	before := time.Now().UnixMilli()
	r.submit(req, "trace-1", "_INBOX.client.1")

	p, a := r.answerOn("_INBOX.client.1")
	if p.GetTraceId() != "trace-1" || p.GetSenderId() != "sched-test" {
		t.Errorf("answer envelope: trace %q sender %q; want trace-1, sched-test", p.GetTraceId(), p.GetSenderId())
	}
	if !a.GetOk() || a.GetError() != "" || len(a.GetJobs()) != 1 {
		t.Fatalf("answer = %v, want ok with the job", a)
	}
	j := a.GetJobs()[0]
	if j.GetJobId() != "job-1" || j.GetState() != lifecycle.Dispatched || j.GetTraceId() != "trace-1" || !proto.Equal(j.GetRequest(), req) {
		t.Errorf("answered job = %v", j)
	}

	stored := r.job("job-1")
	if stored == nil {
		t.Fatal("the job was not recorded")
	}
	first := r.store.history("job-1")[0]
	if first.GetState() != lifecycle.Dispatched || first.GetAttempt() != 1 || first.GetPendingReason() != "" ||
		first.GetAttemptStartedMs() != first.GetCreatedMs() {
		t.Errorf("first record = %s, want DISPATCHED at attempt 1, started when created", describe(first))
	}
	if d := r.bus.dispatchesOf("job-1"); len(d) != 1 || d[0].packet.GetJobRequest().GetAttempt() != 1 {
		t.Errorf("dispatches = %v, want one of attempt 1", d)
	}
	if stored.GetTraceId() != "trace-1" || stored.GetMaxAttempts() != 3 || stored.GetCreatedMs() < before ||
		stored.GetDeadlineMs() < stored.GetCreatedMs()+(10*time.Minute).Milliseconds() || !proto.Equal(stored.GetRequest(), req) {
		t.Errorf("stored job = %v; want the trace, 3 attempts, a 10 min deadline and the request", stored)
	}
	if s := r.e.Stats(); s.Submitted != 1 || s.Accepted != 1 || s.Rejected+s.Denied+s.Duplicates+s.Conflicts != 0 {
		t.Errorf("stats = %+v", s)
	}
	// The request's own limits win over the defaults.
	r.submit(&pb.JobRequest{JobId: "job-2", Topic: "job.echo", MaxAttempts: 7, TtlMs: 1234}, "trace-2", "")
	if j := r.job("job-2"); j.GetMaxAttempts() != 7 || j.GetDeadlineMs() != j.GetCreatedMs()+1234 {
		t.Errorf("job-2 = %v: want max_attempts 7 and a deadline 1234ms after creation", j)
	}
}

func TestNoAnswerWithoutReplyTo(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence())
	r.submit(request("quiet", "job.echo"), "t", "")
	if p := r.bus.publishes(); len(p) != 0 {
		t.Errorf("a submission without reply-to was answered: %+v", p)
	}
	if r.job("quiet") == nil {
		t.Error("not recorded")
	}
}

func TestMissingTraceIDGetsOne(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence())
	r.submit(request("job-a", "job.echo"), "", "_INBOX.test.a")
	r.submit(request("job-b", "job.echo"), "", "_INBOX.test.b")
	pa, _ := r.answerOn("_INBOX.test.a")
	pb_, _ := r.answerOn("_INBOX.test.b")
	a, b := pa.GetTraceId(), pb_.GetTraceId()
	if a == "" || b == "" || a == b {
		t.Fatalf("trace ids %q and %q: want two distinct new ones", a, b)
	}
	if r.job("job-a").GetTraceId() != a || r.job("job-b").GetTraceId() != b {
		t.Errorf("recorded traces %q, %q; answered %q, %q", r.job("job-a").GetTraceId(), r.job("job-b").GetTraceId(), a, b)
	}
	// The dispatches carry them too.
	da, db := r.waitDispatches("job-a", 1)[0], r.waitDispatches("job-b", 1)[0]
	if da.packet.GetTraceId() != a || db.packet.GetTraceId() != b {
		t.Errorf("dispatched with traces %q, %q; want %q, %q", da.packet.GetTraceId(), db.packet.GetTraceId(), a, b)
	}
}

func TestInvalidSubmissionsAreRefusedWithoutARecord(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	bad := []*pb.JobRequest{
		{JobId: "", Topic: "job.echo"},
		{JobId: "has space", Topic: "job.echo"},
		{JobId: ".leading-dot", Topic: "job.echo"},
		{JobId: "a/b", Topic: "job.echo"},
		{JobId: "a*", Topic: "job.echo"},
		{JobId: strings.Repeat("x", 257), Topic: "job.echo"},
		{JobId: "t1", Topic: ""},
		{JobId: "t2", Topic: "echo"},
		{JobId: "t3", Topic: wire.SubjectSubmit},
		{JobId: "t4", Topic: wire.SubjectResult},
		{JobId: "t5", Topic: "job.>"},
		{JobId: "t6", Topic: "job.*"},
		{JobId: "t7", Topic: "job..x"},
		{JobId: "t8", Topic: "job"},
		{JobId: "n1", Topic: "job.echo", MaxAttempts: -1},
		{JobId: "n2", Topic: "job.echo", TimeoutMs: -1},
		{JobId: "n3", Topic: "job.echo", TtlMs: -1},
	}
	// Free-form fields out of bounds: the refusal names the field.
	named := map[string]*pb.JobRequest{
		"tenant":                   {JobId: "f1", Topic: "job.echo", Tenant: strings.Repeat("t", 129)},
		"tenant: \"a\\nb\"":        {JobId: "f2", Topic: "job.echo", Tenant: "a\nb"},
		"required_capabilities[1]": {JobId: "f3", Topic: "job.echo", RequiredCapabilities: []string{"gpu", ""}},
		"required_capabilities:":   {JobId: "f4", Topic: "job.echo", RequiredCapabilities: make([]string, 65)},
		"required_labels":          {JobId: "f5", Topic: "job.echo", RequiredLabels: map[string]string{"": "x"}},
		"env_vars[\"K\"]":          {JobId: "f6", Topic: "job.echo", EnvVars: map[string]string{"K": strings.Repeat("v", 4097)}},
		"context_ptr":              {JobId: "f7", Topic: "job.echo", ContextPtr: strings.Repeat("c", 4097)},
		"adapter_id":               {JobId: "f8", Topic: "job.echo", AdapterId: strings.Repeat("a", 129)},
	}
	i := len(bad)
	for field, req := range named {
		bad = append(bad, req)
		inbox := "_INBOX.test.named." + req.GetJobId()
		r.submit(req, "trace-bad", inbox)
		if _, a := r.answerOn(inbox); !strings.Contains(a.GetError(), field) {
			t.Errorf("%s: refusal %q does not name %s", req.GetJobId(), a.GetError(), field)
		}
	}
	for j, req := range bad[:i] {
		inbox := "_INBOX.test.bad." + strconv.Itoa(j)
		r.submit(req, "trace-bad", inbox)
		p, a := r.answerOn(inbox)
		if a.GetOk() || a.GetError() == "" || a.GetRetryable() || len(a.GetJobs()) != 0 || p.GetTraceId() != "trace-bad" {
			t.Errorf("job_id %q topic %q: answer %v (trace %q), want a final refusal with a reason", req.GetJobId(), req.GetTopic(), a, p.GetTraceId())
		}
	}
	// A packet that is not a job request at all.
	hb := wire.HeartbeatPacket("trace-x", "w", &pb.Heartbeat{WorkerId: "w"})
	if err := r.bus.submit(t, hb, "_INBOX.test.hb"); err != nil {
		t.Fatal(err)
	}
	if _, a := r.answerOn("_INBOX.test.hb"); a.GetOk() || !strings.Contains(a.GetError(), "job_request") {
		t.Errorf("a heartbeat on the intake: %v", a)
	}

	recs, err := r.store.List(context.Background(), jobstore.Filter{})
	if err != nil || len(recs) != 0 {
		t.Errorf("refused submissions were recorded: %d records, %v", len(recs), err)
	}
	if d := r.bus.dispatches(); len(d) != 0 {
		t.Errorf("refused submissions were dispatched: %+v", d)
	}
	if r.safety.calls() != 0 {
		t.Error("the safety checker was asked about an invalid job")
	}
	if s := r.e.Stats(); s.Rejected != uint64(len(bad)) || s.Accepted != 0 || s.Unknown != 1 {
		t.Errorf("stats = %+v; want %d rejected", s, len(bad))
	}
	if !strings.Contains(r.logs.String(), "refused job") {
		t.Errorf("refusals not logged:\n%s", r.logs.String())
	}
}

func TestDestroyIsDeniedRecordedAndNeverDispatched(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	r.submit(request("destroy-1", scheduler.ForbiddenTopic), "trace-d", "_INBOX.test.d")

	_, a := r.answerOn("_INBOX.test.d")
	if a.GetOk() || !strings.Contains(a.GetError(), "forbidden topic") || len(a.GetJobs()) != 1 || a.GetJobs()[0].GetState() != lifecycle.Denied {
		t.Errorf("answer = %v, want a refusal with the DENIED job", a)
	}
	j := r.job("destroy-1")
	if j.GetState() != lifecycle.Denied || j.GetError() != "denied by the safety policy: forbidden topic" || j.GetTraceId() != "trace-d" {
		t.Errorf("recorded %v", j)
	}
	if h := r.store.history("destroy-1"); len(h) != 1 {
		t.Errorf("the denied job was written %d times, want once: %s", len(h), r.describeHistory("destroy-1"))
	}
	logs := r.logs.String()
	for _, want := range []string{"job blocked", "component=safety", "job_id=destroy-1", "trace_id=trace-d", "forbidden topic"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if r.strategy.calls() != 0 {
		t.Error("the strategy was consulted for a denied job")
	}

	// A job submitted after it is dispatched; by then the denied one would
	// have been too, had it been active.
	r.submit(request("after", "job.echo"), "t", "")
	r.waitState("after", lifecycle.Running, 1)
	for _, d := range r.bus.dispatches() {
		if d.packet.GetJobRequest().GetJobId() == "destroy-1" || d.subject == scheduler.ForbiddenTopic || !strings.HasPrefix(d.subject, "job.") {
			t.Errorf("dispatched %v on %s", d.packet, d.subject)
		}
	}
	for _, p := range r.bus.publishes() {
		if p.subject == scheduler.ForbiddenTopic {
			t.Errorf("published on %s", p.subject)
		}
	}
	if s := r.e.Stats(); s.Submitted != 2 || s.Denied != 1 || s.Dispatched != 1 {
		t.Errorf("stats = %+v", s)
	}
	// It can be asked about, and it stays DENIED.
	if qa := r.query(&pb.JobQuery{JobId: "destroy-1"}); !qa.GetOk() || qa.GetJobs()[0].GetState() != lifecycle.Denied {
		t.Errorf("query = %v", qa)
	}
}

// Resubmitting a denied job must not read as accepted: the client's answer
// says "refused" whether it is the first or the second time.
func TestResubmittedDeniedJobIsStillRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.submit(request("destroy-2", scheduler.ForbiddenTopic), "t", "_INBOX.test.1")
	r.submit(request("destroy-2", scheduler.ForbiddenTopic), "t", "_INBOX.test.2")
	_, first := r.answerOn("_INBOX.test.1")
	_, second := r.answerOn("_INBOX.test.2")
	if first.GetOk() || second.GetOk() || second.GetError() != first.GetError() {
		t.Errorf("answers %v then %v: want the same refusal twice", first, second)
	}
	if len(second.GetJobs()) != 1 || second.GetJobs()[0].GetState() != lifecycle.Denied {
		t.Errorf("second answer %v: want the DENIED job", second)
	}
}

func TestDuplicateAndConflict(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	req := &pb.JobRequest{JobId: "dup", Topic: "job.echo", EnvVars: map[string]string{"K": "V", "L": "W"}}
	r.submit(req, "trace-1", "_INBOX.test.1")
	r.waitState("dup", lifecycle.Running, 1)
	rev := r.revision("dup")

	// The same content again (the map in another order on the wire, say):
	// answered with the existing job, nothing new recorded.
	again := &pb.JobRequest{JobId: "dup", Topic: "job.echo", EnvVars: map[string]string{"L": "W", "K": "V"}}
	r.submit(again, "trace-2", "_INBOX.test.2")
	_, a := r.answerOn("_INBOX.test.2")
	if !a.GetOk() || len(a.GetJobs()) != 1 || a.GetJobs()[0].GetState() != lifecycle.Running || a.GetJobs()[0].GetTraceId() != "trace-1" {
		t.Errorf("resubmission answered %v, want ok with the existing RUNNING job", a)
	}
	if r.revision("dup") != rev {
		t.Error("a resubmission changed the job")
	}

	// The same id with other content: a conflict.
	r.submit(&pb.JobRequest{JobId: "dup", Topic: "job.other"}, "trace-3", "_INBOX.test.3")
	_, c := r.answerOn("_INBOX.test.3")
	if c.GetOk() || !strings.HasPrefix(c.GetError(), "conflict") || c.GetRetryable() {
		t.Errorf("conflict answered %v", c)
	}
	if j := r.job("dup"); j.GetRequest().GetTopic() != "job.echo" || r.revision("dup") != rev {
		t.Errorf("a conflicting submission changed the job: %v", j)
	}
	if s := r.e.Stats(); s.Submitted != 3 || s.Accepted != 1 || s.Duplicates != 1 || s.Conflicts != 1 {
		t.Errorf("stats = %+v", s)
	}
	if n := len(r.bus.dispatchesOf("dup")); n != 1 {
		t.Errorf("dispatched %d times, want once", n)
	}
}

func TestStoreFailureAtIntakeAsksForRedelivery(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence())
	boom := errors.New("store down")
	r.store.failCreate(boom)
	err := r.bus.submit(t, submitPacket("t", request("j", "job.echo")), "_INBOX.test.1")
	if !errors.Is(err, boom) {
		t.Fatalf("intake handler = %v, want the store error (so a durable intake redelivers)", err)
	}
	if p := r.bus.publishedOn("_INBOX.test.1"); len(p) != 0 {
		t.Errorf("answered although nothing was decided: %v", p)
	}
	if s := r.e.Stats(); s.StoreErrors != 1 || s.Accepted != 0 {
		t.Errorf("stats = %+v", s)
	}
	// Redelivered once the store is back: recorded and answered.
	r.store.failCreate(nil)
	r.submit(request("j", "job.echo"), "t", "_INBOX.test.2")
	if _, a := r.answerOn("_INBOX.test.2"); !a.GetOk() {
		t.Errorf("after the store came back: %v", a)
	}
}

func TestUnroutableJobWaitsWithItsReason(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(r *rig) { r.strategy.fail = errors.New("no GPU worker") })
	r.submit(request("gpu-job", "job.train"), "t", "")
	j := r.waitJob("gpu-job", "pending with the strategy's reason", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && strings.Contains(j.GetPendingReason(), "no GPU worker")
	})
	if j.GetAttempt() != 0 {
		t.Errorf("attempt = %d, want 0", j.GetAttempt())
	}
	r.waitStats("a second try", func(s scheduler.Stats) bool { return s.Unroutable >= 2 })
	if d := r.bus.dispatches(); len(d) != 0 {
		t.Errorf("dispatched: %+v", d)
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
