package security

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The reply subjects a client with nothing but the client role names to
// make the scheduler publish with its own permissions: purge or delete the
// job bucket, write a job record, a dead letter, a dispatch, another
// client's inbox, the scheduler's own.
var attackReplies = []string{
	"$JS.API.STREAM.PURGE.KV_CORTEX_JOBS",
	"$JS.API.STREAM.DELETE.KV_CORTEX_JOBS",
	"$KV.CORTEX_JOBS.victim",
	"sys.job.dlq.victim",
	"job.echo",
	"_INBOX.tenant-b.stolen",
	"_INBOX.scheduler.x",
}

// A client names a JetStream API subject (and the others above) as the
// reply subject of its submissions and queries: the scheduler refuses each
// (counted), publishes nothing there, the job records survive, and the
// same client's honest requests are served as before.
func TestReplySubjectAttackIsRefused(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	e := engine(t, url, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	admin := newClient(t, url, "client", log)
	submit(t, ctx, admin, &pb.JobRequest{JobId: "victim", Topic: "job.echo"})

	// Another client listens on its inbox: nothing may arrive there.
	b := raw(t, url, "tenant-b")
	stolen, err := b.SubscribeSync("_INBOX.tenant-b.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}

	attacker := raw(t, url, "tenant-a")
	for i, reply := range attackReplies {
		m := nats.NewMsg(wire.ClientSubject(wire.SubjectSubmit, "tenant-a"))
		m.Data = submission("attack-" + string(rune('a'+i)))
		m.Header.Set(wire.HeaderReplyTo, reply)
		if err := attacker.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
		q, _ := proto.Marshal(&pb.BusPacket{Payload: &pb.BusPacket_JobQuery{JobQuery: &pb.JobQuery{}}})
		if err := attacker.PublishRequest(wire.ClientSubject(wire.SubjectQuery, "tenant-a"), reply, q); err != nil {
			t.Fatal(err)
		}
		c, _ := proto.Marshal(&pb.BusPacket{Payload: &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "victim"}}})
		if err := attacker.PublishRequest(wire.ClientSubject(wire.SubjectCancel, "tenant-a"), reply, c); err != nil {
			t.Fatal(err)
		}
	}
	want := uint64(3 * len(attackReplies))
	systest.Eventually(t, waitFor, "every attack to be refused", func() bool { return e.Stats().RepliesRefused == want })

	// The job records survive, the victim untouched.
	j, err := admin.Get(ctx, "victim")
	if err != nil || lifecycle.Terminal(j.GetState()) {
		t.Fatalf("the victim after the attack: %v, %v", j, err)
	}
	if jobs, err := list(ctx, admin, 0, 100); err != nil || len(jobs) != 1 {
		t.Errorf("after the attack the store lists %d jobs (%v), want the victim only", len(jobs), err)
	}
	if st := e.Stats(); st.Submitted != 1 || st.Cancelled != 0 {
		t.Errorf("stats %+v: an attack was acted on", st)
	}
	// The attacker, asking honestly, is served.
	c := newClient(t, url, "tenant-a", log)
	if j := submit(t, ctx, c, &pb.JobRequest{JobId: "honest", Topic: "job.echo"}); j.GetRequest().GetTenant() != "a" {
		t.Errorf("tenant-a's honest job has tenant %q, want a", j.GetRequest().GetTenant())
	}
	if _, err := c.Get(ctx, "honest"); err != nil {
		t.Errorf("tenant-a getting its job: %v", err)
	}
	if m, err := stolen.NextMsg(10 * time.Millisecond); err == nil {
		t.Errorf("tenant-b's inbox received %s", m.Subject)
	}
	systest.Eventually(t, waitFor, "the refusal to be logged", func() bool {
		return strings.Contains(logs.String(), "reply subject the requester may not read")
	})
	// The attacker's raw connection was refused nothing by the server: it
	// did only what a client may. (captureLogs checks the system's parts.)
	select {
	case err := <-attacker.errs:
		t.Errorf("the attacker was refused by the server: %v", err)
	default:
	}
}

// The scheduler's own permissions no longer hold the JetStream API: it
// cannot purge or delete a stream, delete a consumer or a job record by
// the API, nor touch a stream that is not its own. The server refuses each.
func TestSchedulerCannotPurgeOrDelete(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	engine(t, url, logs.logger()) // its streams exist
	for _, subject := range []string{
		"$JS.API.STREAM.PURGE.KV_CORTEX_JOBS",
		"$JS.API.STREAM.DELETE.KV_CORTEX_JOBS",
		"$JS.API.STREAM.PURGE.CORTEX_DLQ",
		"$JS.API.STREAM.DELETE.CORTEX_DLQ",
		"$JS.API.STREAM.PURGE.CORTEX_JOB_SUBMIT",
		"$JS.API.STREAM.DELETE.CORTEX_JOB_RESULT",
		"$JS.API.STREAM.MSG.DELETE.KV_CORTEX_JOBS",
		"$JS.API.CONSUMER.DELETE.CORTEX_JOB_SUBMIT.cortex-scheduler",
		"$JS.API.STREAM.CREATE.SOMEONE_ELSES",
		"$JS.API.STREAM.UPDATE.SOMEONE_ELSES",
		"$JS.API.STREAM.LIST",
		"$JS.API.ACCOUNT.PURGE.X",
		"$KV.OTHER_BUCKET.k",
		"$JS.ACK.SOMEONE_ELSES.c.1.1.1.1.1",
	} {
		s := raw(t, url, "scheduler")
		if err := s.PublishRequest(subject, "_INBOX.scheduler.x", []byte("{}")); err != nil {
			t.Fatal(err)
		}
		s.refused(t, "publish", subject)
	}
	// And the job bucket is still there for the scheduler to use.
	c := newClient(t, url, "client", logs.logger())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	submit(t, ctx, c, &pb.JobRequest{JobId: "after", Topic: "job.echo"})
}

