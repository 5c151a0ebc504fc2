package scheduler

import (
	"errors"
	"fmt"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ---- the job cache ----

// observe records rec as this replica's latest view of its job and reports
// whether the job is active (false once it is terminal). Views older than
// the one held are ignored.
func (e *Engine) observe(rec jobstore.Record) (active bool) {
	id := rec.Job.GetJobId()
	e.mu.Lock()
	defer e.mu.Unlock()
	t, known := e.active[id]
	if known && t.rec.Revision >= rec.Revision {
		return true
	}
	var prev *pb.JobInfo
	if known {
		prev = t.rec.Job
	}
	if e.queues != nil {
		e.placementObserve(prev, rec.Job)
	}
	if !lifecycle.Active(rec.Job.GetState()) {
		if known {
			delete(e.active, id)
		}
		return false
	}
	t.rec = rec
	if rec.Job.State == lifecycle.Running &&
		(prev.GetState() != lifecycle.Running || prev.GetAttempt() != rec.Job.Attempt || t.leaseUntil.IsZero()) {
		t.leaseUntil = time.Now().Add(time.Duration(e.cfg.LeaseMisses) * e.cfg.LeaseInterval)
	}
	e.active[id] = t
	return true
}

// cached returns this replica's latest view of an active job.
func (e *Engine) cached(id string) (jobstore.Record, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.active[id]
	return t.rec, ok
}

// claim marks the job busy for this replica; false if it already is or the
// job is no longer active.
func (e *Engine) claim(id string) (jobstore.Record, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.active[id]
	if !ok || t.busy {
		return jobstore.Record{}, false
	}
	t.busy = true
	e.active[id] = t
	return t.rec, true
}

func (e *Engine) release(id string) {
	e.mu.Lock()
	if t, ok := e.active[id]; ok {
		t.busy = false
		e.active[id] = t
	}
	e.mu.Unlock()
}

// mutate applies change to the job with compare-and-set, re-reading and
// deciding again when another writer got there first. change edits a copy
// and reports whether to write it. It returns the record written, or the
// latest one read with written=false.
func (e *Engine) mutate(rec jobstore.Record, change func(j *pb.JobInfo) bool) (_ jobstore.Record, written bool, _ error) {
	ctx, cancel := e.storeCtx()
	defer cancel()
	for range 8 {
		next := cloneInfo(rec.Job)
		if !change(next) {
			return rec, false, nil
		}
		next.UpdatedMs = time.Now().UnixMilli()
		nrec, err := e.cfg.Store.Update(ctx, rec, next)
		if err == nil {
			e.observe(nrec)
			e.logTransition(rec.Job, nrec.Job)
			return nrec, true, nil
		}
		if !errors.Is(err, jobstore.ErrRevision) {
			e.stats.storeErrors.Add(1)
			return rec, false, err
		}
		if rec, err = e.cfg.Store.Get(ctx, rec.Job.GetJobId()); err != nil {
			e.stats.storeErrors.Add(1)
			return rec, false, err
		}
		e.observe(rec)
	}
	return rec, false, fmt.Errorf("job %s: too many concurrent changes", rec.Job.GetJobId())
}

func (e *Engine) logTransition(prev, next *pb.JobInfo) {
	e.events.publish(prev, next)  // events.go
	e.observeRecorded(prev, next) // observe.go
	if !e.debug() || prev.GetState() == next.GetState() || next.GetState() == lifecycle.Dispatched {
		return // a dispatch logs itself, with its subject
	}
	e.log.Debug("job changed state", "job_id", next.JobId, "state", lifecycle.Name(next.State), "from", lifecycle.Name(prev.GetState()),
		"attempt", next.Attempt, "worker_id", next.WorkerId, "reason", firstNonEmpty(next.PendingReason, next.Error), "trace_id", next.TraceId)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// renewLeases extends to until the leases of the jobs worker holds, of the
// attempts it names (a heartbeat's held jobs).
func (e *Engine) renewLeases(worker string, held []*pb.HeldJob, until time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range held {
		t, ok := e.active[h.GetJobId()]
		if !ok || t.rec.Job.GetAttempt() != h.GetAttempt() {
			continue
		}
		if w := t.rec.Job.GetWorkerId(); w != "" && w != worker {
			continue
		}
		t.leaseUntil = until
		e.active[h.GetJobId()] = t
	}
}
