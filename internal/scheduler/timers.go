package scheduler

import (
	"context"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// timers acts on jobs when their time comes: retries due, leases lost,
// attempts and jobs past their deadline, dispatches whose outcome was lost
// with a scheduler that died. Every Tick it scans the jobs the job cache
// holds and not busy, decides what is due, and has the engine act, one job
// at a time, each claimed first so that no dispatch of this replica acts on
// it meanwhile.
//
// It owns no job state: the cache does. It reaches the rest of the engine
// only through timerEngine. Its loop ("timers") is a part the engine starts
// and stops (parts.go).
type timers struct {
	tick       time.Duration
	ackTimeout time.Duration // a dispatch no worker confirmed by then is unconfirmed
	leaseTTL   time.Duration
	jobs       timerEngine
}

// timerEngine is what timers asks of the other parts of the engine.
type timerEngine interface {
	// forIdle calls f for each active job not busy (timer_actions.go).
	forIdle(f func(rec jobstore.Record, leaseUntil time.Time))
	// claim and release mark a job busy and not (cache.go).
	claim(id string) (jobstore.Record, bool)
	release(id string)
	// timeout is a job's attempt timeout (admission.go).
	timeout(req *pb.JobRequest) time.Duration
	// dispatchDue dispatches a job whose retry is due (timer_actions.go).
	dispatchDue(rec jobstore.Record)
	// unconfirmed acts on a dispatch no worker confirmed (dispatch.go).
	unconfirmed(rec jobstore.Record)
	// expire acts on a deadline, a lost lease, a timed-out attempt
	// (results.go).
	expire(rec jobstore.Record, what string)
	// placementTick expires workers and places queued jobs (timer_actions.go).
	placementTick()
}

// run checks the timers every tick until ctx ends.
func (tm *timers) run(ctx context.Context) {
	tick := time.NewTicker(tm.tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			tm.check()
		}
	}
}

// check acts on the jobs whose time has come.
func (tm *timers) check() {
	now := time.Now()
	nowMs := now.UnixMilli()
	type due struct {
		rec  jobstore.Record
		what string
	}
	var todo []due
	tm.jobs.forIdle(func(rec jobstore.Record, leaseUntil time.Time) {
		j := rec.Job
		what := ""
		switch {
		case j.GetDeadlineMs() > 0 && nowMs >= j.GetDeadlineMs():
			what = "deadline"
		case j.GetState() == lifecycle.Pending && nowMs >= j.GetNextAttemptMs():
			what = "dispatch"
		case j.GetState() == lifecycle.Running && now.After(leaseUntil):
			what = "lease"
		case lifecycle.Active(j.GetState()) && j.GetState() != lifecycle.Pending &&
			nowMs > j.GetAttemptStartedMs()+(tm.jobs.timeout(j.GetRequest())+tm.leaseTTL).Milliseconds():
			what = "attempt-timeout"
		case j.GetState() == lifecycle.Dispatched && j.GetPendingReason() == "" &&
			nowMs > j.GetAttemptStartedMs()+tm.ackTimeout.Milliseconds():
			what = "unconfirmed"
		}
		if what != "" {
			todo = append(todo, due{rec, what})
		}
	})

	for _, d := range todo {
		id := d.rec.Job.GetJobId()
		rec, ok := tm.jobs.claim(id)
		if !ok {
			continue
		}
		switch d.what {
		case "dispatch":
			tm.jobs.dispatchDue(rec)
		case "unconfirmed":
			tm.jobs.unconfirmed(rec)
		default:
			tm.jobs.expire(rec, d.what)
		}
		tm.jobs.release(id)
	}
	tm.jobs.placementTick()
}