// Tenant isolation under the shipped configuration, through the client
// the cortex commands use: tenant-a cannot get, list, watch, cancel, list
// the dead letters of or re-drive tenant-b's job (to it they do not
// exist), nor submit for tenant b; tenant-b can; the administrator sees
// every tenant.
func TestTenantIsolationUnderShippedConfig(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	runScheduler(t, url, config.StoreJetStream, config.Safety{}, log)
	runWorker(t, url, "echo-2", echo.WorkTime{Min: time.Hour, Max: time.Hour}, log)
	a, b, admin := newClient(t, url, "tenant-a", log), newClient(t, url, "tenant-b", log), newClient(t, url, "client", log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	secret := &pb.JobRequest{JobId: "b-secret", Topic: "job.echo", MaxAttempts: 1, ContextPtr: "s3://b/ctx", EnvVars: map[string]string{"DB_SECRET": "hunter2"}}
	if j := submit(t, ctx, b, secret); j.GetRequest().GetTenant() != "b" {
		t.Fatalf("tenant-b's job has tenant %q, want b (stamped)", j.GetRequest().GetTenant())
	}
	watch(t, ctx, b, "b-secret", runningOn("echo-2"))
	submit(t, ctx, a, &pb.JobRequest{JobId: "a-own", Topic: "job.echo"})

	// Exactly what an unknown job gets.
	notFound := func(what string, err error) {
		t.Helper()
		var r *client.RefusedError
		if !errors.As(err, &r) || !errors.Is(err, client.ErrNotFound) || !strings.Contains(r.Reason, "not found") || r.Retryable || r.Job != nil ||
			strings.Contains(r.Reason, "hunter2") {
			t.Errorf("tenant-a %s: %v, want not found", what, err)
		}
	}
	_, unknownErr := a.Get(ctx, "no-such-job")
	_, err := a.Get(ctx, "b-secret")
	notFound("getting b-secret", err)
	if err != nil && unknownErr != nil && strings.ReplaceAll(err.Error(), "b-secret", "X") != strings.ReplaceAll(unknownErr.Error(), "no-such-job", "X") {
		t.Errorf("another tenant's job %q, an unknown one %q: they differ", err, unknownErr)
	}
	_, err = a.Wait(ctx, "b-secret")
	notFound("watching b-secret", err)
	_, err = a.Cancel(ctx, "b-secret", "mine now")
	notFound("cancelling b-secret", err)
	if jobs, err := list(ctx, a, 0, 100); err != nil || len(jobs) != 1 || jobs[0].GetJobId() != "a-own" {
		t.Errorf("tenant-a lists %v, %v; want its own job only", ids(jobs), err)
	}
	if _, err := a.Submit(ctx, &pb.JobRequest{JobId: "forged", Topic: "job.echo", Tenant: "b"}); !errors.Is(err, client.ErrRefused) ||
		!strings.Contains(err.Error(), `bound to tenant "a"`) {
		t.Errorf("tenant-a submitting for tenant b: %v, want refused", err)
	}

	// tenant-b's job fails and is dead-lettered; tenant-a cannot see or re-drive it.
	failed := &pb.JobResult{JobId: "b-secret", WorkerId: "echo-2", Attempt: 1, Status: pb.JobStatus_JOB_STATUS_FAILED, Error: "broken"}
	if err := connectAs(t, url, "echo-2", log).Publish(wire.ResultSubject("echo-2"), wire.JobResultPacket("t", "echo-2", failed)); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the dead letter", func() bool {
		dead, err := deadLetters(ctx, b, 10)
		return err == nil && len(dead) == 1
	})
	if dead, err := deadLetters(ctx, a, 10); err != nil || len(dead) != 0 {
		t.Errorf("tenant-a's dead letters: %v, %v", ids(dead), err)
	}
	_, err = a.RetryDeadLetter(ctx, "b-secret")
	notFound("re-driving b-secret", err)
	again, err := b.RetryDeadLetter(ctx, "b-secret")
	if err != nil || again.GetRequest().GetTenant() != "b" {
		t.Fatalf("tenant-b re-driving its job: %v, %v", again, err)
	}

	// The administrator sees every tenant, secrets and all, and may cancel.
	if jobs, err := list(ctx, admin, 0, 100); err != nil || len(jobs) != 3 {
		t.Errorf("admin lists %v, %v", ids(jobs), err)
	}
	if j, err := admin.Get(ctx, "b-secret"); err != nil || j.GetRequest().GetEnvVars()["DB_SECRET"] != "hunter2" {
		t.Errorf("admin getting b-secret: %v, %v", j, err)
	}
	if _, err := admin.Cancel(ctx, again.GetJobId(), "admin"); err != nil {
		t.Errorf("admin cancelling tenant-b's job: %v", err)
	}
}

func ids(jobs []*pb.JobInfo) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.GetJobId()
	}
	return out
}
