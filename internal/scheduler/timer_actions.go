package scheduler

import (
	"time"

	"github.com/cortex-os/core/internal/jobstore"
)

// ---- what the timers ask of the engine (timerEngine) ----

// forIdle calls f, under the job cache's lock, for each active job no
// dispatch or timer action of this replica holds. f must not block.
func (e *Engine) forIdle(f func(rec jobstore.Record, leaseUntil time.Time)) {
	e.cache.each(true, f)
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

// expire acts on one timer (results.expire).
func (e *Engine) expire(rec jobstore.Record, what string) { e.results.expire(rec, what) }
