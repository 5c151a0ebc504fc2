package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"sync"
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
// one dispatch win. Every change of a job passes through the job cache's
// observe, which calls the placer's to keep the two in step with the job
// store: a job that leaves its attempt (a result, a refusal, a lost lease, a
// cancel) frees its worker's slot and its tenant's.

// placer is the engine's placement part. It owns the pools, the placement
// registry it counts placements in, the queues, the lock its decisions are
// made under, and the drainer loop (drainer: a part the engine starts and
// stops, nil when nothing is queued). Admission asks it to place or queue a
// new job; the heartbeats part and the timers wake it; the job cache tells
// it every change of a job (observe). It dispatches what it placed through
// the dispatcher, and claims jobs in the job cache first.
type placer struct {
	log           *slog.Logger
	stats         *counters
	registry      WorkerRegistry // Config.Registry: lists the workers when nothing places
	adopt         bool           // Config.AdoptPlacements
	noWorkerRetry time.Duration  // the retry-after of a full queue's refusal

	// pools is nil when nothing is configured and the registry does not
	// place; queues is nil when no pool places jobs by what workers report:
	// then nothing of it runs per job.
	pools  *placement.Pools
	preg   *placement.Registry
	queues *placement.Queues

	cache      *jobCache
	dispatcher *dispatcher

	mu         sync.Mutex    // drain's decisions
	kick       chan struct{} // a slot freed: drain (the drainer loop)
	regVersion uint64        // the registry version drain last woke the queues at
	drainer    *loopPart     // runs run; nil without queues
}

// newPlacer sets up placement from cfg: the pools of Config.Placement, or
// of the registry when it places (PlacingRegistry) and Config.Placement
// names none; the registry it places on, its own when Config.Registry only
// lists workers; and queues only when some pool places by what workers
// report. ownRegistry reports that the engine keeps a registry of its own,
// which the heartbeats part must feed too.
func newPlacer(cfg Config, stats *counters, log *slog.Logger) (pl *placer, ownRegistry bool) {
	pl = &placer{log: log, stats: stats, registry: cfg.Registry, adopt: cfg.AdoptPlacements,
		noWorkerRetry: cfg.NoWorkerRetry, pools: cfg.Placement}
	if pr, ok := cfg.Registry.(PlacingRegistry); ok {
		pl.preg = pr.PlacementRegistry() // nil: it only lists workers
	}
	if pl.pools == nil && pl.preg != nil {
		pl.pools = pl.preg.Pools()
	}
	if pl.pools == nil {
		pl.preg = nil
		return pl, false
	}
	if pl.preg == nil {
		pl.preg = placement.NewRegistry(placement.RegistryOptions{Pools: pl.pools})
		ownRegistry = true
	}
	pl.queues = placement.NewQueues(placement.QueueOptions{Pools: pl.pools})
	placing := false
	for _, p := range pl.pools.List() {
		placing = placing || pl.placed(p)
	}
	if def, ok := placement.LookupStrategy(pl.pools.Config().DefaultStrategy); ok {
		if b, blind := def.(placement.WorkerBlind); !blind || !b.WorkerBlind() {
			placing = true // implicit pools place
		}
	}
	if !placing {
		pl.queues = nil
		return pl, ownRegistry
	}
	pl.kick = make(chan struct{}, 1)
	pl.drainer = newLoop("drainer", pl.run)
	return pl, ownRegistry
}

// placed reports whether jobs of pool wait in a queue for a worker with room.
func (pl *placer) placed(pool *placement.Pool) bool {
	if pl.queues == nil || pool == nil {
		return false
	}
	b, ok := pool.Placer().(placement.WorkerBlind)
	return !ok || !b.WorkerBlind()
}

// poolOf resolves a request's pool; nil when nothing is configured.
func (pl *placer) poolOf(req *pb.JobRequest) *placement.Pool {
	if pl.pools == nil {
		return nil
	}
	return pl.pools.Resolve(req.GetTopic())
}

// newJob is the placement view of a recorded job.
func (pl *placer) newJob(j *pb.JobInfo) *placement.Job {
	return pl.newJobIn(j, pl.pools.Resolve(j.GetRequest().GetTopic()))
}

// newJobIn is newJob in pool, the job's resolved already
// (admission has it).
func (pl *placer) newJobIn(j *pb.JobInfo, pool *placement.Pool) *placement.Job {
	pj := placement.NewJobIn(j.GetRequest(), pool)
	if j.GetCreatedMs() > 0 {
		pj.Enqueued = time.UnixMilli(j.GetCreatedMs()) // aging counts across retries
	}
	return pj
}

