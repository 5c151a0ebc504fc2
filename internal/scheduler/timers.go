package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ---- timers ----

func (e *Engine) timerLoop(ctx context.Context) {
	tick := time.NewTicker(e.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.checkTimers()
		}
	}
}

// checkTimers acts on the jobs whose time has come: retries due, leases
// lost, attempts and jobs past their deadline, dispatches whose outcome was
// lost with a scheduler that died.
func (e *Engine) checkTimers() {
	now := time.Now()
	nowMs := now.UnixMilli()
	type due struct {
		rec  jobstore.Record
		what string
	}
	var todo []due
	e.mu.Lock()
	for _, t := range e.active {
		if t.busy {
			continue
		}
		j := t.rec.Job
		what := ""
		switch {
		case j.GetDeadlineMs() > 0 && nowMs >= j.GetDeadlineMs():
			what = "deadline"
		case j.GetState() == lifecycle.Pending && nowMs >= j.GetNextAttemptMs():
			what = "dispatch"
		case j.GetState() == lifecycle.Running && now.After(t.leaseUntil):
			what = "lease"
		case lifecycle.Active(j.GetState()) && j.GetState() != lifecycle.Pending &&
			nowMs > j.GetAttemptStartedMs()+(e.timeout(j.GetRequest())+e.leaseTTL()).Milliseconds():
			what = "attempt-timeout"
		case j.GetState() == lifecycle.Dispatched && j.GetPendingReason() == "" &&
			nowMs > j.GetAttemptStartedMs()+e.cfg.AckTimeout.Milliseconds():
			what = "unconfirmed"
		}
		if what != "" {
			todo = append(todo, due{t.rec, what})
		}
	}
	e.mu.Unlock()

	for _, d := range todo {
		id := d.rec.Job.GetJobId()
		rec, ok := e.claim(id)
		if !ok {
			continue
		}
		switch d.what {
		case "dispatch":
			if e.placed(e.poolOf(rec.Job.GetRequest())) {
				e.readmitDue(rec) // drain, below, places it
			} else {
				e.dispatch(rec)
			}
		case "unconfirmed":
			e.unconfirmed(rec)
		default:
			e.expire(rec, d.what)
		}
		e.release(id)
	}
	if e.queues != nil {
		e.preg.Expire()
		e.drain()
	}
}

func (e *Engine) leaseTTL() time.Duration {
	return time.Duration(e.cfg.LeaseMisses) * e.cfg.LeaseInterval
}

// expire acts on one timer.
func (e *Engine) expire(rec jobstore.Record, what string) {
	attempt := rec.Job.GetAttempt()
	state := rec.Job.GetState()
	why := e.pendingReason(rec.Job) // a queued job's, from its pool's queue
	var outcome string
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.Attempt != attempt || j.State != state {
			return false // it moved meanwhile; the next tick decides again
		}
		switch what {
		case "deadline":
			j.State = lifecycle.Timeout
			j.Error = "deadline exceeded"
			if why == "" {
				why = j.PendingReason
			}
			if why != "" && state == lifecycle.Pending {
				j.Error += " while pending: " + why
			}
		case "lease":
			e.stats.leasesLost.Add(1)
			outcome = e.failAttempt(j, fmt.Sprintf("worker %s lost its lease on attempt %d (no heartbeat for %s)", j.WorkerId, j.Attempt, e.leaseTTL()), false)
			j.NextAttemptMs = 0 // a dead worker's jobs go elsewhere at once
		case "attempt-timeout":
			outcome = e.failAttempt(j, fmt.Sprintf("attempt %d timed out after %s", j.Attempt, e.timeout(j.Request)), true)
		}
		return true
	})
	if err != nil {
		e.log.Error("timer action failed", "job_id", rec.Job.GetJobId(), "what", what, "err", err)
		return
	}
	if written {
		if what == "lease" {
			e.log.Warn("lease lost", "job_id", rec.Job.JobId, "worker_id", rec.Job.WorkerId, "attempt", attempt, "outcome", outcome)
		}
		e.finished(rec)
	}
}
