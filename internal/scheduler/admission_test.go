package scheduler_test

import (
	"context"
	"errors"
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
