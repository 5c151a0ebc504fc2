package scheduler_test

import (
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The reply subjects a hostile client names to make the scheduler publish
// with its own permissions: the JetStream API, the job bucket, the
// dead-letter stream, a job subject, the scheduler's own inbox, and
// subjects that are not literal inboxes.
var hostileReplies = []string{
	"$JS.API.STREAM.PURGE.KV_CORTEX_JOBS", "$JS.API.STREAM.DELETE.CORTEX_DLQ", "$KV.CORTEX_JOBS.x",
	"sys.job.dlq.x", "job.echo", "sys.worker.w-1.cancel", "_INBOX.sched.x", "_INBOX", "_INBOX.",
	"_INBOX.*", "_INBOX.a.>", "_INBOX..a", "_INBOX.a b", "_inbox.a",
}

func withClients(t *testing.T, cfg tenancy.Config) rigOption {
	t.Helper()
	pol, err := tenancy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return func(r *rig) {
		r.cfg.Clients = pol
		r.bus.inboxPrefix = "_INBOX.sched"
	}
}

var tenants = tenancy.Config{RequireIdentity: true, Identities: map[string]tenancy.Binding{
	"tenant-a": {Tenant: "a"}, "tenant-b": {Tenant: "b"}, "admin": {Admin: true},
}}

// submitAs delivers req as identity ("" for the bare subject) with reply.
func (r *rig) submitAs(identity string, req *pb.JobRequest, reply string) {
	r.t.Helper()
	on := wire.ClientSubject(wire.SubjectSubmit, identity)
	if err := r.bus.consumeOn(r.t, wire.SubjectSubmit, on, submitPacket("t-"+req.GetJobId(), req), reply); err != nil {
		r.t.Fatalf("submitting %s: %v", req.GetJobId(), err)
	}
}

// askAs asks the query (or cancel) server as identity, answered on its inbox.
func (r *rig) askAs(identity, base string, p *pb.BusPacket) *pb.JobAnswer {
	r.t.Helper()
	reply := "_INBOX.anonymous.1"
	if identity != "" {
		reply = wire.ClientInbox(identity) + ".1"
	}
	out := r.bus.askOn(r.t, base, wire.ClientSubject(base, identity), reply, p)
	if out.GetJobAnswer() == nil {
		r.t.Fatalf("%s as %q: no answer", base, identity)
	}
	return out.GetJobAnswer()
}

func (r *rig) queryAs(identity string, q *pb.JobQuery) *pb.JobAnswer {
	p := wire.NewPacket("trace-query", "c")
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: q}
	return r.askAs(identity, wire.SubjectQuery, p)
}

func (r *rig) cancelAs(identity, id string) *pb.JobAnswer {
	p := wire.NewPacket("trace-cancel", "c")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: id}}
	return r.askAs(identity, wire.SubjectCancel, p)
}

// A request whose reply subject is not the requester's own inbox is not
// acted on and not answered: the scheduler never publishes where a client
// points it. Each is counted; the client's honest requests still work.
func TestHostileReplySubjectsAreRefused(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]rigOption{
		"no clients section": func(r *rig) { r.bus.inboxPrefix = "_INBOX.sched" },
		"tenants":            withClients(t, tenants),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, opt)
			r.bus.fallback("", ackBy("w-1"))
			identity := ""
			if r.cfg.Clients != nil {
				identity = "tenant-a"
			}
			replies := append([]string(nil), hostileReplies...)
			if identity != "" { // another client's inbox, and not quite its own
				replies = append(replies, "_INBOX.tenant-b.1", "_INBOX.tenant-ab.1", "_INBOX.anonymous.1", "_INBOX.tenant-a")
			}
			for i, reply := range replies {
				id := "evil-" + string(rune('a'+i))
				r.submitAs(identity, request(id, "job.echo"), reply)
				if j := r.job(id); j != nil {
					t.Errorf("reply %q: the job was recorded: %s", reply, describe(j))
				}
				q := wire.NewPacket("t", "c")
				q.Payload = &pb.BusPacket_JobQuery{JobQuery: &pb.JobQuery{}}
				if a := r.bus.askOn(t, wire.SubjectQuery, wire.ClientSubject(wire.SubjectQuery, identity), reply, q); a != nil {
					t.Errorf("query answered on %q: %v", reply, a)
				}
				c := wire.NewPacket("t", "c")
				c.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "legit"}}
				if a := r.bus.askOn(t, wire.SubjectCancel, wire.ClientSubject(wire.SubjectCancel, identity), reply, c); a != nil {
					t.Errorf("cancel answered on %q: %v", reply, a)
				}
			}
			for _, p := range r.bus.publishes() {
				t.Errorf("published on %s: %v", p.subject, p.packet)
			}
			if st := r.e.Stats(); st.RepliesRefused != uint64(3*len(replies)) || st.Submitted != 0 {
				t.Errorf("stats %+v: want %d replies refused and no submission", st, 3*len(replies))
			}
			// The refusals are logged, not once each: a flood does not flood the log.
			if n := strings.Count(r.logs.String(), "reply subject the requester may not read"); n < 1 || n >= 3*len(replies) {
				t.Errorf("%d refusal lines for %d refusals", n, 3*len(replies))
			}
			// The same client, answered on its own inbox, is served.
			inbox := "_INBOX.anonymous.ok"
			if identity != "" {
				inbox = wire.ClientInbox(identity) + ".ok"
			}
			r.submitAs(identity, request("legit", "job.echo"), inbox)
			if _, a := r.answerOn(inbox); !a.GetOk() {
				t.Errorf("the honest submission: %v", a)
			}
			r.waitState("legit", lifecycle.Running, 1)
		})
	}
}

