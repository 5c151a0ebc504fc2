package scheduler_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The hand-off, results, retries, leases and timers, one path at a time.

// states lists the states and attempts a job went through, "PENDING/0 ...".
func (r *rig) states(id string) string {
	var b strings.Builder
	for i, j := range r.store.history(id) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(lifecycle.Name(j.GetState()))
		b.WriteByte('/')
		b.WriteByte(byte('0' + j.GetAttempt()))
	}
	return b.String()
}

// find returns the first record of a job's history that satisfies cond.
func (r *rig) find(id string, cond func(*pb.JobInfo) bool) *pb.JobInfo {
	for _, j := range r.store.history(id) {
		if cond(j) {
			return j
		}
	}
	return nil
}

func TestConfirmedDispatchRuns(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("job.echo", ackBy("w-1"))
	req := &pb.JobRequest{JobId: "job-1", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_CRITICAL,
		ContextPtr: "redis://jobs/job-1/context", EnvVars: map[string]string{"A": "1"}}
	r.submit(req, "trace-1", "")
	j := r.waitState("job-1", lifecycle.Running, 1)
	if j.GetWorkerId() != "w-1" || j.GetPendingReason() != "" || j.GetFailedAttempts() != 0 {
		t.Errorf("running job = %s", describe(j))
	}
	if got := r.states("job-1"); got != "DISPATCHED/1 RUNNING/1" {
		t.Errorf("states %s", got)
	}

	d := r.bus.dispatchesOf("job-1")
	if len(d) != 1 {
		t.Fatalf("%d dispatches", len(d))
	}
	p := d[0].packet
	if d[0].subject != "job.echo" || p.GetTraceId() != "trace-1" || p.GetSenderId() != "sched-test" ||
		p.GetProtocolVersion() != wire.ProtocolVersion || p.GetCreatedAt() == nil {
		t.Errorf("dispatched on %s: %v", d[0].subject, p)
	}
	got := p.GetJobRequest()
	if got.GetAttempt() != 1 || got.GetTimeoutMs() != time.Minute.Milliseconds() {
		t.Errorf("dispatched attempt %d timeout %dms; want attempt 1 and the default 60000ms", got.GetAttempt(), got.GetTimeoutMs())
	}
	want := proto.Clone(req).(*pb.JobRequest)
	want.Attempt, want.TimeoutMs = 1, got.GetTimeoutMs()
	if !proto.Equal(got, want) {
		t.Errorf("dispatched request %v, want %v", got, want)
	}
	if d[0].reply == "" {
		t.Error("dispatched without a reply subject: no confirmation can come back")
	}
	// The recorded request is the one submitted, without the attempt.
	if r.job("job-1").GetRequest().GetAttempt() != 0 {
		t.Error("the dispatch's attempt leaked into the recorded request")
	}
	if s := r.e.Stats(); s.Dispatched != 1 || s.NoResponders+s.Unconfirmed+s.DispatchErrors != 0 {
		t.Errorf("stats = %+v", s)
	}

	// A job's own timeout is what its worker is told.
	r.submit(&pb.JobRequest{JobId: "job-2", Topic: "job.echo", TimeoutMs: 1500}, "t", "")
	if d := r.waitDispatches("job-2", 1); d[0].packet.GetJobRequest().GetTimeoutMs() != 1500 {
		t.Errorf("dispatched timeout %d, want 1500", d[0].packet.GetJobRequest().GetTimeoutMs())
	}
}

