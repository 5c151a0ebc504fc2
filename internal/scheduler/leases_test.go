package scheduler_test

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ---- hand-backs, leases and timers ----

// A worker shutting down hands its job back: PENDING again at once, not a
// failed attempt.
func TestCancelledResultHandsTheJobBack(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.script("", ackBy("w-draining"))
	r.bus.fallback("", ackBy("w-2"))
	r.submit(&pb.JobRequest{JobId: "handback", Topic: "job.echo", MaxAttempts: 1}, "t", "")
	r.waitState("handback", lifecycle.Running, 1)
	r.result(failedResult("handback", 1, "w-draining", pb.JobStatus_JOB_STATUS_CANCELLED, "worker shutting down"))
	back := r.find("handback", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 })
	if back == nil || back.GetFailedAttempts() != 0 || back.GetNextAttemptMs() != 0 ||
		!strings.Contains(back.GetPendingReason(), "handed back by w-draining") {
		t.Errorf("handed back: %s", describe(back))
	}
	// Even with max_attempts 1, it runs again.
	j := r.waitState("handback", lifecycle.Running, 2)
	if j.GetWorkerId() != "w-2" || j.GetFailedAttempts() != 0 {
		t.Errorf("after the hand-back: %s", describe(j))
	}
	if s := r.e.Stats(); s.Retries != 0 {
		t.Errorf("a hand-back counted as a retry: %+v", s)
	}
}

func TestLeaseLostWithoutHeartbeatsRedispatches(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.script("job.echo", ackBy("w-dead"))
	r.bus.fallback("job.echo", ackBy("w-live"))
	r.submit(request("orphan", "job.echo"), "t", "")
	j := r.waitState("orphan", lifecycle.Running, 2)
	if j.GetWorkerId() != "w-live" || j.GetFailedAttempts() != 1 || !strings.Contains(j.GetError(), "w-dead lost its lease on attempt 1") {
		t.Errorf("after the lease was lost: %s", describe(j))
	}
	running := r.find("orphan", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Running })
	lost := r.find("orphan", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 })
	if lost == nil || lost.GetNextAttemptMs() != 0 {
		t.Fatalf("lease loss: %s (want it offered again at once)\n%s", describe(lost), r.describeHistory("orphan"))
	}
	ttl := int64(r.cfg.LeaseMisses) * r.cfg.LeaseInterval.Milliseconds()
	if waited := lost.GetUpdatedMs() - running.GetUpdatedMs(); waited < ttl-1 {
		t.Errorf("lease lost %dms after RUNNING, before %d missed heartbeats (%dms)", waited, r.cfg.LeaseMisses, ttl)
	} else {
		t.Logf("lease lost %dms after RUNNING (lease %dms, tick %s)", waited, ttl, r.cfg.Tick)
	}
	if s := r.e.Stats(); s.LeasesLost != 1 {
		t.Errorf("stats = %+v", s)
	}
	if !strings.Contains(r.logs.String(), "lease lost") {
		t.Errorf("not logged:\n%s", r.logs.String())
	}
}

