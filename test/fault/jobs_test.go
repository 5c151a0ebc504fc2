package fault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

// startPoisonWorker runs, in this process, a worker built with pkg/worker
// for job.poison whose handler fails every attempt: an error on odd
// attempts, a panic on even ones.
func startPoisonWorker(t *testing.T, url string) {
	t.Helper()
	b := systest.Connect(t, url, "fault-test")
	var logs logging.Buffer
	w, err := worker.New(b.Conn(), worker.Config{
		Kind:              "poison",
		ID:                "worker-poison",
		LeaseInterval:     200 * time.Millisecond,
		HeartbeatInterval: time.Second,
		Logger:            slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Handler: worker.HandlerFunc(func(_ context.Context, job *worker.Job) (worker.Result, error) {
			if job.Attempt()%2 == 0 {
				panic("poison: cannot digest " + job.ID())
			}
			return worker.Result{}, fmt.Errorf("poison: cannot digest %s", job.ID())
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("poison worker: %v", err)
			}
		case <-time.After(killTimeout):
			t.Errorf("poison worker did not stop within %s", killTimeout)
		}
		if t.Failed() {
			t.Logf("--- worker-poison log:\n%s", logs.String())
		}
	})
}

// A poison job, which its worker fails every time (an error, a panic), ends
// FAILED after max_attempts (3), in the dead-letter queue, while echo jobs
// submitted around it complete. Re-driven, it becomes a new job, which fails
// and is dead-lettered in turn; the original stays FAILED.
func TestPoisonJobIsDeadLettered(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	startWorker(t, "worker-echo", url, cfg, "--work-time", "20ms-80ms")
	waitWorkerKnown(t, sched, "worker-echo")
	startPoisonWorker(t, url)
	waitWorkerKnown(t, sched, "worker-poison")
	results := recordResults(t, url)
	c, _ := newClient(t, url)

	const poison = "poison-1"
	var echoes []string
	for i := range 10 {
		echoes = append(echoes, fmt.Sprintf("echo-before-%d", i))
		submit(t, c, echoJob(echoes[len(echoes)-1]))
	}
	submit(t, c, &pb.JobRequest{JobId: poison, Topic: "job.poison"})
	for i := range 10 {
		echoes = append(echoes, fmt.Sprintf("echo-after-%d", i))
		submit(t, c, echoJob(echoes[len(echoes)-1]))
	}

	failed := waitTerminal(t, c, poison, 20*time.Second)
	if failed.GetState() != lifecycle.Failed || !failed.GetDeadLetter() || failed.GetAttempt() != 3 || failed.GetFailedAttempts() != 3 ||
		!strings.Contains(failed.GetError(), "no attempts left (3)") {
		t.Errorf("poison job: %s dead_letter=%v; want FAILED after 3 attempts, dead-lettered", describe(failed), failed.GetDeadLetter())
	}
	rs := results.of(poison)
	panicked := 0
	for _, r := range rs {
		if r.Status != pb.JobStatus_JOB_STATUS_FAILED || r.WorkerID != "worker-poison" {
			t.Errorf("poison job result %+v, want FAILED by worker-poison", r)
		}
		if strings.Contains(r.Error, "panicked") {
			panicked++
		}
	}
	if len(rs) != 3 || panicked != 1 {
		t.Errorf("poison job results: %+v; want 3 failures, the second a panic", rs)
	}
	sched.WaitForLog(t, 5*time.Second, "job failed and was dead-lettered", "job_id", poison)
	for _, id := range echoes {
		if j := waitTerminal(t, c, id, 20*time.Second); j.GetState() != lifecycle.Completed {
			t.Errorf("echo job %s: %s", id, describe(j))
		}
	}

	deadLetters := func() []string {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		defer cancel()
		dead, err := c.DeadLetters(ctx, client.ListOptions{Limit: 100})
		if err != nil {
			t.Fatalf("dead letters: %v", err)
		}
		var ids []string
		for _, j := range dead.Jobs {
			ids = append(ids, j.GetJobId())
		}
		return ids
	}
	if got := deadLetters(); len(got) != 1 || got[0] != poison {
		t.Fatalf("dead letters %v, want [%s]", got, poison)
	}

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	redriven, err := c.RetryDeadLetter(ctx, poison)
	if err != nil {
		t.Fatalf("redrive: %v", err)
	}
	newID := redriven.GetJobId()
	t.Logf("re-driven as %s (%s)", newID, lifecycle.Name(redriven.GetState()))
	if newID == poison || !strings.HasPrefix(newID, poison) || redriven.GetRequest().GetTopic() != "job.poison" {
		t.Fatalf("redrive answered %s topic %q; want a new job for job.poison", newID, redriven.GetRequest().GetTopic())
	}
	again := waitTerminal(t, c, newID, 20*time.Second)
	if again.GetState() != lifecycle.Failed || !again.GetDeadLetter() {
		t.Errorf("re-driven job: %s; want FAILED, dead-lettered", describe(again))
	}
	if got := deadLetters(); len(got) != 1 || got[0] != newID {
		t.Errorf("dead letters after the redrive: %v, want [%s]", got, newID)
	}
	if j := getJob(c, poison); j.GetState() != lifecycle.Failed {
		t.Errorf("the original poison job after its redrive: %s; want it still FAILED", describe(j))
	}
}