func TestNoRespondersLeavesThePendingReasonThenDispatchesWhenAWorkerAppears(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("job.x", noResponders())
	r.submit(request("nobody-yet", "job.x"), "t", "")
	j := r.waitJob("nobody-yet", "pending for want of a worker", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && j.GetPendingReason() == "no live worker subscribed to job.x"
	})
	if j.GetAttempt() != 0 || j.GetFailedAttempts() != 0 {
		t.Errorf("after no responders: %s; want the attempt given back", describe(j))
	}
	// It is offered again, with the same attempt number, until someone answers.
	d := r.waitDispatches("nobody-yet", 3)
	for _, x := range d {
		if a := x.packet.GetJobRequest().GetAttempt(); a != 1 {
			t.Errorf("re-offered as attempt %d, want 1 (nobody held attempt 1)", a)
		}
	}
	r.bus.fallback("job.x", ackBy("w-late"))
	j = r.waitState("nobody-yet", lifecycle.Running, 1)
	if j.GetWorkerId() != "w-late" {
		t.Errorf("running on %q", j.GetWorkerId())
	}
	if s := r.e.Stats(); s.NoResponders < 3 || s.Retries != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestRefusedDispatchIsOfferedAgain(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.script("job.echo", refuseBy("w-full", "at capacity"))
	r.bus.fallback("job.echo", ackBy("w-ok"))
	r.submit(request("refused", "job.echo"), "t", "")
	j := r.waitState("refused", lifecycle.Running, 1)
	if j.GetWorkerId() != "w-ok" || j.GetFailedAttempts() != 0 {
		t.Errorf("running job = %s", describe(j))
	}
	back := r.find("refused", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && j.GetPendingReason() != "waiting to be dispatched"
	})
	if back == nil || back.GetAttempt() != 0 || !strings.Contains(back.GetPendingReason(), "refused") || !strings.Contains(back.GetPendingReason(), "at capacity") {
		t.Errorf("after the refusal: %s\nhistory:\n%s", describe(back), r.describeHistory("refused"))
	}
}

func TestFailedPublishIsNotTakenForADelivery(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.script("job.echo", failPublish(errTooLarge))
	r.bus.fallback("job.echo", ackBy("w-1"))
	r.submit(request("pub-fail", "job.echo"), "t", "")
	r.waitState("pub-fail", lifecycle.Running, 1)
	back := r.find("pub-fail", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && strings.Contains(j.GetPendingReason(), errTooLarge.Error())
	})
	if back == nil || back.GetAttempt() != 0 {
		t.Errorf("after the failed publish: %s\nhistory:\n%s", describe(back), r.describeHistory("pub-fail"))
	}
	if s := r.e.Stats(); s.DispatchErrors != 1 || s.Dispatched != 1 {
		t.Errorf("stats = %+v", s)
	}
	if !strings.Contains(r.logs.String(), errTooLarge.Error()) {
		t.Errorf("the failure was not logged:\n%s", r.logs.String())
	}
}

type constErr string

func (e constErr) Error() string { return string(e) }

const errTooLarge = constErr("bus: packet too large")