// A tenant's client submits for its tenant only, and sees, cancels and
// re-drives its tenant's jobs only: another tenant's job is to it exactly
// what a job that does not exist is. An administrator sees everything.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	r := newRig(t, withClients(t, tenants))
	r.bus.fallback("", ackBy("w-1"))

	r.submitAs("tenant-a", request("job-a", "job.echo"), "_INBOX.tenant-a.1")
	if _, a := r.answerOn("_INBOX.tenant-a.1"); !a.GetOk() || a.GetJobs()[0].GetRequest().GetTenant() != "a" {
		t.Fatalf("tenant-a's submission: %v, want accepted and stamped with tenant a", a)
	}
	secret := &pb.JobRequest{JobId: "job-b", Topic: "job.echo", Tenant: "b", MaxAttempts: 1, EnvVars: map[string]string{"DB_SECRET": "hunter2"}}
	r.submitAs("tenant-b", secret, "_INBOX.tenant-b.1")
	r.waitState("job-a", lifecycle.Running, 1)
	r.waitState("job-b", lifecycle.Running, 1)

	// Submitting for another tenant is refused, and says why.
	r.submitAs("tenant-a", &pb.JobRequest{JobId: "forged", Topic: "job.echo", Tenant: "b"}, "_INBOX.tenant-a.2")
	if _, a := r.answerOn("_INBOX.tenant-a.2"); a.GetOk() || !strings.Contains(a.GetError(), `bound to tenant "a"`) || a.GetRetryable() {
		t.Errorf("tenant-a submitting for b: %v", a)
	}
	if r.job("forged") != nil {
		t.Error("the forged job was recorded")
	}
	if st := r.e.Stats(); st.ClientsRefused != 1 {
		t.Errorf("ClientsRefused = %d, want 1", st.ClientsRefused)
	}

	// Another tenant's job is an unknown job.
	unknown := r.queryAs("tenant-a", &pb.JobQuery{JobId: "no-such-job"})
	other := r.queryAs("tenant-a", &pb.JobQuery{JobId: "job-b"})
	if other.GetOk() || len(other.GetJobs()) != 0 || other.GetRetryable() != unknown.GetRetryable() ||
		strings.ReplaceAll(other.GetError(), "job-b", "X") != strings.ReplaceAll(unknown.GetError(), "no-such-job", "X") {
		t.Errorf("tenant-a getting job-b: %v; getting an unknown job: %v", other, unknown)
	}
	if a := r.queryAs("tenant-a", &pb.JobQuery{}); strings.Join(ids(a.GetJobs()), ",") != "job-a" {
		t.Errorf("tenant-a lists %v, want its own job only", ids(a.GetJobs()))
	}
	if a := r.queryAs("tenant-a", &pb.JobQuery{State: lifecycle.Running}); strings.Join(ids(a.GetJobs()), ",") != "job-a" {
		t.Errorf("tenant-a lists running %v", ids(a.GetJobs()))
	}
	cancelUnknown := r.cancelAs("tenant-a", "no-such-job")
	if a := r.cancelAs("tenant-a", "job-b"); a.GetOk() || strings.ReplaceAll(a.GetError(), "job-b", "X") != strings.ReplaceAll(cancelUnknown.GetError(), "no-such-job", "X") {
		t.Errorf("tenant-a cancelling job-b: %v; an unknown job: %v", a, cancelUnknown)
	}
	if j := r.job("job-b"); j.GetState() != lifecycle.Running {
		t.Errorf("job-b after tenant-a's cancel: %s", describe(j))
	}
	// The worker list holds no other tenant's job ids.
	r.heartbeat(&pb.Heartbeat{WorkerId: "w-1", Type: "echo", Held: []*pb.HeldJob{{JobId: "job-a", Attempt: 1}, {JobId: "job-b", Attempt: 1}}})
	held := func(who string) []string {
		var out []string
		for _, w := range r.queryAs(who, &pb.JobQuery{Workers: true}).GetWorkers() {
			for _, h := range w.GetHeartbeat().GetHeld() {
				out = append(out, h.GetJobId())
			}
		}
		return out
	}
	if got := held("tenant-a"); strings.Join(got, ",") != "job-a" {
		t.Errorf("tenant-a sees held jobs %v", got)
	}
	if got := held("admin"); strings.Join(got, ",") != "job-a,job-b" {
		t.Errorf("admin sees held jobs %v", got)
	}

	// Dead letters: tenant-a neither sees nor re-drives tenant-b's.
	r.result(failedResult("job-b", 1, "w-1", pb.JobStatus_JOB_STATUS_FAILED, "crash"))
	r.waitJob("job-b", "dead-lettered", func(j *pb.JobInfo) bool { return j.GetDeadLetter() })
	if a := r.queryAs("tenant-a", &pb.JobQuery{DeadLetter: true}); !a.GetOk() || len(a.GetJobs()) != 0 {
		t.Errorf("tenant-a's dead letters: %v", a)
	}
	redriveUnknown := r.queryAs("tenant-a", &pb.JobQuery{JobId: "no-such-job", DeadLetter: true, Redrive: true})
	if a := r.queryAs("tenant-a", &pb.JobQuery{JobId: "job-b", DeadLetter: true, Redrive: true}); a.GetOk() ||
		strings.ReplaceAll(a.GetError(), "job-b", "X") != strings.ReplaceAll(redriveUnknown.GetError(), "no-such-job", "X") {
		t.Errorf("tenant-a re-driving job-b: %v; an unknown one: %v", a, redriveUnknown)
	}
	if a := r.queryAs("tenant-b", &pb.JobQuery{DeadLetter: true}); strings.Join(ids(a.GetJobs()), ",") != "job-b" {
		t.Errorf("tenant-b's dead letters: %v (tenant-a's redrive must leave it there)", ids(a.GetJobs()))
	}
	if a := r.queryAs("tenant-b", &pb.JobQuery{JobId: "job-b", DeadLetter: true, Redrive: true}); !a.GetOk() || a.GetJobs()[0].GetRequest().GetTenant() != "b" {
		t.Errorf("tenant-b re-driving its job: %v", a)
	}

	// The administrator sees and acts on every tenant.
	if a := r.queryAs("admin", &pb.JobQuery{}); strings.Join(ids(a.GetJobs()), ",") != "job-a,job-b,job-b-redrive-1" {
		t.Errorf("admin lists %v", ids(a.GetJobs()))
	}
	if a := r.queryAs("admin", &pb.JobQuery{JobId: "job-b"}); !a.GetOk() || a.GetJobs()[0].GetRequest().GetEnvVars()["DB_SECRET"] != "hunter2" {
		t.Errorf("admin getting job-b: %v", a)
	}
	if a := r.cancelAs("admin", "job-a"); !a.GetOk() {
		t.Errorf("admin cancelling job-a: %v", a)
	}
}