// drain places what the queues hold on the workers with room, then
// dispatches it. Decisions are made under pl.mu, one pool after another;
// the dispatches (a store write and a publish each) happen after, outside it.
func (pl *placer) drain() {
	if pl.queues == nil {
		return
	}
	type pick struct {
		job *placement.Job
		d   placement.Decision
	}
	var picks []pick
	pl.mu.Lock()
	if v := pl.preg.Version(); v != pl.regVersion {
		// Workers came, went or freed room: parked jobs and blocked pools
		// are worth another look.
		pl.regVersion = v
		pl.queues.WakeAll()
	}
	for _, q := range pl.queues.Backlogged() {
		for {
			j := q.Next()
			if j == nil {
				break
			}
			d, err := pl.preg.Place(j, nil)
			if err != nil {
				if placement.PoolWide(err) {
					q.Block(err.Error()) // no room anywhere in the pool: until a worker frees some
					break
				}
				pl.queues.Park(j, err.Error()) // this job cannot run now; the others may
				continue
			}
			pl.queues.Start(j)
			picks = append(picks, pick{j, d})
		}
	}
	pl.mu.Unlock()
	for _, p := range picks {
		pl.dispatchPlaced(p.job, p.d)
	}
}

// run, the drainer loop, drains whenever a slot was freed (kickDrain), so that a job
// waiting for it goes at once, not at the next tick or heartbeat. Kicks
// that come while a drain runs are taken together by the next.
func (pl *placer) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-pl.kick:
			pl.drain()
		}
	}
}

// kickDrain asks the drainer loop to drain; it never blocks. With nothing
// pending there is nothing to drain: a job queued later is drained by its
// admission (or readmission's tick), which sees the slot freed before.
func (pl *placer) kickDrain() {
	if pl.queues.Len() == 0 {
		return
	}
	select {
	case pl.kick <- struct{}{}:
	default:
	}
}

// dispatchPlaced dispatches a job placement chose a worker for.
func (pl *placer) dispatchPlaced(j *placement.Job, d placement.Decision) {
	rec, ok := pl.cache.claim(j.ID)
	if !ok {
		// Finished meanwhile, or a timer of this replica holds it: give
		// the slot back; observe or the next tick queues it again if it is
		// still pending.
		pl.unplace(j.ID, d.WorkerID)
		return
	}
	written := pl.dispatcher.dispatchTo(rec, d.Subject, d.WorkerID)
	pl.cache.release(j.ID)
	if !written {
		pl.unplace(j.ID, d.WorkerID)
		if cur, ok := pl.cache.cached(j.ID); ok && cur.Job.GetState() == lifecycle.Pending {
			pl.queues.Readmit(pl.newJob(cur.Job))
		}
	}
}

// dequeue takes a job out of its queue (and out of its tenant's running
// count).
func (pl *placer) dequeue(jobID string) { pl.queues.Remove(jobID) }

// unplace gives back the slot a job held on a worker and its tenant's.
func (pl *placer) unplace(jobID, workerID string) {
	pl.preg.Release(workerID, jobID)
	pl.queues.Remove(jobID)
}

// observe keeps the queues and the registry in step with a change
// of a job, seen by the job cache's observe under its lock: it must not take
// that lock or pl.mu. admitted: next is the record this replica's admission
// just created, and admission has already placed it (placeNow), queued it
// (pushNew) or sent it on its topic (naive): nothing is left to do for it.
func (pl *placer) observe(prev, next *pb.JobInfo, admitted bool) {
	if pl.queues == nil || (admitted && lifecycle.Active(next.GetState())) {
		return
	}
	id := next.GetJobId()
	switch st := next.GetState(); {
	case lifecycle.Terminal(st):
		pl.preg.Release("", id)
		pl.queues.Remove(id)
		pl.kickDrain() // its worker's slot and its tenant's are free
	case st == lifecycle.Pending:
		if prev.GetState() == lifecycle.Dispatched || prev.GetState() == lifecycle.Running {
			// The attempt ended without a result: its worker's slot is free.
			pl.preg.Release("", id)
			pl.kickDrain()
		}
		if !pl.placed(pl.poolOf(next.GetRequest())) || next.GetAwaitingSafety() {
			return
		}
		if time.Now().UnixMilli() < next.GetNextAttemptMs() {
			// Backing off: out of the queue (and no longer running for its
			// tenant) until the timer finds it due.
			pl.queues.Remove(id)
			return
		}
		if _, known := pl.queues.Job(id); known || prev == nil {
			// Started here and handed back, or new: queue it (again).
			// (A new job admitted here is pushed by admit, with its
			// bound checked; Readmit of a queued job changes nothing.)
			if !known && ValidateRequest(next.GetRequest()) != nil {
				return // stored out of bounds: the timer fails it (readmitDue)
			}
			pl.queues.Readmit(pl.newJob(next))
		}
	default: // DISPATCHED or RUNNING
		if prev.GetState() == lifecycle.Dispatched && prev.GetAttempt() == next.GetAttempt() {
			return // confirmed: whoever placed the attempt still does
		}
		if _, mine := pl.preg.AssignedTo(id); !mine {
			// Another replica placed it.
			pl.queues.Remove(id)
			if pl.adopt && pl.placed(pl.poolOf(next.GetRequest())) {
				pl.adoptPlacement(next) // placement_adopt.go
			}
		}
	}
}