// No confirmation in time, while workers that confirm serve the topic: the
// hand-off failed; the attempt is spent (it may have run) and the job goes
// out again as the next attempt.
func TestUnconfirmedDispatchIsRequeuedWhenConfirmingWorkersServe(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.heartbeat(&pb.Heartbeat{WorkerId: "w-c", Topics: []string{"job.echo"}, Confirms: true, IntervalMs: 60_000})
	r.bus.script("job.echo", silence())
	r.bus.fallback("job.echo", ackBy("w-c"))
	r.submit(request("unconfirmed", "job.echo"), "t", "")
	j := r.waitState("unconfirmed", lifecycle.Running, 2)
	if j.GetWorkerId() != "w-c" || j.GetFailedAttempts() != 0 {
		t.Errorf("running job = %s", describe(j))
	}
	back := r.find("unconfirmed", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 })
	if back == nil || !strings.Contains(back.GetPendingReason(), "no worker confirmed attempt 1") {
		t.Errorf("requeue: %s\nhistory:\n%s", describe(back), r.describeHistory("unconfirmed"))
	}
	d := r.bus.dispatchesOf("unconfirmed")
	if len(d) != 2 || d[0].packet.GetJobRequest().GetAttempt() != 1 || d[1].packet.GetJobRequest().GetAttempt() != 2 {
		t.Fatalf("dispatches %v", d)
	}
	// Not before the confirmation was due.
	if started := r.find("unconfirmed", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Dispatched }); back.GetUpdatedMs() < started.GetAttemptStartedMs()+r.cfg.AckTimeout.Milliseconds() {
		t.Errorf("requeued %dms after the dispatch, before the %s confirmation timeout", back.GetUpdatedMs()-started.GetAttemptStartedMs(), r.cfg.AckTimeout)
	}
	if s := r.e.Stats(); s.Unconfirmed != 1 {
		t.Errorf("stats = %+v", s)
	}

	// The slow worker's confirmation of attempt 1 arrives at last: it changes nothing.
	rev := r.revision("unconfirmed")
	late := wire.NewPacket("t", "w-slow")
	late.Payload = &pb.BusPacket_JobAck{JobAck: &pb.JobAck{JobId: "unconfirmed", Attempt: 1, WorkerId: "w-slow"}}
	r.bus.reply(t, d[0].reply, late, false)
	// Nor do a late "no responders" or refusal for attempt 1, nor an
	// answer on a reply subject that names no attempt.
	r.bus.reply(t, d[0].reply, nil, true)
	r.bus.reply(t, d[0].reply, refuseBy("w-slow", "draining")("job.echo", d[0].packet).packet, false)
	unknown := r.e.Stats().Unknown
	r.bus.reply(t, strings.Replace(d[1].reply, ".2.unconfirmed", ".x.unconfirmed", 1), late, false)
	if r.revision("unconfirmed") != rev {
		t.Errorf("a late answer moved the job: %s", describe(r.job("unconfirmed")))
	}
	if r.e.Stats().Unknown != unknown+1 {
		t.Errorf("an answer on a malformed reply subject was not counted: %+v", r.e.Stats())
	}
	// Its result is fenced; the current attempt's completes the job.
	r.result(completed("unconfirmed", 1, "w-slow"))
	if s := r.e.Stats(); s.StaleResults != 1 || r.revision("unconfirmed") != rev {
		t.Errorf("stale result: stats %+v, job %s", s, describe(r.job("unconfirmed")))
	}
	if !strings.Contains(r.logs.String(), "stale result") {
		t.Errorf("the fenced result was not logged:\n%s", r.logs.String())
	}
	r.result(completed("unconfirmed", 2, "w-c"))
	if j := r.job("unconfirmed"); j.GetState() != lifecycle.Completed || j.GetWorkerId() != "w-c" {
		t.Errorf("after the current result: %s", describe(j))
	}
}

// No confirmation, and no worker that confirms serves the topic: the
// subscriber is a worker of the design document. The job stays DISPATCHED,
// saying so, and its result completes it.
func TestUnconfirmedDispatchWaitsForAWorkerThatDoesNotConfirm(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	// Workers that confirm, but none for this topic, or draining.
	r.heartbeat(&pb.Heartbeat{WorkerId: "w-other", Topics: []string{"job.other"}, Confirms: true, IntervalMs: 60_000})
	r.heartbeat(&pb.Heartbeat{WorkerId: "w-drain", Topics: []string{"job.legacy"}, Confirms: true, Draining: true, IntervalMs: 60_000})
	r.bus.fallback("job.legacy", silence())
	r.submit(request("legacy", "job.legacy"), "t", "")
	j := r.waitJob("legacy", "dispatched to a worker that does not confirm", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Dispatched && strings.Contains(j.GetPendingReason(), "does not confirm")
	})
	if j.GetAttempt() != 1 {
		t.Errorf("job = %s", describe(j))
	}
	r.waitStats("the missing confirmation", func(s scheduler.Stats) bool { return s.Unconfirmed == 1 })

	// Its worker answers without an attempt, as the design document's does.
	r.result(completed("legacy", 0, "legacy-worker"))
	j = r.job("legacy")
	if j.GetState() != lifecycle.Completed || j.GetWorkerId() != "legacy-worker" || j.GetResultPtr() != "memory://echo/legacy" {
		t.Errorf("after the result: %s", describe(j))
	}
	if n := len(r.bus.dispatchesOf("legacy")); n != 1 {
		t.Errorf("dispatched %d times, want once", n)
	}
}

func TestResultCompletesTheJobOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	r.submit(request("once", "job.echo"), "trace-once", "")
	r.waitState("once", lifecycle.Running, 1)
	r.result(completed("once", 1, "w-1"))
	j := r.job("once")
	if j.GetState() != lifecycle.Completed || j.GetResultPtr() != "memory://echo/once" || j.GetWorkerId() != "w-1" ||
		j.GetExecutionMs() != 7 || j.GetError() != "" || j.GetAttempt() != 1 {
		t.Errorf("completed job = %v", j)
	}
	if s := r.e.Stats(); s.Completed != 1 || s.Results != 1 {
		t.Errorf("stats = %+v", s)
	}
	rev := r.revision("once")

	// Any later result is late, and changes nothing.
	r.result(completed("once", 1, "w-1"))
	r.result(failedResult("once", 1, "w-1", pb.JobStatus_JOB_STATUS_FAILED, "too late"))
	r.result(completed("once", 0, "w-x"))
	if s := r.e.Stats(); s.LateResults != 3 || s.Completed != 1 || s.Results != 4 {
		t.Errorf("stats = %+v", s)
	}
	if r.revision("once") != rev {
		t.Errorf("a late result changed the job: %s", describe(r.job("once")))
	}
	if qa := r.query(&pb.JobQuery{JobId: "once"}); !qa.GetOk() || qa.GetJobs()[0].GetState() != lifecycle.Completed {
		t.Errorf("query = %v", qa)
	}
}

// A worker that finishes before its confirmation is heard: the result
// completes the job from DISPATCHED, and the confirmation changes nothing.
func TestResultBeforeConfirmation(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	gate := make(chan struct{})
	r.bus.fallback("", gated(gate, ackBy("w-fast")))
	r.submit(request("fast", "job.echo"), "t", "")
	r.waitState("fast", lifecycle.Dispatched, 1)
	r.result(completed("fast", 1, "w-fast"))
	if j := r.job("fast"); j.GetState() != lifecycle.Completed {
		t.Fatalf("after the result: %s", describe(j))
	}
	rev := r.revision("fast")
	close(gate)
	r.bus.replies.Wait()
	r.stop() // every reply handled
	if j := r.job("fast"); j.GetState() != lifecycle.Completed || r.revision("fast") != rev {
		t.Errorf("the confirmation after the result moved the job: %s", describe(j))
	}
}

func TestFailedAttemptsRetryWithBackoffThenDeadLetter(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) {
		c.RetryBackoff, c.RetryBackoffMax = 40*time.Millisecond, time.Second
	}))
	r.bus.fallback("", ackBy("w-1"))
	r.submit(&pb.JobRequest{JobId: "poison", Topic: "job.echo", MaxAttempts: 3}, "trace-p", "")
	var delays []int64
	for n := int32(1); n <= 3; n++ {
		r.waitState("poison", lifecycle.Running, n)
		r.result(failedResult("poison", n, "w-1", pb.JobStatus_JOB_STATUS_FAILED, "boom "+string(rune('0'+n))))
		j := r.job("poison")
		if n < 3 {
			if j.GetState() != lifecycle.Pending || j.GetFailedAttempts() != n || !strings.Contains(j.GetPendingReason(), "boom") ||
				!strings.Contains(j.GetError(), "boom") || j.GetDeadLetter() {
				t.Fatalf("after failure %d: %s", n, describe(j))
			}
			delays = append(delays, j.GetNextAttemptMs()-j.GetUpdatedMs())
		}
	}
	j := r.job("poison")
	if j.GetState() != lifecycle.Failed || !j.GetDeadLetter() || j.GetFailedAttempts() != 3 || j.GetAttempt() != 3 ||
		!strings.Contains(j.GetError(), "boom 3") || !strings.Contains(j.GetError(), "no attempts left (3)") {
		t.Errorf("final = %v", j)
	}
	// Exponential with jitter: retry n waits within [d/2, d], d = 40ms * 2^(n-1).
	// The upper bounds are exact; the lower ones allow for the time between
	// the two clock readings of one write.
	if len(delays) != 2 || delays[0] > 40 || delays[0] < 10 || delays[1] > 80 || delays[1] < 30 {
		t.Errorf("backoffs %v ms, want about [20,40] then [40,80]", delays)
	}
	dead, err := r.dead.List(context.Background(), 0)
	if err != nil || len(dead) != 1 || dead[0].GetJobId() != "poison" || dead[0].GetState() != lifecycle.Failed {
		t.Errorf("dead letters = %v, %v", dead, err)
	}
	if s := r.e.Stats(); s.Retries != 2 || s.DeadLettered != 1 || s.Completed != 0 {
		t.Errorf("stats = %+v", s)
	}
	if qa := r.query(&pb.JobQuery{DeadLetter: true}); !qa.GetOk() || len(qa.GetJobs()) != 1 || qa.GetJobs()[0].GetJobId() != "poison" {
		t.Errorf("dead-letter query = %v", qa)
	}
	if !strings.Contains(r.logs.String(), "dead-lettered") {
		t.Errorf("not logged:\n%s", r.logs.String())
	}
}