// A worker whose heartbeats list the job keeps it, for as long as they come;
// heartbeats from another worker, or for another attempt, do not count.
func TestHeartbeatsListingTheJobKeepItsLease(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.LeaseInterval = 50 * time.Millisecond }))
	r.bus.script("job.echo", ackBy("w-keep"))
	r.bus.fallback("job.echo", ackBy("w-new"))
	const interval = 200 * time.Millisecond // the worker's own, from its heartbeats

	var lastSent atomic.Int64 // unix ms, read before the last heartbeat of w-keep was sent
	beat := func(stop <-chan struct{}, hbs ...*pb.Heartbeat) *sync.WaitGroup {
		var wg sync.WaitGroup
		wg.Go(func() {
			tk := time.NewTicker(5 * time.Millisecond)
			defer tk.Stop()
			for {
				for _, hb := range hbs {
					if hb.GetWorkerId() == "w-keep" {
						lastSent.Store(time.Now().UnixMilli())
					}
					r.bus.heartbeat(t, hb)
				}
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		})
		return &wg
	}
	keep := &pb.Heartbeat{WorkerId: "w-keep", IntervalMs: interval.Milliseconds(), Held: []*pb.HeldJob{{JobId: "kept", Attempt: 1}}}
	stopKeep := make(chan struct{})
	keeping := beat(stopKeep, keep)

	r.submit(request("kept", "job.echo"), "t", "")
	r.waitState("kept", lifecycle.Running, 1)
	// Many engine lease periods (150ms), and then some.
	until := time.Now().Add(5 * time.Duration(r.cfg.LeaseMisses) * r.cfg.LeaseInterval)
	for time.Now().Before(until) {
		if j := r.job("kept"); j.GetState() != lifecycle.Running || j.GetAttempt() != 1 {
			t.Fatalf("a worker that heartbeats lost its job: %s\n%s", describe(j), r.describeHistory("kept"))
		}
		time.Sleep(5 * time.Millisecond)
	}

	// It stops; others heartbeat about the job, but not for it.
	other := &pb.Heartbeat{WorkerId: "w-other", IntervalMs: interval.Milliseconds(), Held: []*pb.HeldJob{{JobId: "kept", Attempt: 1}}}
	wrongAttempt := &pb.Heartbeat{WorkerId: "w-keep2", IntervalMs: interval.Milliseconds(), Held: []*pb.HeldJob{{JobId: "kept", Attempt: 2}}}
	stopOthers := make(chan struct{})
	others := beat(stopOthers, other, wrongAttempt)
	close(stopKeep)
	keeping.Wait()
	lastKeep := lastSent.Load()

	j := r.waitState("kept", lifecycle.Running, 2)
	close(stopOthers)
	others.Wait()
	if j.GetWorkerId() != "w-new" || !strings.Contains(j.GetError(), "w-keep lost its lease") {
		t.Errorf("after the worker stopped: %s", describe(j))
	}
	lost := r.find("kept", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 })
	// The last heartbeat promised the next within its interval; the lease
	// is lost after LeaseMisses of those.
	if min := lastKeep + int64(r.cfg.LeaseMisses)*interval.Milliseconds() - 1; lost.GetUpdatedMs() < min {
		t.Errorf("lease lost %dms after the last heartbeat, before %d of its %s intervals", lost.GetUpdatedMs()-lastKeep, r.cfg.LeaseMisses, interval)
	}
}

// A DISPATCHED job whose worker does not confirm, and never answers: its
// attempt times out (after the job's timeout and a lease) and it is retried,
// then ends TIMEOUT when no attempt is left.
func TestAttemptTimeoutOfAnUnconfirmedDispatch(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence())
	r.submit(&pb.JobRequest{JobId: "stuck", Topic: "job.echo", TimeoutMs: 30, MaxAttempts: 2}, "t", "")
	j := r.waitState("stuck", lifecycle.Timeout, 2)
	if j.GetFailedAttempts() != 2 || !strings.Contains(j.GetError(), "attempt 2 timed out after 30ms") || !strings.Contains(j.GetError(), "no attempts left (2)") {
		t.Errorf("final = %s", describe(j))
	}
	retry := r.find("stuck", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 })
	if retry == nil || retry.GetFailedAttempts() != 1 || !strings.Contains(retry.GetError(), "attempt 1 timed out after 30ms") {
		t.Fatalf("retry = %s\n%s", describe(retry), r.describeHistory("stuck"))
	}
	started := r.find("stuck", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Dispatched })
	leaseTTL := int64(r.cfg.LeaseMisses) * r.cfg.LeaseInterval.Milliseconds()
	if retry.GetUpdatedMs() < started.GetAttemptStartedMs()+30+leaseTTL {
		t.Errorf("timed out %dms into the attempt, before its 30ms timeout and a %dms lease", retry.GetUpdatedMs()-started.GetAttemptStartedMs(), leaseTTL)
	}
	d := r.bus.dispatchesOf("stuck")
	if len(d) != 2 || d[0].packet.GetJobRequest().GetTimeoutMs() != 30 || d[1].packet.GetJobRequest().GetAttempt() != 2 {
		t.Errorf("dispatches %v", d)
	}
}

// A job nobody serves ends TIMEOUT at its deadline, saying why it waited.
func TestDeadlineEndsAJobNobodyServes(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("job.nobody", noResponders())
	r.submit(&pb.JobRequest{JobId: "orphan-topic", Topic: "job.nobody", TtlMs: 150}, "t", "")
	j := r.waitJob("orphan-topic", "TIMEOUT", func(j *pb.JobInfo) bool { return lifecycle.Terminal(j.GetState()) })
	if j.GetState() != lifecycle.Timeout || j.GetError() != "deadline exceeded while pending: no live worker subscribed to job.nobody" {
		t.Errorf("final = %s", describe(j))
	}
	if j.GetUpdatedMs() < j.GetDeadlineMs() {
		t.Errorf("ended %dms before its deadline", j.GetDeadlineMs()-j.GetUpdatedMs())
	}
	if len(r.bus.dispatchesOf("orphan-topic")) == 0 {
		t.Error("never offered")
	}
}