// readmitDue queues a PENDING job of a placed pool that became due (its
// backoff ended, or it was found pending after a restart).
func (pl *placer) readmitDue(rec jobstore.Record) {
	if _, known := pl.queues.Job(rec.Job.GetJobId()); known {
		return
	}
	if verr := ValidateRequest(rec.Job.GetRequest()); verr != nil {
		// Stored before today's bounds (by an earlier version): no worker
		// will ever take it. The naive path's dispatch does the same.
		pl.dispatcher.undeliverable(rec, lifecycle.Pending, rec.Job.GetAttempt(), "the stored request is out of bounds: "+verr.Error())
		return
	}
	pl.queues.Readmit(pl.newJob(rec.Job))
}

// placeNow places a job being admitted at once, without queueing it, when
// nothing can be ahead of it (its pool has nothing pending, its tenant is
// under its limit) and a worker has room. The job then counts against the
// worker and its tenant; if it is not recorded, unplace it. now is the
// admission's clock reading: the registry takes it when it is on the wall
// clock too.
func (pl *placer) placeNow(job *pb.JobInfo, pool *placement.Pool, now time.Time) (placement.Decision, bool) {
	pj := pl.newJobIn(job, pool)
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if !pl.queues.StartNow(pj) { // known already, or something ahead of it
		return placement.Decision{}, false
	}
	if !pl.preg.WallClock() {
		now = time.Time{} // the registry reads its own clock
	}
	d, err := pl.preg.PlaceAt(pj, nil, now)
	if err != nil {
		pl.queues.Remove(pj.ID)
		return placement.Decision{}, false
	}
	return d, true
}

// pushNew queues a job being admitted to a placed pool, or refuses it when
// the pool's or the tenant's queue is at its bound. A job already known
// (submitted again) is left as it is.
func (pl *placer) pushNew(job *pb.JobInfo, pool *placement.Pool) (pushed bool, refusal *pb.JobAnswer) {
	if _, known := pl.queues.Job(job.GetJobId()); known {
		return false, nil
	}
	pj := pl.newJobIn(job, pool)
	if err := pl.queues.Push(pj); err != nil {
		var full *placement.QueueFullError
		if errors.As(err, &full) {
			pl.stats.backpressure.Add(1)
			return false, &pb.JobAnswer{Error: err.Error(), Retryable: true, RetryAfterMs: pl.noWorkerRetry.Milliseconds()}
		}
		return false, &pb.JobAnswer{Error: err.Error(), Retryable: true}
	}
	return true, nil
}

// pendingReason is why a PENDING job waits, as the queues see it now.
func (pl *placer) pendingReason(j *pb.JobInfo) string {
	if pl.queues == nil || j.GetState() != lifecycle.Pending {
		return ""
	}
	return pl.queues.Reason(j.GetJobId())
}

// workers lists the live workers for cortex workers.
func (pl *placer) workers() []*pb.WorkerInfo {
	if pl.preg != nil {
		return pl.preg.Workers()
	}
	return pl.registry.Workers()
}

// workersFor is workers() as the requester may see it: a tenant's client
// sees every worker, but of the jobs each holds only its own tenant's (a
// job id is its tenant's to know).
func (pl *placer) workersFor(who tenancy.Principal) []*pb.WorkerInfo {
	ws := pl.workers()
	if !who.Restricted() {
		return ws
	}
	out := make([]*pb.WorkerInfo, len(ws))
	for i, w := range ws {
		hb := w.GetHeartbeat()
		held := make([]*pb.HeldJob, 0, len(hb.GetHeld()))
		for _, h := range hb.GetHeld() {
			if rec, ok := pl.cache.cached(h.GetJobId()); ok && who.Sees(rec.Job.GetRequest().GetTenant()) {
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

// tick forgets the workers that stopped heartbeating and places what now
// fits; nothing without placement queues. The timers call it every Tick.
func (pl *placer) tick() {
	if pl.queues != nil {
		pl.preg.Expire()
		pl.drain()
	}
}
