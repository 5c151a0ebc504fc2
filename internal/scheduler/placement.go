package scheduler

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Placement by what workers report. A job whose pool uses a strategy that
// looks at the workers (least-loaded, or one registered by name) is not
// published the moment it is admitted: it waits in its pool's queue
// (placement.Queues: bounded, priority order with aging, fair between
// tenants, tenant concurrency limits) until the registry has a worker with
// room for it, and is then dispatched to that worker, counted against its
// capacity at once. A job whose pool uses the naive strategy (the design
// document's; what every topic gets when no placement is configured) is
// dispatched at once on its topic, as before. With placement configured, the
// default strategy is least-loaded.
//
// The placement state is this replica's: its queues hold the pending jobs it
// admitted or saw in the job store, its registry counts the jobs it placed.
// Replicas race for the same pending jobs; the store's compare-and-set lets
// one dispatch win. Every change of
// a job passes through observe, which keeps the two in step with the job
// store: a job that leaves its attempt (a result, a refusal, a lost lease, a
// cancel) frees its worker's slot and its tenant's.

// placed reports whether jobs of pool wait in a queue for a worker with room.
func (e *Engine) placed(pool *placement.Pool) bool {
	if e.queues == nil || pool == nil {
		return false
	}
	b, ok := pool.Placer().(placement.WorkerBlind)
	return !ok || !b.WorkerBlind()
}

// poolOf resolves a request's pool; nil when nothing is configured.
func (e *Engine) poolOf(req *pb.JobRequest) *placement.Pool {
	if e.pools == nil {
		return nil
	}
	return e.pools.Resolve(req.GetTopic())
}

// newPlacementJob is the placement view of a recorded job.
func (e *Engine) newPlacementJob(j *pb.JobInfo) *placement.Job {
	return e.newPlacementJobIn(j, e.pools.Resolve(j.GetRequest().GetTopic()))
}

// newPlacementJobIn is newPlacementJob in pool, the job's resolved already
// (admission has it).
func (e *Engine) newPlacementJobIn(j *pb.JobInfo, pool *placement.Pool) *placement.Job {
	pj := placement.NewJobIn(j.GetRequest(), pool)
	if j.GetCreatedMs() > 0 {
		pj.Enqueued = time.UnixMilli(j.GetCreatedMs()) // aging counts across retries
	}
	return pj
}

// drain places what the queues hold on the workers with room, then
// dispatches it. Decisions are made under placeMu, one pool after another;
// the dispatches (a store write and a publish each) happen after, outside it.
func (e *Engine) drain() {
	if e.queues == nil {
		return
	}
	type pick struct {
		job *placement.Job
		d   placement.Decision
	}
	var picks []pick
	e.placeMu.Lock()
	if v := e.preg.Version(); v != e.regVersion {
		// Workers came, went or freed room: parked jobs and blocked pools
		// are worth another look.
		e.regVersion = v
		e.queues.WakeAll()
	}
	for _, q := range e.queues.Backlogged() {
		for {
			j := q.Next()
			if j == nil {
				break
			}
			d, err := e.preg.Place(j, nil)
			if err != nil {
				if placement.PoolWide(err) {
					q.Block(err.Error()) // no room anywhere in the pool: until a worker frees some
					break
				}
				e.queues.Park(j, err.Error()) // this job cannot run now; the others may
				continue
			}
			e.queues.Start(j)
			picks = append(picks, pick{j, d})
		}
	}
	e.placeMu.Unlock()
	for _, p := range picks {
		e.dispatchPlaced(p.job, p.d)
	}
}

// drainLoop drains whenever a slot was freed (kickDrain), so that a job
// waiting for it goes at once, not at the next tick or heartbeat. Kicks
// that come while a drain runs are taken together by the next.
func (e *Engine) drainLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			e.drain()
		}
	}
}

