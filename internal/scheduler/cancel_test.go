package scheduler_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ---- cancel ----

func TestCancelPendingJob(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("", noResponders())
	r.submit(request("p", "job.none"), "trace-p", "")
	r.waitJob("p", "pending for want of a worker", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && strings.HasPrefix(j.GetPendingReason(), "no live worker")
	})
	a := r.cancel("p", "user asked")
	if !a.GetOk() || len(a.GetJobs()) != 1 || a.GetJobs()[0].GetState() != lifecycle.Cancelled || a.GetJobs()[0].GetError() != "user asked" {
		t.Errorf("cancel answered %v", a)
	}
	if j := r.job("p"); j.GetState() != lifecycle.Cancelled || j.GetError() != "user asked" {
		t.Errorf("stored %s", describe(j))
	}
	for _, p := range r.bus.publishes() {
		if strings.HasPrefix(p.subject, "sys.worker.") {
			t.Errorf("told a worker about a job none held: %s", p.subject)
		}
	}
	if s := r.e.Stats(); s.Cancelled != 1 {
		t.Errorf("stats = %+v", s)
	}
	// Terminal: a second cancel is refused, and says what the job is.
	again := r.cancel("p", "")
	if again.GetOk() || again.GetError() != "job already CANCELLED" || again.GetJobs()[0].GetState() != lifecycle.Cancelled {
		t.Errorf("second cancel answered %v", again)
	}
}

func TestCancelRunningJobTellsItsWorker(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-9"))
	r.submit(request("r", "job.echo"), "trace-r", "")
	r.waitState("r", lifecycle.Running, 1)
	a := r.cancel("r", "")
	if !a.GetOk() || a.GetJobs()[0].GetState() != lifecycle.Cancelled {
		t.Fatalf("cancel answered %v", a)
	}
	if j := r.job("r"); j.GetError() != "cancelled by request" {
		t.Errorf("stored %s", describe(j))
	}
	told := r.bus.publishedOn(wire.WorkerCancelSubject("w-9"))
	if len(told) != 1 || told[0].GetJobCancel().GetJobId() != "r" || told[0].GetTraceId() != "trace-r" {
		t.Errorf("on %s: %v", wire.WorkerCancelSubject("w-9"), told)
	}
	// The worker's hand-back after the cancel is late: the job stays CANCELLED.
	r.result(failedResult("r", 1, "w-9", pb.JobStatus_JOB_STATUS_CANCELLED, "job cancelled"))
	if j := r.job("r"); j.GetState() != lifecycle.Cancelled {
		t.Errorf("after the hand-back: %s", describe(j))
	}
	if s := r.e.Stats(); s.LateResults != 1 {
		t.Errorf("stats = %+v", s)
	}
}

// A job cancelled while its dispatch is on its way: the worker that confirms
// it afterwards holds a job nobody wants, and must be told.
func TestCancelDuringTheHandOffTellsTheWorkerThatConfirms(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	gate := make(chan struct{})
	r.bus.fallback("", gated(gate, ackBy("w-7")))
	r.submit(request("in-flight", "job.echo"), "trace-f", "")
	r.waitState("in-flight", lifecycle.Dispatched, 1)
	if a := r.cancel("in-flight", "changed my mind"); !a.GetOk() {
		t.Fatalf("cancel answered %v", a)
	}
	close(gate)
	r.bus.replies.Wait()
	systest.Eventually(t, waitLimit, "the worker to be told", func() bool { return len(r.bus.publishedOn(wire.WorkerCancelSubject("w-7"))) == 1 })
	if c := r.bus.publishedOn(wire.WorkerCancelSubject("w-7"))[0].GetJobCancel(); c.GetJobId() != "in-flight" {
		t.Errorf("told %v", c)
	}
	if j := r.job("in-flight"); j.GetState() != lifecycle.Cancelled {
		t.Errorf("job = %s", describe(j))
	}
}

func TestCancelRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	r.submit(request("done", "job.echo"), "t", "")
	r.waitState("done", lifecycle.Running, 1)
	r.result(completed("done", 1, "w-1"))
	if a := r.cancel("done", ""); a.GetOk() || a.GetError() != "job already COMPLETED" {
		t.Errorf("cancel of a completed job answered %v", a)
	}
	if j := r.job("done"); j.GetState() != lifecycle.Completed {
		t.Errorf("a cancel changed a completed job: %s", describe(j))
	}
	if a := r.cancel("nope", ""); a.GetOk() || a.GetRetryable() || !strings.Contains(a.GetError(), "not found") {
		t.Errorf("cancel of an unknown job answered %v", a)
	}
	if a := r.cancel("bad id", ""); a.GetOk() || a.GetRetryable() {
		t.Errorf("cancel of an impossible id answered %v; retrying it cannot succeed", a)
	}
	p := wire.NewPacket("t", "c")
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: &pb.JobQuery{JobId: "done"}}
	if a := r.bus.ask(t, wire.SubjectCancel, p).GetJobAnswer(); a.GetOk() || !strings.Contains(a.GetError(), "job_cancel") {
		t.Errorf("a query on the cancel subject answered %v", a)
	}
	if s := r.e.Stats(); s.Cancelled != 0 {
		t.Errorf("stats = %+v", s)
	}
}
