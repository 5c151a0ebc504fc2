package security

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// longTopic is issue 12's finding 2: a topic longer than the server's
// protocol line.
var longTopic = "job." + strings.Repeat("a", 5000)

// Finding 2: `cortex submit --topic job.<5,000 × a>` took the scheduler off
// the bus for good. Under the shipped permissions it is refused, naming the
// field, as is a priority no version knows; the scheduler keeps serving: the
// next job completes.
func TestLongTopicIsRefusedAndTheSchedulerServes(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	runScheduler(t, url, config.StoreJetStream, config.Safety{}, log)
	runWorker(t, url, "echo-1", echo.WorkTime{}, log)
	c := newClient(t, url, "client", log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	for _, tc := range []struct {
		req  *pb.JobRequest
		want string
	}{
		{&pb.JobRequest{JobId: "long", Topic: longTopic}, "invalid topic: 5004 bytes, at most 255"},
		{&pb.JobRequest{JobId: "prio-99", Topic: "job.echo", Priority: 99}, "invalid priority: 99"},
	} {
		_, err := c.Submit(ctx, tc.req)
		var refused *client.RefusedError
		if !errors.As(err, &refused) || refused.Retryable || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("submitting %s: %v, want a final refusal saying %q", tc.req.GetJobId(), err, tc.want)
		}
		if _, err := c.Get(ctx, tc.req.GetJobId()); err == nil {
			t.Errorf("refused job %s was recorded", tc.req.GetJobId())
		}
	}
	submit(t, ctx, c, &pb.JobRequest{JobId: "after", Topic: "job.echo"})
	if j := watch(t, ctx, c, "after", terminal); j.GetState() != lifecycle.Completed {
		t.Errorf("the job after the refusals ended %s, want COMPLETED", lifecycle.Name(j.GetState()))
	}
	if strings.Contains(logs.String(), "closed by the server") {
		t.Error("a connection was closed by the server")
	}
}

// A job stored before these bounds with a subject no server takes (written
// into the job store here, as an earlier version stored it) is failed with
// the reason when the scheduler starts and comes to dispatch it; the
// scheduler is neither crashed nor deafened: the next job completes.
func TestStoredUnpublishableJobIsFailed(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()

	store, _, _, err := system.OpenStore(ctx, connectAs(t, url, "scheduler", log), config.StoreJetStream)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	if _, err := store.Create(ctx, &pb.JobInfo{JobId: "stored-long", State: lifecycle.Pending, MaxAttempts: 3, TraceId: "t",
		CreatedMs: now, UpdatedMs: now, Request: &pb.JobRequest{JobId: "stored-long", Topic: longTopic}}); err != nil {
		t.Fatal(err)
	}

	runScheduler(t, url, config.StoreJetStream, config.Safety{}, log)
	runWorker(t, url, "echo-1", echo.WorkTime{}, log)
	c := newClient(t, url, "client", log)
	j := watch(t, ctx, c, "stored-long", terminal)
	if j.GetState() != lifecycle.Failed || !strings.Contains(j.GetError(), "invalid topic") || j.GetDeadLetter() {
		t.Errorf("stored job ended %s with %q (dead letter %v), want FAILED for its topic", lifecycle.Name(j.GetState()), j.GetError(), j.GetDeadLetter())
	}
	submit(t, ctx, c, &pb.JobRequest{JobId: "after", Topic: "job.echo"})
	if j := watch(t, ctx, c, "after", terminal); j.GetState() != lifecycle.Completed {
		t.Errorf("the next job ended %s, want COMPLETED", lifecycle.Name(j.GetState()))
	}
	if strings.Contains(logs.String(), "closed by the server") {
		t.Error("a connection was closed by the server")
	}
}

