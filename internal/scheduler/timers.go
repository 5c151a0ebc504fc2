package scheduler

import (
	"context"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
)

// timers acts on jobs when their time comes: retries due, leases lost,
// attempts and jobs past their deadline, dispatches whose outcome was lost
// with a scheduler that died. Every Tick it scans the jobs the job cache
// holds and not busy, decides what is due, and has the part it concerns
// act, one job at a time, each claimed first so that no dispatch of this replica acts on
// it meanwhile.
//
// It owns no job state: the cache does. It reaches the other parts
// directly: the job cache (which jobs, claimed), the dispatcher (retries
// due, dispatches nobody confirmed), results (deadlines, lost leases,
// timed-out attempts), the placer (its tick) and the follows (pruned). Its loop ("timers") is a
// part the engine starts and stops (parts.go).
type timers struct {
	tick       time.Duration
	ackTimeout time.Duration // a dispatch no worker confirmed by then is unconfirmed
	leaseTTL   time.Duration
	times      jobTimes

	cache      *jobCache
	dispatcher *dispatcher
	results    *results
	placer     *placer
	follows    *follows // pruned every tick
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
	tm.cache.each(true, func(rec jobstore.Record, leaseUntil time.Time) {
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
			nowMs > j.GetAttemptStartedMs()+(tm.times.timeout(j.GetRequest())+tm.leaseTTL).Milliseconds():
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
		rec, ok := tm.cache.claim(id)
		if !ok {
			continue
		}
		switch d.what {
		case "dispatch":
			tm.dispatcher.dispatchDue(rec)
		case "unconfirmed":
			tm.dispatcher.unconfirmed(rec)
		default:
			tm.results.expire(rec, d.what)
		}
		tm.cache.release(id)
	}
	tm.placer.tick()
	tm.follows.prune(now)
}