func TestTimeoutOnTheLastAttemptEndsTimeoutDeadLettered(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", ackBy("w-1"))
	r.submit(&pb.JobRequest{JobId: "slow", Topic: "job.echo", MaxAttempts: 2}, "t", "")
	r.waitState("slow", lifecycle.Running, 1)
	r.result(failedResult("slow", 1, "w-1", pb.JobStatus_JOB_STATUS_TIMEOUT, "timed out after 5ms"))
	if j := r.job("slow"); j.GetState() != lifecycle.Pending || j.GetFailedAttempts() != 1 {
		t.Fatalf("after the first timeout: %s", describe(j))
	}
	r.waitState("slow", lifecycle.Running, 2)
	r.result(failedResult("slow", 2, "w-1", pb.JobStatus_JOB_STATUS_TIMEOUT, "timed out after 5ms"))
	j := r.job("slow")
	if j.GetState() != lifecycle.Timeout || !j.GetDeadLetter() || !strings.Contains(j.GetError(), "no attempts left (2)") {
		t.Errorf("final = %s", describe(j))
	}
	// Every attempt spent, as a failed job: dead-lettered, so it can be
	// re-driven.
	if dead, _ := r.dead.List(context.Background(), 0); len(dead) != 1 || dead[0].GetJobId() != "slow" {
		t.Errorf("dead letters %v, want the timed-out job", dead)
	}
}

// A result for a job another replica dispatched, handled by a replica whose
// cache still has the job PENDING: the store, not the stale cache, decides,
// and the result completes the job instead of being fenced.
func TestResultJudgedAgainstTheStoreNotAStaleCache(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(r *rig) { r.store.watch, r.store.silent = true, true },
		withConfig(func(c *scheduler.Config) { c.NoWorkerRetry = time.Hour }))
	r.bus.fallback("job.echo", noResponders())
	r.submit(request("other", "job.echo"), "t", "")
	r.waitJob("other", "back to PENDING", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Pending && j.GetAttempt() == 0 && j.GetPendingReason() != "waiting to be dispatched"
	})
	// Another replica dispatches it (this one's cache does not see that).
	ctx := context.Background()
	cur, err := r.store.Get(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	next := proto.CloneOf(cur.Job)
	next.State, next.Attempt, next.PendingReason = lifecycle.Dispatched, 1, ""
	if _, err := r.store.Update(ctx, cur, next); err != nil {
		t.Fatal(err)
	}
	r.result(completed("other", 1, "w-1"))
	if j := r.job("other"); j.GetState() != lifecycle.Completed {
		t.Errorf("the result of the other replica's dispatch was not applied: %s", describe(j))
	}
	if s := r.e.Stats(); s.StaleResults != 0 {
		t.Errorf("fenced %d results as stale", s.StaleResults)
	}
}