// A scheduler whose connection the server closes for good (here a control
// line too long, sent on the scheduler's own connection past the bus's
// check, as before this fix) does not stay alive and deaf: RunScheduler,
// what the binary and `cortex dev` run, ends with an error saying why.
func TestSchedulerEndsWhenTheServerClosesItsConnection(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	conns := make(chan *nats.Conn, 1)
	opts := append(natsOptions(t, creds("scheduler")), nats.ConnectHandler(func(nc *nats.Conn) { conns <- nc }))
	started, done := make(chan struct{}), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		done <- system.RunScheduler(ctx, system.SchedulerOptions{
			NatsURL: url, ID: "sched-closed", Logger: logs.logger(), NatsOptions: opts,
			Settings: config.Scheduler{Store: config.StoreMemory, RequireWorkerIdentity: true},
			Started:  func() { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("scheduler: %v", err)
	case <-time.After(waitFor):
		t.Fatal("the scheduler did not start")
	}
	if err := (<-conns).Publish(longTopic, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, bus.ErrClosedByServer) || !strings.Contains(strings.ToLower(err.Error()), "maximum control line") {
			t.Errorf("RunScheduler = %v, want an error saying the server closed the connection, and why", err)
		}
	case <-time.After(waitFor):
		t.Fatal("the scheduler runs on after the server closed its connection")
	}
}

// Finding 3: echo-1, on its own result subject (all its permissions allow),
// reports a result for a job running on echo-2, at the current attempt and
// at attempt 0. Both are refused and counted; echo-2's real result then
// completes the job with echo-2's result_ptr.
func TestForgedResultIsRefused(t *testing.T) {
	t.Parallel()
	url := startServer(t).ClientURL()
	logs := captureLogs(t)
	log := logs.logger()
	e := engine(t, url, log)

	release := make(chan struct{})
	w2, err := worker.New(connectAs(t, url, "echo-2", log).Conn(), worker.Config{
		Kind: echo.Kind, ID: "echo-2", NamedSubjects: true, Logger: log,
		HeartbeatInterval: 100 * time.Millisecond,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			select {
			case <-release:
				return worker.Result{Ptr: "echo-2://" + job.ID()}, nil
			case <-ctx.Done():
				return worker.Result{}, ctx.Err()
			}
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w2.Run(wctx) }()
	t.Cleanup(func() {
		stopWorker()
		if err := <-stopped; err != nil {
			t.Errorf("echo-2: %v", err)
		}
	})

	c := newClient(t, url, "client", log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitFor)
	defer cancel()
	submit(t, ctx, c, &pb.JobRequest{JobId: "held-by-2", Topic: "job.echo"})
	j := watch(t, ctx, c, "held-by-2", runningOn("echo-2"))

	echo1 := connectAs(t, url, "echo-1", log)
	for _, attempt := range []int32{j.GetAttempt(), 0} {
		res := &pb.JobResult{JobId: "held-by-2", WorkerId: "echo-1", Attempt: attempt,
			Status: pb.JobStatus_JOB_STATUS_COMPLETED, ResultPtr: "forged://echo-1"}
		if err := echo1.Publish(wire.ResultSubject("echo-1"), wire.JobResultPacket("forged", "echo-1", res)); err != nil {
			t.Fatal(err)
		}
	}
	// With identities enforced, a result that names no attempt is not
	// trusted either.
	systest.Eventually(t, waitFor, "both forged results refused", func() bool {
		st := e.Stats()
		return st.ForeignResults == 1 && st.UntrustedResults == 1
	})
	if j, err := c.Get(ctx, "held-by-2"); err != nil || j.GetState() != lifecycle.Running || j.GetWorkerId() != "echo-2" {
		t.Fatalf("after the forged results: %v %v, want RUNNING on echo-2", describeJob(j), err)
	}
	systest.Eventually(t, waitFor, "the refusal logged", func() bool { return strings.Contains(logs.String(), "does not hold the attempt") })

	close(release)
	j = watch(t, ctx, c, "held-by-2", terminal)
	if j.GetState() != lifecycle.Completed || j.GetWorkerId() != "echo-2" || j.GetResultPtr() != "echo-2://held-by-2" {
		t.Errorf("job ended %s, want COMPLETED by echo-2 with its result", describeJob(j))
	}
}

func describeJob(j *pb.JobInfo) string {
	if j == nil {
		return "absent"
	}
	return lifecycle.Name(j.GetState()) + " on " + j.GetWorkerId() + " result " + j.GetResultPtr()
}