// Where identities are required, a request that names none, or names one
// bound to nothing, is refused (and told why, on a reply subject it may
// read); a subject that names no valid identity is dropped.
func TestClientIdentityRequired(t *testing.T) {
	t.Parallel()
	r := newRig(t, withClients(t, tenants))
	r.bus.fallback("", ackBy("w-1"))

	r.submitAs("", request("anon", "job.echo"), "_INBOX.anonymous.1")
	if _, a := r.answerOn("_INBOX.anonymous.1"); a.GetOk() || !strings.Contains(a.GetError(), "client identity required") {
		t.Errorf("anonymous submission: %v", a)
	}
	r.submitAs("stranger", request("stranger", "job.echo"), "_INBOX.stranger.1")
	if _, a := r.answerOn("_INBOX.stranger.1"); a.GetOk() || !strings.Contains(a.GetError(), "not bound") {
		t.Errorf("unbound identity's submission: %v", a)
	}
	if a := r.queryAs("", &pb.JobQuery{}); a.GetOk() || !strings.Contains(a.GetError(), "identity required") {
		t.Errorf("anonymous query: %v", a)
	}
	if a := r.cancelAs("stranger", "x"); a.GetOk() || !strings.Contains(a.GetError(), "not bound") {
		t.Errorf("unbound identity's cancel: %v", a)
	}
	// Submissions on a heartbeat subject (HandlePacket) name nobody either.
	r.e.HandlePacket(submitPacket("t", request("via-handle-packet", "job.echo")))
	// sys.job.submit.a.b names no identity: not answered at all.
	if err := r.bus.consumeOn(t, wire.SubjectSubmit, "sys.job.submit.a.b", submitPacket("t", request("dotted", "job.echo")), "_INBOX.a.1"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"anon", "stranger", "via-handle-packet", "dotted"} {
		if j := r.job(id); j != nil {
			t.Errorf("job %s recorded: %s", id, describe(j))
		}
	}
	if p := r.bus.publishedOn("_INBOX.a.1"); len(p) != 0 {
		t.Errorf("answered a subject that names no identity: %v", p)
	}
	if st := r.e.Stats(); st.ClientsRefused != 6 || st.Submitted != 0 {
		t.Errorf("stats %+v: want 6 clients refused and no submission", st)
	}
}

