package security

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The shipped configuration grants each user exactly its role's permissions
// as embeddednats defines them, which `cortex dev --auth` runs with: the
// documented file and the dev server cannot drift apart.
func TestShippedConfigIsTheRoles(t *testing.T) {
	t.Parallel()
	opts, err := server.ProcessConfigFile(shippedConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*server.Permissions{
		"client":    embeddednats.ClientPermissions("client"),
		"tenant-a":  embeddednats.TenantClientPermissions("tenant-a", "a"),
		"tenant-b":  embeddednats.TenantClientPermissions("tenant-b", "b"),
		"scheduler": embeddednats.SchedulerPermissions("scheduler"),
		"safety":    embeddednats.SafetyPermissions(),
		"auditor":   embeddednats.AuditorPermissions(),
		"echo-1":    embeddednats.WorkerPermissions("echo-1", "job.echo"),
		"echo-2":    embeddednats.WorkerPermissions("echo-2", "job.echo"),
	}
	got := map[string]*server.Permissions{}
	for _, u := range opts.Users {
		if u.Password != passwords[u.Username] {
			t.Errorf("user %s: the password is not the one from %s", u.Username, passwordVars[u.Username])
		}
		got[u.Username] = u.Permissions
	}
	if len(got) != len(want) || len(opts.Nkeys) != 0 || opts.Authorization != "" || opts.Username != "" {
		t.Errorf("users %v, want exactly %v", slices.Sorted(mapKeys(got)), slices.Sorted(mapKeys(want)))
	}
	for user, w := range want {
		if !samePermissions(got[user], w) {
			t.Errorf("user %s:\n file %s\n role %s", user, describePerms(got[user]), describePerms(w))
		}
	}
	// dev --auth's users are the same roles.
	roles, err := embeddednats.NewDevAuth(2, "echo", "job.echo")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range roles.Users() {
		if !samePermissions(u.Permissions, want[u.Username]) {
			t.Errorf("dev --auth user %s: %s, want %s", u.Username, describePerms(u.Permissions), describePerms(want[u.Username]))
		}
		if len(u.Password) < 20 {
			t.Errorf("dev --auth user %s: a %d-character password", u.Username, len(u.Password))
		}
	}
}

// docs/security.md ships the configuration file as it is.
func TestDocumentationShipsTheConfig(t *testing.T) {
	t.Parallel()
	conf, err := os.ReadFile(shippedConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(systest.RepoRoot(t), "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```\n"+string(conf)+"```\n") {
		t.Error("docs/security.md does not contain config/nats-auth.conf verbatim in a code block: copy the file into it")
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func samePermissions(a, b *server.Permissions) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameSubjects(a.Publish, b.Publish) && sameSubjects(a.Subscribe, b.Subscribe) && reflect.DeepEqual(a.Response, b.Response)
}

func sameSubjects(a, b *server.SubjectPermission) bool {
	norm := func(p *server.SubjectPermission) [2][]string {
		if p == nil {
			return [2][]string{}
		}
		return [2][]string{slices.Sorted(slices.Values(p.Allow)), slices.Sorted(slices.Values(p.Deny))}
	}
	na, nb := norm(a), norm(b)
	return slices.Equal(na[0], nb[0]) && slices.Equal(na[1], nb[1])
}

func describePerms(p *server.Permissions) string {
	if p == nil {
		return "<none>"
	}
	s := func(sp *server.SubjectPermission) string {
		if sp == nil {
			return "-"
		}
		return "allow " + strings.Join(sp.Allow, " ") + " deny " + strings.Join(sp.Deny, " ")
	}
	return "publish{" + s(p.Publish) + "} subscribe{" + s(p.Subscribe) + "} responses " + func() string {
		if p.Response == nil {
			return "no"
		}
		return "yes"
	}()
}

// submission is a valid JobRequest packet for sys.job.submit.
func submission(jobID string) []byte {
	data, err := proto.Marshal(wire.JobRequestPacket("trace-"+jobID, "intruder", &pb.JobRequest{JobId: jobID, Topic: "job.echo"}))
	if err != nil {
		panic(err)
	}
	return data
}

// Only clients submit, each as itself. A worker's publish to
// sys.job.submit (bare, or naming itself or a client) is refused by the
// server (the publisher's error handler hears it) and never reaches the
// scheduler, nor is a client's on the bare subject or another client's;
// a connection without credentials is not admitted at all.
func TestUnauthorizedSubmitIsRefused(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	url := srv.ClientURL()
	var logs logBuffer
	e := engine(t, url, logs.logger())

	// A witness with the scheduler's rights sees every submission that gets through.
	witness := raw(t, url, "scheduler")
	seen := make(chan string, 16)
	for _, subject := range []string{wire.SubjectSubmit, wire.SubjectSubmit + ".>"} {
		if _, err := witness.Subscribe(subject, func(m *nats.Msg) {
			if p, err := bus.Decode(m.Data, 0); err == nil {
				seen <- p.GetJobRequest().GetJobId()
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := witness.Flush(); err != nil {
		t.Fatal(err)
	}

	if _, err := dialRaw(t, url, ""); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("connecting without credentials: %v, want an authorization violation", err)
	}
	if _, err := nats.Connect(url, nats.UserInfo("client", "not-the-password")); !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("connecting with a wrong password: %v, want an authorization violation", err)
	}

	for _, intruder := range []string{"echo-1", "safety", "tenant-a"} {
		w := raw(t, url, intruder)
		for _, subject := range []string{wire.SubjectSubmit, wire.ClientSubject(wire.SubjectSubmit, "client"), wire.ClientSubject(wire.SubjectSubmit, "x.y")} {
			if err := w.Publish(subject, submission("forged-by-"+intruder)); err != nil {
				t.Fatal(err)
			}
			w.refused(t, "publish", subject)
		}
	}

	// The server decided on the forged submissions before it told their
	// senders; a submission sent after that reaches the witness after
	// anything that got through before it.
	c := raw(t, url, "client")
	if err := c.Publish(wire.ClientSubject(wire.SubjectSubmit, "client"), submission("legit")); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case id := <-seen:
			if id != "legit" {
				t.Fatalf("submission %s reached the scheduler's subject", id)
			}
		case <-time.After(waitFor):
			t.Fatal("the client's submission did not arrive")
		}
		break
	}
	systest.Eventually(t, waitFor, "the client's job to be admitted", func() bool { return e.Stats().Submitted >= 1 })
	if st := e.Stats(); st.Submitted != 1 {
		t.Errorf("the scheduler received %d submissions, want only the client's", st.Submitted)
	}
	logs.noViolations(t)
}

// A client reads its own answers only: no results, no other inbox, no jobs.
func TestClientReadsOnlyItsOwnAnswers(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	for _, subject := range []string{wire.SubjectResult, wire.SubjectResults, "_INBOX.scheduler.>", "_INBOX.>", "job.echo", wire.SubjectSubmit, "$KV.CORTEX_JOBS.>"} {
		c := raw(t, url, "client")
		if _, err := c.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		c.refused(t, "subscription", subject)
	}
	c := raw(t, url, "client")
	for _, subject := range []string{"$JS.API.STREAM.INFO.KV_CORTEX_JOBS", "job.echo", wire.SubjectResult} {
		if err := c.Publish(subject, []byte("x")); err != nil {
			t.Fatal(err)
		}
		c.refused(t, "publish", subject)
	}
}

// A worker heartbeats and publishes results only as itself: the server
// refuses its publishes on another worker's subjects, and the scheduler
// refuses a packet on its own subject that claims another worker's id.
func TestWorkerCannotActAsAnother(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	var logs logBuffer
	e := engine(t, url, logs.logger())

	w1 := raw(t, url, "echo-1")
	for _, subject := range []string{
		wire.WorkerHeartbeatSubject("echo", "echo-2"), wire.ResultSubject("echo-2"),
		wire.HeartbeatSubject("echo"), wire.SubjectResult, // the bare subjects name nobody
		"_CORTEX.ack.some-scheduler.1.some-job", // answering a dispatch it was not sent
		"sys.worker.echo-2.cancel", "job.echo",
	} {
		hb := wire.HeartbeatPacket("hb", "echo-2", &pb.Heartbeat{WorkerId: "echo-2"})
		data, _ := proto.Marshal(hb)
		if err := w1.Publish(subject, data); err != nil {
			t.Fatal(err)
		}
		w1.refused(t, "publish", subject)
	}
	for _, subject := range []string{"sys.worker.echo-2.>", "sys.job.result.>", "sys.heartbeat.>", "job.other"} {
		w := raw(t, url, "echo-1")
		if _, err := w.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
		w.refused(t, "subscription", subject)
	}

	// On its own subjects, claiming echo-2: the scheduler refuses both.
	b := connectAs(t, url, "echo-1", logs.logger())
	if err := b.Publish(wire.WorkerHeartbeatSubject("echo", "echo-1"), wire.HeartbeatPacket("hb", "echo-1", &pb.Heartbeat{WorkerId: "echo-2"})); err != nil {
		t.Fatal(err)
	}
	res := &pb.JobResult{JobId: "someone-elses", WorkerId: "echo-2", Status: pb.JobStatus_JOB_STATUS_COMPLETED}
	if err := b.Publish(wire.ResultSubject("echo-1"), wire.JobResultPacket("t", "echo-1", res)); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the scheduler to refuse both", func() bool { return e.Stats().IdentityRejected == 2 })
	if st := e.Stats(); st.Heartbeats != 0 || st.Results != 0 {
		t.Errorf("stats %+v: a forged packet was applied", st)
	}
	// The scheduler counts a refusal, then logs it.
	systest.Eventually(t, waitFor, "the refusal to be logged", func() bool { return strings.Contains(logs.String(), "subject names another worker") })
	// As itself, it is heard.
	if err := b.Publish(wire.WorkerHeartbeatSubject("echo", "echo-1"), wire.HeartbeatPacket("hb", "echo-1", &pb.Heartbeat{WorkerId: "echo-1"})); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "its own heartbeat", func() bool { return e.Stats().Heartbeats == 1 })
	logs.noViolations(t)
}

// A worker cannot have the scheduler answer its results in another
// worker's inbox: under RequireWorkerIdentity a result on its own subject
// that asks for its answer (or its batch) elsewhere is handled and not
// answered, counted and logged; asked for in its own inbox, it is answered.
func TestResultAnswersGoOnlyToTheWorkersOwnInbox(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	var logs logBuffer
	e := engine(t, url, logs.logger())

	victim := connectAs(t, url, "echo-2", logs.logger())
	var forged atomic.Int32
	drain, err := victim.SubscribeAnswers(bus.DefaultInboxPrefix("echo-2")+".>", func(string, string, []uint64) { forged.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	attacker := connectAs(t, url, "echo-1", logs.logger())
	own := attacker.NewInbox()
	answered := make(chan string, 4)
	drainOwn, err := attacker.SubscribeAnswers(own+".*", func(_, answer string, _ []uint64) { answered <- answer })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drainOwn() }()
	flushBus := func(b *bus.NatsBus) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	flushBus(victim)
	flushBus(attacker)

	res := &pb.JobResult{JobId: "no-such-job", WorkerId: "echo-1", Status: pb.JobStatus_JOB_STATUS_COMPLETED}
	elsewhere := bus.DefaultInboxPrefix("echo-2") + ".x"
	if err := attacker.PublishAnswered(wire.ResultSubject("echo-1"), wire.JobResultPacket("t", "echo-1", res), elsewhere+".1", elsewhere+".batch"); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the refusal to answer", func() bool { return e.Stats().RepliesRefused == 1 })
	if err := attacker.PublishAnswered(wire.ResultSubject("echo-1"), wire.JobResultPacket("t", "echo-1", res), own+".2", ""); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-answered:
		if a != bus.AnswerDone {
			t.Fatalf("the answer in its own inbox: %q; want done", a)
		}
	case <-time.After(waitFor):
		t.Fatal("no answer in the worker's own inbox")
	}
	flushBus(victim)
	if n := forged.Load(); n != 0 {
		t.Fatalf("%d answers reached another worker's inbox", n)
	}
	systest.Eventually(t, waitFor, "the refusal to be logged", func() bool {
		return strings.Contains(logs.String(), "reply subject its worker may not read")
	})
	logs.noViolations(t)
}

// The whole system under the shipped configuration: every part connects as
// its role and does all it does (the job store and intake in JetStream or in
// memory, dispatch and confirmation, heartbeats and leases, results, cancel,
// dead letters and redrive, the safety kernel's audit records, remote safety
// checks) without one refusal.
func TestSystemUnderShippedConfig(t *testing.T) {
	t.Parallel()
	for _, store := range []string{config.StoreJetStream, config.StoreMemory} {
		t.Run(store, func(t *testing.T) {
			t.Parallel()
			url := startServer(t).ClientURL()
			logs := captureLogs(t)
			log := logs.logger()
			runScheduler(t, url, store, config.Safety{}, log)
			stopFast := runWorker(t, url, "echo-1", echo.WorkTime{}, log)
			c := newClient(t, url, "client", log)
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
			defer cancel()

			// Completed on a worker of the worker role.
			submit(t, ctx, c, &pb.JobRequest{JobId: "done", Topic: "job.echo"})
			if j := watch(t, ctx, c, "done", terminal); j.GetState() != lifecycle.Completed || j.GetWorkerId() != "echo-1" {
				t.Fatalf("job ended %s on %q, want COMPLETED on echo-1", lifecycle.Name(j.GetState()), j.GetWorkerId())
			}
			if jobs, err := list(ctx, c, lifecycle.Completed, 10); err != nil || len(jobs) != 1 {
				t.Errorf("list: %d jobs, %v", len(jobs), err)
			}
			// Denied by the policy, audited on sys.safety.audit.
			denied(t, ctx, c, "denied")

			// Cancelled while it runs on another worker: the scheduler reaches it.
			stopFast()
			runWorker(t, url, "echo-2", echo.WorkTime{Min: time.Hour, Max: time.Hour}, log)
			submit(t, ctx, c, &pb.JobRequest{JobId: "cancelled", Topic: "job.echo"})
			watch(t, ctx, c, "cancelled", runningOn("echo-2"))
			if _, err := c.Cancel(ctx, "cancelled", "test"); err != nil {
				t.Fatal(err)
			}
			watch(t, ctx, c, "cancelled", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Cancelled })

			// Failed by its worker, dead-lettered, redriven. (The echo worker
			// does not fail: its user reports the failure, on its own subject.)
			submit(t, ctx, c, &pb.JobRequest{JobId: "dead", Topic: "job.echo", MaxAttempts: 1})
			watch(t, ctx, c, "dead", runningOn("echo-2"))
			failed := &pb.JobResult{JobId: "dead", WorkerId: "echo-2", Attempt: 1, Status: pb.JobStatus_JOB_STATUS_FAILED, Error: "broken"}
			if err := connectAs(t, url, "echo-2", log).Publish(wire.ResultSubject("echo-2"), wire.JobResultPacket("t", "echo-2", failed)); err != nil {
				t.Fatal(err)
			}
			watch(t, ctx, c, "dead", func(j *pb.JobInfo) bool { return j.GetDeadLetter() })
			systest.Eventually(t, waitFor, "the dead letter", func() bool {
				dead, err := deadLetters(ctx, c, 10)
				return err == nil && len(dead) == 1 && dead[0].GetJobId() == "dead"
			})
			again, err := c.RetryDeadLetter(ctx, "dead")
			if err != nil {
				t.Fatalf("redrive: %v", err)
			}
			watch(t, ctx, c, again.GetJobId(), runningOn("echo-2"))
			if _, err := c.Cancel(ctx, again.GetJobId(), "done with it"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// The safety service as its own role: the scheduler asks it, it answers
// and audits, and the verdicts reach the jobs.
func TestRemoteSafetyUnderShippedConfig(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	sctx, stopSafety := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- safety.RunService(sctx, safety.ServiceOptions{
			NatsURL: url, NatsOptions: natsOptions(t, creds("safety")), Logger: log, Started: func() { close(started) },
		})
	}()
	t.Cleanup(func() {
		stopSafety()
		if err := <-done; err != nil {
			t.Errorf("safety service: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("safety service: %v", err)
	case <-time.After(waitFor):
		t.Fatal("the safety service did not start")
	}
	runScheduler(t, url, config.StoreJetStream, config.Safety{Remote: true, Timeout: waitFor}, log)
	runWorker(t, url, "echo-1", echo.WorkTime{}, log)
	c := newClient(t, url, "client", log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	submit(t, ctx, c, &pb.JobRequest{JobId: "allowed", Topic: "job.echo"})
	if j := watch(t, ctx, c, "allowed", terminal); j.GetState() != lifecycle.Completed {
		t.Errorf("allowed job ended %s, want COMPLETED", lifecycle.Name(j.GetState()))
	}
	denied(t, ctx, c, "denied")
}

// denied submits a job on sys.destroy, which the default policy forbids:
// the submission is refused with the rule, and the job is DENIED.
func denied(t *testing.T, ctx context.Context, c *client.Client, id string) {
	t.Helper()
	_, err := c.Submit(ctx, &pb.JobRequest{JobId: id, Topic: "sys.destroy"})
	if !errors.Is(err, client.ErrRefused) || !errors.Is(err, client.ErrDenied) || !strings.Contains(err.Error(), "forbidden-topic") {
		t.Fatalf("submitting on sys.destroy: %v, want a refusal by rule forbidden-topic", err)
	}
	if j := watch(t, ctx, c, id, terminal); j.GetState() != lifecycle.Denied {
		t.Errorf("sys.destroy job is %s, want DENIED", lifecycle.Name(j.GetState()))
	}
}

// Placement that picks a worker dispatches on the worker's own subject,
// sys.worker.<id>.job: the scheduler may publish there and the worker take
// it, and nobody else.
func TestPlacementUnderShippedConfig(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	runSchedulerWith(t, url, config.StoreJetStream, config.Safety{},
		&placement.Config{Pools: []placement.Pool{{Name: "echo", Topics: []string{"job.echo"}, Strategy: placement.StrategyLeastLoaded}}}, log)
	runWorkerWith(t, url, "echo-1", echo.WorkTime{}, true, log)
	c := newClient(t, url, "client", log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	for _, id := range []string{"placed-1", "placed-2"} {
		submit(t, ctx, c, &pb.JobRequest{JobId: id, Topic: "job.echo"})
		if j := watch(t, ctx, c, id, terminal); j.GetState() != lifecycle.Completed || j.GetWorkerId() != "echo-1" {
			t.Errorf("job %s ended %s on %q, want COMPLETED on echo-1", id, lifecycle.Name(j.GetState()), j.GetWorkerId())
		}
	}
	// Only echo-1 takes its own subject.
	w2 := raw(t, url, "echo-2")
	if _, err := w2.SubscribeSync(wire.WorkerJobSubject("echo-1")); err != nil {
		t.Fatal(err)
	}
	w2.refused(t, "subscription", wire.WorkerJobSubject("echo-1"))
}

func terminal(j *pb.JobInfo) bool { return lifecycle.Terminal(j.GetState()) }

func runningOn(worker string) func(*pb.JobInfo) bool {
	return func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Running && j.GetWorkerId() == worker }
}

// submit submits req as the client, failing the test on an error.
func submit(t *testing.T, ctx context.Context, c *client.Client, req *pb.JobRequest) *pb.JobInfo {
	t.Helper()
	j, err := c.Submit(ctx, req)
	if err != nil {
		t.Fatalf("submit %s: %v", req.GetJobId(), err)
	}
	return j
}

// watch asks for job id until until holds, and returns it.
func watch(t *testing.T, ctx context.Context, c *client.Client, id string, until func(*pb.JobInfo) bool) *pb.JobInfo {
	t.Helper()
	var last *pb.JobInfo
	systest.Eventually(t, waitFor, "job "+id, func() bool {
		j, err := c.Get(ctx, id)
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		last = j
		return until(j)
	})
	return last
}
