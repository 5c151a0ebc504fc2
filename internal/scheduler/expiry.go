package scheduler

import (
	"fmt"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ---- what the timers find due ----

// forIdle calls f, under the job cache's lock, for each active job no
// dispatch or timer action of this replica holds. f must not block.
func (e *Engine) forIdle(f func(rec jobstore.Record, leaseUntil time.Time)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range e.active {
		if !t.busy {
			f(t.rec, t.leaseUntil)
		}
	}
}

// dispatchDue dispatches a job whose retry is due, or, in a pool that
// places jobs, queues it again for the drainer.
func (e *Engine) dispatchDue(rec jobstore.Record) {
	if e.placed(e.poolOf(rec.Job.GetRequest())) {
		e.readmitDue(rec) // drain, in placementTick, places it
	} else {
		e.dispatch(rec)
	}
}

// placementTick forgets the workers that stopped heartbeating and places
// what now fits; nothing without placement queues.
func (e *Engine) placementTick() {
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