// Without require_identity, anonymous and unbound clients act on every
// tenant, while bound ones are held to theirs; an anonymous request is
// never answered in a configured identity's inbox or the scheduler's.
func TestClientIdentityOptional(t *testing.T) {
	t.Parallel()
	open := tenancy.Config{Identities: tenants.Identities}
	r := newRig(t, withClients(t, open))
	r.bus.fallback("", ackBy("w-1"))
	r.submitAs("tenant-b", request("job-b", "job.echo"), "")
	r.submitAs("", request("anon", "job.echo"), "_INBOX.anonymous.1")
	if _, a := r.answerOn("_INBOX.anonymous.1"); !a.GetOk() || a.GetJobs()[0].GetRequest().GetTenant() != "" {
		t.Errorf("anonymous submission: %v", a)
	}
	for _, who := range []string{"", "stranger"} {
		if a := r.queryAs(who, &pb.JobQuery{}); strings.Join(ids(a.GetJobs()), ",") != "anon,job-b" {
			t.Errorf("%q lists %v, want every job", who, ids(a.GetJobs()))
		}
	}
	if a := r.queryAs("tenant-a", &pb.JobQuery{}); len(a.GetJobs()) != 0 {
		t.Errorf("tenant-a lists %v", ids(a.GetJobs()))
	}
	before := r.e.Stats().RepliesRefused
	for _, reply := range []string{"_INBOX.tenant-a.1", "_INBOX.admin.x", "_INBOX.sched.1"} {
		r.submitAs("", request("x", "job.echo"), reply)
		if p := r.bus.publishedOn(reply); len(p) != 0 {
			t.Errorf("anonymous request answered on %s", reply)
		}
	}
	if got := r.e.Stats().RepliesRefused - before; got != 3 {
		t.Errorf("%d replies refused, want 3", got)
	}
	if r.job("x") != nil {
		t.Error("a request with a refused reply subject was admitted")
	}
}

// A query or cancel that does not decode is answered, but only on the
// requester's own inbox.
func TestUndecodableRequestAnsweredOnlyOnItsInbox(t *testing.T) {
	t.Parallel()
	r := newRig(t, withClients(t, tenants))
	s := r.bus.find(t, kindServe, wire.SubjectQuery)
	if a := s.serve("sys.job.query.tenant-a", "_INBOX.tenant-a.1", nil, scheduler.ErrInvalidTopic); a.GetJobAnswer().GetOk() || a.GetJobAnswer().GetError() == "" {
		t.Errorf("answer = %v", a)
	}
	if a := s.serve("sys.job.query.tenant-a", "$JS.API.STREAM.PURGE.X", nil, scheduler.ErrInvalidTopic); a != nil {
		t.Errorf("answered a hostile reply: %v", a)
	}
}

// A cancellation goes to the worker a job record names only when that
// name is one subject token: a worker's confirmation cannot point the
// scheduler at sys.worker.* or deeper subjects. The confirmation itself is
// refused (its worker id is out of bounds), so the job never names it.
func TestCancelNotSentToAWorkerIDThatIsNoToken(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w.*"))
	r.submit(request("j", "job.echo"), "t", "")
	systest.Eventually(t, waitLimit, "the confirmation refused", func() bool { return r.e.Stats().InvalidPackets > 0 })
	if j := r.job("j"); j.GetWorkerId() == "w.*" {
		t.Fatalf("the job names worker %q", j.GetWorkerId())
	}
	if a := r.cancelAs("", "j"); !a.GetOk() {
		t.Fatalf("cancel: %v", a)
	}
	for _, p := range r.bus.publishes() {
		if strings.HasPrefix(p.subject, "sys.worker.") {
			t.Errorf("published on %s", p.subject)
		}
	}
}