// kickDrain asks the drainer loop to drain; it never blocks. With nothing
// pending there is nothing to drain: a job queued later is drained by its
// admission (or readmission's tick), which sees the slot freed before.
func (e *Engine) kickDrain() {
	if e.queues.Len() == 0 {
		return
	}
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// dispatchPlaced dispatches a job placement chose a worker for.
func (e *Engine) dispatchPlaced(j *placement.Job, d placement.Decision) {
	rec, ok := e.claim(j.ID)
	if !ok {
		// Finished meanwhile, or a timer of this replica holds it: give
		// the slot back; observe or the next tick queues it again if it is
		// still pending.
		e.unplace(j.ID, d.WorkerID)
		return
	}
	written := e.dispatchTo(rec, d.Subject, d.WorkerID)
	e.release(j.ID)
	if !written {
		e.unplace(j.ID, d.WorkerID)
		if cur, ok := e.cached(j.ID); ok && cur.Job.GetState() == lifecycle.Pending {
			e.queues.Readmit(e.newPlacementJob(cur.Job))
		}
	}
}

// unplace gives back the slot a job held on a worker and its tenant's.
func (e *Engine) unplace(jobID, workerID string) {
	e.preg.Release(workerID, jobID)
	e.queues.Remove(jobID)
}

// placementObserve keeps the queues and the registry in step with a change
// of a job, seen by the job cache's observe under its lock: it must not take
// that lock or placeMu.
func (e *Engine) placementObserve(prev, next *pb.JobInfo) {
	if e.queues == nil {
		return
	}
	id := next.GetJobId()
	switch st := next.GetState(); {
	case lifecycle.Terminal(st):
		e.preg.Release("", id)
		e.queues.Remove(id)
		e.kickDrain() // its worker's slot and its tenant's are free
	case st == lifecycle.Pending:
		if prev.GetState() == lifecycle.Dispatched || prev.GetState() == lifecycle.Running {
			// The attempt ended without a result: its worker's slot is free.
			e.preg.Release("", id)
			e.kickDrain()
		}
		if !e.placed(e.poolOf(next.GetRequest())) || next.GetAwaitingSafety() {
			return
		}
		if time.Now().UnixMilli() < next.GetNextAttemptMs() {
			// Backing off: out of the queue (and no longer running for its
			// tenant) until the timer finds it due.
			e.queues.Remove(id)
			return
		}
		if _, known := e.queues.Job(id); known || prev == nil {
			// Started here and handed back, or new: queue it (again).
			// (A new job admitted here is pushed by admit, with its
			// bound checked; Readmit of a queued job changes nothing.)
			if !known && ValidateRequest(next.GetRequest()) != nil {
				return // stored out of bounds: the timer fails it (readmitDue)
			}
			e.queues.Readmit(e.newPlacementJob(next))
		}
	default: // DISPATCHED or RUNNING
		if prev.GetState() == lifecycle.Dispatched && prev.GetAttempt() == next.GetAttempt() {
			return // confirmed: whoever placed the attempt still does
		}
		if _, mine := e.preg.AssignedTo(id); !mine {
			// Another replica placed it.
			e.queues.Remove(id)
			if e.cfg.AdoptPlacements && e.placed(e.poolOf(next.GetRequest())) {
				e.adoptPlacement(next) // placement_adopt.go
			}
		}
	}
}

// readmitDue queues a PENDING job of a placed pool that became due (its
// backoff ended, or it was found pending after a restart).
func (e *Engine) readmitDue(rec jobstore.Record) {
	if _, known := e.queues.Job(rec.Job.GetJobId()); known {
		return
	}
	if verr := ValidateRequest(rec.Job.GetRequest()); verr != nil {
		// Stored before today's bounds (by an earlier version): no worker
		// will ever take it. The naive path's dispatch does the same.
		e.undeliverable(rec, lifecycle.Pending, rec.Job.GetAttempt(), "the stored request is out of bounds: "+verr.Error())
		return
	}
	e.queues.Readmit(e.newPlacementJob(rec.Job))
}

// placeNow places a job being admitted at once, without queueing it, when
// nothing can be ahead of it (its pool has nothing pending, its tenant is
// under its limit) and a worker has room. The job then counts against the
// worker and its tenant; if it is not recorded, unplace it.
func (e *Engine) placeNow(job *pb.JobInfo, pool *placement.Pool) (placement.Decision, bool) {
	pj := e.newPlacementJobIn(job, pool)
	e.placeMu.Lock()
	defer e.placeMu.Unlock()
	if !e.queues.StartNow(pj) { // known already, or something ahead of it
		return placement.Decision{}, false
	}
	d, err := e.preg.Place(pj, nil)
	if err != nil {
		e.queues.Remove(pj.ID)
		return placement.Decision{}, false
	}
	return d, true
}

// pushNew queues a job being admitted to a placed pool, or refuses it when
// the pool's or the tenant's queue is at its bound. A job already known
// (submitted again) is left as it is.
func (e *Engine) pushNew(job *pb.JobInfo, pool *placement.Pool) (pushed bool, refusal *pb.JobAnswer) {
	if _, known := e.queues.Job(job.GetJobId()); known {
		return false, nil
	}
	pj := e.newPlacementJobIn(job, pool)
	if err := e.queues.Push(pj); err != nil {
		var full *placement.QueueFullError
		if errors.As(err, &full) {
			e.stats.backpressure.Add(1)
			return false, &pb.JobAnswer{Error: err.Error(), Retryable: true, RetryAfterMs: e.cfg.NoWorkerRetry.Milliseconds()}
		}
		return false, &pb.JobAnswer{Error: err.Error(), Retryable: true}
	}
	return true, nil
}

// pendingReason is why a PENDING job waits, as the queues see it now.
func (e *Engine) pendingReason(j *pb.JobInfo) string {
	if e.queues == nil || j.GetState() != lifecycle.Pending {
		return ""
	}
	return e.queues.Reason(j.GetJobId())
}

// workers lists the live workers for cortex workers.
func (e *Engine) workers() []*pb.WorkerInfo {
	if e.preg != nil {
		return e.preg.Workers()
	}
	return e.cfg.Registry.Workers()
}

// workersFor is workers() as the requester may see it: a tenant's client
// sees every worker, but of the jobs each holds only its own tenant's (a
// job id is its tenant's to know).
func (e *Engine) workersFor(who tenancy.Principal) []*pb.WorkerInfo {
	ws := e.workers()
	if !who.Restricted() {
		return ws
	}
	out := make([]*pb.WorkerInfo, len(ws))
	for i, w := range ws {
		hb := w.GetHeartbeat()
		held := make([]*pb.HeldJob, 0, len(hb.GetHeld()))
		for _, h := range hb.GetHeld() {
			if rec, ok := e.cached(h.GetJobId()); ok && who.Sees(rec.Job.GetRequest().GetTenant()) {
				held = append(held, h)
			}
		}
		c := proto.CloneOf(w)
		if c.Heartbeat != nil {
			c.Heartbeat.Held = held
		}
		out[i] = c
	}
	return out
}
