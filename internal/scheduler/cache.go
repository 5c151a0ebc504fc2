package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// jobCache is this replica's view of the active jobs: each one's latest
// record, its lease deadline while RUNNING, and whether a dispatch or timer
// action of this replica holds it (busy). It owns that map and its lock,
// and mutate, the one path by which the engine changes a job: a
// compare-and-set on the job store, decided again on a conflict.
//
// It calls the rest of the engine through two function fields: placed,
// under its lock, with each newer view of a job (the placer's observe keeps
// its queues in step: it must not take the cache's lock or the placer's),
// and recorded, after each write (a recorder: events, the Observer, the
// log). The other parts call it directly. Its loop ("store watch", watch)
// follows the changes other replicas make to the store; the engine starts
// it only when the store is shared.
type jobCache struct {
	mu     sync.Mutex
	active map[string]tracked // non-terminal jobs known to this replica; values, not pointers: no allocation per job

	store    JobStore
	stats    *counters
	log      *slog.Logger
	leaseTTL time.Duration                               // the lease of a job seen RUNNING anew
	placed   func(prev, next *pb.JobInfo, admitted bool) // nil: no placement queues; admitted: see admitted
	recorded func(prev, next *pb.JobInfo)
}

// tracked is this replica's view of an active job.
type tracked struct {
	rec        jobstore.Record
	leaseUntil time.Time // RUNNING: the worker must have heartbeated by then
	busy       bool      // a dispatch or timer action of this replica holds it
}

func newJobCache(store JobStore, stats *counters, log *slog.Logger, leaseTTL time.Duration) *jobCache {
	return &jobCache{active: make(map[string]tracked), store: store, stats: stats, log: log, leaseTTL: leaseTTL}
}

// observe records rec as this replica's latest view of its job and reports
// whether the job is active (false once it is terminal). Views older than
// the one held are ignored.
func (c *jobCache) observe(rec jobstore.Record) (active bool) { return c.observeAs(rec, false) }

// admitted is observe of the record this replica's admission just created:
// what placement would otherwise look up to learn who placed the job
// (admission did: placed it, queued it, or sent it on its topic), it is
// told.
func (c *jobCache) admitted(rec jobstore.Record) (active bool) { return c.observeAs(rec, true) }

func (c *jobCache) observeAs(rec jobstore.Record, admitted bool) (active bool) {
	id := rec.Job.GetJobId()
	c.mu.Lock()
	defer c.mu.Unlock()
	t, known := c.active[id]
	if known && t.rec.Revision >= rec.Revision {
		return true
	}
	var prev *pb.JobInfo
	if known {
		prev = t.rec.Job
	}
	if c.placed != nil {
		c.placed(prev, rec.Job, admitted && !known)
	}
	if !lifecycle.Active(rec.Job.GetState()) {
		if known {
			delete(c.active, id)
		}
		return false
	}
	t.rec = rec
	if rec.Job.State == lifecycle.Running &&
		(prev.GetState() != lifecycle.Running || prev.GetAttempt() != rec.Job.Attempt || t.leaseUntil.IsZero()) {
		t.leaseUntil = time.Now().Add(c.leaseTTL)
	}
	c.active[id] = t
	return true
}

// cached returns this replica's latest view of an active job.
func (c *jobCache) cached(id string) (jobstore.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.active[id]
	return t.rec, ok
}

// claim marks the job busy for this replica; false if it already is or the
// job is no longer active.
func (c *jobCache) claim(id string) (jobstore.Record, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.active[id]
	if !ok || t.busy {
		return jobstore.Record{}, false
	}
	t.busy = true
	c.active[id] = t
	return t.rec, true
}

func (c *jobCache) release(id string) {
	c.mu.Lock()
	if t, ok := c.active[id]; ok {
		t.busy = false
		c.active[id] = t
	}
	c.mu.Unlock()
}

// each calls f, under the cache's lock, for each active job; idle only:
// those no dispatch or timer action holds. f must not block.
func (c *jobCache) each(idle bool, f func(rec jobstore.Record, leaseUntil time.Time)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.active {
		if !idle || !t.busy {
			f(t.rec, t.leaseUntil)
		}
	}
}

// mutate applies change to the job with compare-and-set, re-reading and
// deciding again when another writer got there first. change edits a copy
// and reports whether to write it. It returns the record written, or the
// latest one read with written=false.
func (c *jobCache) mutate(rec jobstore.Record, change func(j *pb.JobInfo) bool) (_ jobstore.Record, written bool, _ error) {
	ctx, cancel := storeCtx()
	defer cancel()
	for range 8 {
		next := cloneInfo(rec.Job)
		if !change(next) {
			return rec, false, nil
		}
		next.UpdatedMs = time.Now().UnixMilli()
		nrec, err := c.store.Update(ctx, rec, next)
		if err == nil {
			c.observe(nrec)
			c.recorded(rec.Job, nrec.Job)
			return nrec, true, nil
		}
		if !errors.Is(err, jobstore.ErrRevision) {
			c.stats.storeErrors.Add(1)
			return rec, false, err
		}
		if rec, err = c.store.Get(ctx, rec.Job.GetJobId()); err != nil {
			c.stats.storeErrors.Add(1)
			return rec, false, err
		}
		c.observe(rec)
	}
	return rec, false, fmt.Errorf("job %s: too many concurrent changes", rec.Job.GetJobId())
}

// watch follows the changes other replicas make to the job store until ctx
// ends: the "store watch" loop.
func (c *jobCache) watch(ctx context.Context) {
	if err := c.store.Watch(ctx, func(r jobstore.Record) { c.observe(r) }); err != nil && ctx.Err() == nil {
		c.log.Error("job store watch ended", "err", err)
	}
}

// recorder is what follows each write of a job (the cache's recorded): its
// job event, the Observer, a debug line.
type recorder struct {
	events   *jobEvents
	observer Observer
	log      *slog.Logger
}

func (r *recorder) recorded(prev, next *pb.JobInfo) {
	r.events.publish(prev, next)            // events.go
	observeRecorded(r.observer, prev, next) // observe.go
	if !r.log.Enabled(context.Background(), slog.LevelDebug) || prev.GetState() == next.GetState() || next.GetState() == lifecycle.Dispatched {
		return // a dispatch logs itself, with its subject
	}
	r.log.Debug("job changed state", "job_id", next.JobId, "state", lifecycle.Name(next.State), "from", lifecycle.Name(prev.GetState()),
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
func (c *jobCache) renewLeases(worker string, held []*pb.HeldJob, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range held {
		t, ok := c.active[h.GetJobId()]
		if !ok || t.rec.Job.GetAttempt() != h.GetAttempt() {
			continue
		}
		if w := t.rec.Job.GetWorkerId(); w != "" && w != worker {
			continue
		}
		t.leaseUntil = until
		c.active[h.GetJobId()] = t
	}
}