// A job_id submitted again with the same content is the same job (answered
// with it, run once); with different content it is refused as a conflict,
// and the job is unchanged.
func TestDuplicateJobID(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	w := startWorker(t, "worker-1", url, cfg, "--work-time", "500ms")
	waitWorkerKnown(t, sched, "worker-1")
	results := recordResults(t, url)
	c, b := newClient(t, url)

	const id = "dup-1"
	first := submit(t, c, echoJob(id))
	second := submit(t, c, echoJob(id))
	if second.GetJobId() != id || second.GetCreatedMs() != first.GetCreatedMs() || second.GetTraceId() != first.GetTraceId() {
		t.Errorf("resubmission answered job %s created %d trace %s; want the first: created %d trace %s",
			second.GetJobId(), second.GetCreatedMs(), second.GetTraceId(), first.GetCreatedMs(), first.GetTraceId())
	}
	// The same again as the design document's sender would send it.
	if err := systest.PublishSubmit(b, "fault-sender", "", echoJob(id)); err != nil {
		t.Fatal(err)
	}

	conflicting := echoJob(id)
	conflicting.ContextPtr = "memory://echo_ctx/something-else"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Submit(ctx, conflicting)
	var refused *client.RefusedError
	if !errors.As(err, &refused) || !errors.Is(err, client.ErrRefused) || !errors.Is(err, client.ErrConflict) || !strings.Contains(refused.Reason, "conflict") || refused.Retryable {
		t.Errorf("conflicting submission: err %v; want a non-retryable *client.RefusedError about a conflict", err)
	}
	if err := systest.PublishSubmit(b, "fault-sender", "", conflicting); err != nil {
		t.Fatal(err)
	}
	systest.Poll(t, 10*time.Second, 20*time.Millisecond, "both conflicting submissions refused", func() (bool, string) {
		k := len(sched.FindLogs("job_id exists with different content", "job_id", id))
		return k >= 2, fmt.Sprintf("%d refused", k)
	})

	done := waitTerminal(t, c, id, 15*time.Second)
	if done.GetState() != lifecycle.Completed || done.GetAttempt() != 1 || done.GetRequest().GetContextPtr() != "memory://echo_ctx/"+id {
		t.Errorf("job %s: %s context_ptr=%q; want COMPLETED on attempt 1, with the first content", id, describe(done), done.GetRequest().GetContextPtr())
	}
	// Submitted once more after it finished: answered with the finished job.
	if again := submit(t, c, echoJob(id)); again.GetState() != lifecycle.Completed || again.GetCreatedMs() != first.GetCreatedMs() {
		t.Errorf("resubmission of the finished job: %s; want the COMPLETED job", describe(again))
	}
	if k := countJobs(c, pb.JobState_JOB_STATE_UNSPECIFIED); k != 1 {
		t.Errorf("the store holds %d jobs, want 1", k)
	}
	time.Sleep(200 * time.Millisecond) // a second run would have shown by now
	if got := len(w.FindLogs("job", "job_id", id, "topic", "job.echo")); got != 1 {
		t.Errorf("the worker ran %s %d times, want once", id, got)
	}
	if rs := results.of(id); len(rs) != 1 {
		t.Errorf("results for %s: %+v, want one", id, rs)
	}
}

// A job for a topic no worker serves stays PENDING, saying so, and ends
// TIMEOUT at its deadline (ttl 2s) with an error that says why; whether it
// was submitted with confirmation or published plainly.
func TestJobForTopicNoWorkerServes(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	w := startWorker(t, "worker-1", url, cfg, "--work-time", "0") // a live worker, for another topic
	waitWorkerKnown(t, sched, "worker-1")
	c, b := newClient(t, url)

	const ttl = 2 * time.Second
	orphan := func(id string) *pb.JobRequest {
		return &pb.JobRequest{JobId: id, Topic: "job.nobody", TtlMs: ttl.Milliseconds()}
	}
	submit(t, c, orphan("orphan-confirmed"))
	if err := systest.PublishSubmit(b, "fault-sender", "", orphan("orphan-plain")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"orphan-confirmed", "orphan-plain"} {
		waitState(t, c, id, ttl, "PENDING for want of a worker", func(j *pb.JobInfo) bool {
			return j.GetState() == lifecycle.Pending && strings.Contains(j.GetPendingReason(), "no live worker")
		})
	}
	for _, id := range []string{"orphan-confirmed", "orphan-plain"} {
		j := waitTerminal(t, c, id, 3*ttl)
		lived := time.Duration(j.GetUpdatedMs()-j.GetCreatedMs()) * time.Millisecond
		t.Logf("%s: %s %s after submission: %q", id, lifecycle.Name(j.GetState()), lived, j.GetError())
		if j.GetState() != lifecycle.Timeout || !strings.Contains(j.GetError(), "deadline exceeded") ||
			!strings.Contains(j.GetError(), "no live worker serves job.nobody") {
			t.Errorf("%s: %s; want TIMEOUT with an error saying no worker serves job.nobody", id, describe(j))
		}
		if lived < ttl || lived > ttl+time.Second {
			t.Errorf("%s ended %s after submission, want at its ttl %s (within 1s)", id, lived, ttl)
		}
		sched.WaitForLog(t, 5*time.Second, "job timed out", "job_id", id)
		if got := w.FindLogs("", "job_id", id); len(got) > 0 {
			t.Errorf("the echo worker saw %s: %v", id, got)
		}
	}
}
