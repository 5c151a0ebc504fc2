package placement

import (
	"hash/maphash"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Registry defaults.
const (
	// DefaultInterval is assumed for heartbeats that do not say when the
	// next comes (interval_ms 0): the design document's workers heartbeat
	// every 5s and say nothing.
	DefaultInterval = 5 * time.Second
	// DefaultMisses: a worker is gone after this many of its intervals
	// without a heartbeat.
	DefaultMisses = 3
	// DefaultReconcileGrace: a job counted against a worker and missing from
	// the jobs its heartbeats say it holds is no longer counted once it was
	// placed this long ago (its result went to another scheduler replica,
	// or the queue group gave it to another worker).
	DefaultReconcileGrace = 2 * time.Second
	// DefaultMaxTopics bounds the per-topic candidate slices kept.
	DefaultMaxTopics = 4096
)

// RegistryOptions configure a Registry; zero values take the defaults.
type RegistryOptions struct {
	// Pools resolves topics to pools. Default: NewPools(Config{}) (no pools:
	// every topic is its own).
	Pools *Pools
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// DefaultInterval for heartbeats without interval_ms. Default 5s.
	DefaultInterval time.Duration
	// Misses: intervals a worker may go without a heartbeat. Default 3.
	Misses int
	// ReconcileGrace. Default 2s.
	ReconcileGrace time.Duration
	// MaxTopics bounds the per-topic candidate slices kept (they are rebuilt
	// on demand). Default 4096.
	MaxTopics int
	// ListOnly makes the registry the design document's WorkerRegistry and
	// nothing more: it lists the live workers (Snapshot, Workers) and is
	// offered to no engine for placement (PlacementRegistry returns nil),
	// and Snapshot forgets the workers whose heartbeats stopped, as Expire
	// does, since no placement tick expires them.
	ListOnly bool
}

// Worker is the registry's view of a live worker, from its last heartbeat
// and the jobs placed on it since. A Strategy reads it during Place; it must
// not modify it or keep it.
type Worker struct {
	ID string
	// Pool the worker reserves itself for; "" serves every pool.
	Pool         string
	Topics       []string
	Capabilities []string
	Labels       map[string]string
	// Capacity is how many jobs it runs at once (a heartbeat's 0 is 1).
	Capacity int
	// Assigned counts the jobs placed on it (Assign) not yet released or
	// reconciled away.
	Assigned int
	// ActiveJobs is what its last heartbeat said it runs.
	ActiveJobs int
	// Unplaced counts the jobs its last heartbeat listed as held that were
	// not placed here and not released here since (another replica placed
	// them, or the queue group gave them to it): they fill slots too.
	Unplaced         int
	CPULoad, GPUUtil float32
	Draining, Direct bool
	LastSeen         time.Time
	// Interval is the time to its next heartbeat, as the last one said.
	Interval time.Duration

	hb      *pb.Heartbeat
	until   int64  // expires: unix nanoseconds
	subject string // wire.WorkerJobSubject(ID), when Direct
	// placed lists the jobs placed here, in placement order. The registry's
	// one map (Registry.jobs) holds each counted job once; an entry here is
	// current while its job is counted against this worker and its pos is
	// the entry's index. A release only marks the job (no map of its own to
	// delete from); the stale entries go when the list is tidied (tidyPlaced,
	// at each heartbeat and once it is twice the jobs counted).
	placed []*Job
	// released lists the jobs released here (no longer counted), kept until
	// a heartbeat of the worker does not list them, so that one sent before
	// the release and received after it does not count them again
	// (Unplaced). A list, not map entries: a release appends, and the next
	// heartbeat filters it once. It holds the hashes of the ids
	// (Registry.hashID), not the ids: between two heartbeats it grows by
	// every job the worker finished (hundreds of thousands at full speed),
	// and a list of strings kept every id alive and had the garbage
	// collector scan each of them, at every cycle.
	released []uint64
	ext      []string // the held jobs counted in Unplaced
	listed   bool     // its heartbeats list what it holds (held), or it holds nothing
	feat     featureSet
	in       []membership // the candidate sets it is in
	wild     bool         // a topic with a wildcard
}

// Busy is how many of the worker's slots are taken. For a worker whose
// heartbeats list the jobs it holds (held), it is the jobs placed on it
// here plus the held jobs not placed here (Unplaced): a job released here
// (its result came, it was refused, cancelled, its lease lost) frees its
// slot at once, not at the worker's next heartbeat. For a worker that
// reports only a count (active_jobs without held), it is the larger of
// Assigned and ActiveJobs.
func (w *Worker) Busy() int {
	if w.listed {
		return w.Assigned + w.Unplaced
	}
	return max(w.Assigned, w.ActiveJobs)
}

// Free is how many more jobs the worker can take: Capacity minus Busy; 0
// while draining.
func (w *Worker) Free() int {
	if w.Draining {
		return 0
	}
	return max(0, w.Capacity-w.Busy())
}

// Load is the larger of its CPU load and GPU utilisation, 0 to 100.
func (w *Worker) Load() float32 { return min(max(w.CPULoad, w.GPUUtil, 0), 100) }

// Subject is where a job placed on this worker is published: its own
// subject when it is direct, else the job's topic (and its queue group).
func (w *Worker) Subject(job *Job) string {
	if w.Direct {
		return w.subject
	}
	return job.Topic
}

type membership struct {
	set *candSet
	idx int
}

// candSet is the live workers that can take the jobs of one topic (or, for a
// pool set, of any topic of one configured pool): they serve it, belong to
// its pool, and have the pool's capabilities and labels. Slots repeat what a
// decision reads of each worker, so a decision scans one slice.
type candSet struct {
	topic string // "" for a pool set
	pool  *Pool
	items []slot
	rr    uint32 // where the next scan starts: ties rotate
}

type slot struct {
	w     *Worker
	until int64
	free  int32
	load  float32
	// rank orders slots for least-loaded: free capacity, then the inverse
	// of the load band; 0 when full.
	rank uint32
}

// Registry keeps the live workers from their heartbeats, the jobs placed on
// each, and the candidate slices placement scans. It is safe for concurrent
// use and pure: the engine feeds it heartbeats and outcomes.
//
// It also satisfies the engine's WorkerRegistry (UpdateHeartbeat, Snapshot).
type Registry struct {
	mu    sync.Mutex
	pools *Pools
	now   func() time.Time
	// wallClock: now is time.Now (RegistryOptions.Now unset)
	wallClock bool
	opts      RegistryOptions

	workers map[string]*Worker
	jobs    map[string]*Job    // assigned job (its worker, when, where in its list)
	ext     map[string]*Worker // held job not placed here -> worker (Unplaced)
	// released remembers the jobs released lately, in two generations of
	// at least ReconcileGrace each, so that a heartbeat sent before a
	// job's release and received after it does not count the job again.
	released    [2]map[string]struct{}
	releasedGen int64 // when released[0] was started, unix nanoseconds
	topicSets   map[string]*candSet
	poolSets    []*candSet // per configured pool
	// heldHashes is, during a heartbeat, the jobs its worker lists as
	// held, by the hash of their ids (reconcile; empty in between).
	heldHashes map[uint64]string
	// heldReleased is, during a heartbeat, the jobs its worker lists as
	// held that were released here (reconcile fills it, unplaced reads it).
	heldReleased map[string]struct{}
	legacy       int // workers that report no topics (v1.0)
	feats        features
	epoch        uint64
	version      uint64
}

// NewRegistry returns an empty registry.
func NewRegistry(opts RegistryOptions) *Registry {
	if opts.Pools == nil {
		opts.Pools, _ = NewPools(Config{})
	}
	wallClock := opts.Now == nil
	if wallClock {
		opts.Now = time.Now
	}
	if opts.DefaultInterval <= 0 {
		opts.DefaultInterval = DefaultInterval
	}
	if opts.Misses <= 0 {
		opts.Misses = DefaultMisses
	}
	if opts.ReconcileGrace <= 0 {
		opts.ReconcileGrace = DefaultReconcileGrace
	}
	if opts.MaxTopics <= 0 {
		opts.MaxTopics = DefaultMaxTopics
	}
	r := &Registry{
		pools: opts.Pools, now: opts.Now, wallClock: wallClock, opts: opts,
		workers:      make(map[string]*Worker),
		jobs:         make(map[string]*Job),
		ext:          make(map[string]*Worker),
		released:     [2]map[string]struct{}{make(map[string]struct{}), make(map[string]struct{})},
		heldReleased: make(map[string]struct{}),
		heldHashes:   make(map[uint64]string),
		topicSets:    make(map[string]*candSet),
		feats:        features{caps: map[string]int{}, labels: map[string]map[string]int{}},
	}
	for _, p := range opts.Pools.List() {
		r.poolSets = append(r.poolSets, &candSet{pool: p})
	}
	return r
}

// Pools returns the registry's pools.
func (r *Registry) Pools() *Pools { return r.pools }

// PlacementRegistry returns the registry an engine places jobs on: r
// itself, or nil when r is ListOnly. It is the engine's way of telling a
// registry that places from one that only lists workers, without knowing
// its type.
func (r *Registry) PlacementRegistry() *Registry {
	if r.opts.ListOnly {
		return nil
	}
	return r
}

// Version changes whenever a job that could not be placed might now be: a
// worker joined, left or changed what it serves, or capacity freed. The
// engine compares it to the version it last drained the pools at.
func (r *Registry) Version() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.version
}

// Heartbeat records hb, received at at, as its worker's latest: the worker
// is live until Misses of its intervals pass without another. Jobs counted
// against the worker that its heartbeat does not list as held are dropped
// once placed ReconcileGrace before at. hb is kept: do not modify it after.
func (r *Registry) Heartbeat(hb *pb.Heartbeat, at time.Time) {
	id := hb.GetWorkerId()
	if id == "" {
		return
	}
	interval := time.Duration(hb.GetIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = r.opts.DefaultInterval
	}
	now := at.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	fresh := w == nil
	if fresh {
		w = &Worker{ID: id}
		r.workers[id] = w
	}
	oldFree, wasLive := w.Free(), !fresh && w.until > now
	w.hb, w.LastSeen, w.Interval = hb, at, interval
	w.until = now + int64(r.opts.Misses)*int64(interval)
	w.Capacity = max(1, int(hb.GetCapacity()))
	w.ActiveJobs = max(0, int(hb.GetActiveJobs()))
	w.CPULoad, w.GPUUtil = hb.GetCpuLoad(), hb.GetGpuUtilization()
	w.Draining = hb.GetDraining()
	if w.Direct = hb.GetDirect(); w.Direct && w.subject == "" {
		w.subject = wire.WorkerJobSubject(id)
	}
	changed := fresh || w.Pool != hb.GetPool() || !slices.Equal(w.Topics, hb.GetTopics()) ||
		!slices.Equal(w.Capabilities, hb.GetCapabilities()) || !maps.Equal(w.Labels, hb.GetLabels())
	if changed {
		if !fresh && len(w.Topics) == 0 {
			r.legacy--
		}
		w.Pool, w.Topics, w.Capabilities, w.Labels = hb.GetPool(), hb.GetTopics(), hb.GetCapabilities(), hb.GetLabels()
		if len(w.Topics) == 0 {
			r.legacy++
		}
		w.wild = slices.ContainsFunc(w.Topics, isPattern)
		w.feat = r.feats.of(w)
		r.join(w)
	}
	r.reconcile(w, hb.GetHeld(), now)
	r.unplaced(w, hb, now)
	clear(r.heldReleased)
	r.refresh(w)
	if changed || !wasLive || w.Free() > oldFree {
		r.version++
	}
}

// UpdateHeartbeat records hb received now (the engine's WorkerRegistry).
func (r *Registry) UpdateHeartbeat(hb *pb.Heartbeat) { r.Heartbeat(hb, r.now()) }

// reconcile drops the jobs counted against w that its heartbeat does not
// list as held and that were placed before the grace, and the jobs released
// here that it does not list. The released jobs it lists are left in
// r.heldReleased for unplaced.
func (r *Registry) reconcile(w *Worker, held []*pb.HeldJob, now int64) {
	if len(w.released) > 0 {
		kept := w.released[:0]
		if len(held) > 0 {
			hh := r.heldHashes
			for _, h := range held {
				hh[hashID(h.GetJobId())] = h.GetJobId()
			}
			for _, x := range w.released {
				if id, ok := hh[x]; ok {
					kept = append(kept, x)
					r.heldReleased[id] = struct{}{}
				}
			}
			clear(hh)
		}
		w.released = kept
	}
	if w.Assigned == 0 {
		clear(w.placed)
		w.placed = w.placed[:0]
		return
	}
	r.epoch++
	for _, h := range held {
		if j := r.jobs[h.GetJobId()]; j != nil && j.worker == w {
			j.seen = r.epoch
		}
	}
	cutoff := now - int64(r.opts.ReconcileGrace)
	for i, j := range w.placed {
		if j.worker == w && j.pos == int32(i) && j.seen != r.epoch && j.at < cutoff {
			delete(r.jobs, j.ID)
			j.worker = nil
			w.Assigned--
		}
	}
	tidyPlaced(w)
}

// tidyPlaced drops the entries of w.placed that are no longer current: jobs
// released, moved, reconciled away, or placed here again later in the list.
func tidyPlaced(w *Worker) {
	kept := w.placed[:0]
	for i, j := range w.placed {
		if j.worker == w && j.pos == int32(i) {
			j.pos = int32(len(kept))
			kept = append(kept, j)
		}
	}
	clear(w.placed[len(kept):])
	w.placed = kept
}

// unplaced recounts the jobs w holds that were not placed here (Unplaced)
// from its heartbeat, leaving out those released here lately.
func (r *Registry) unplaced(w *Worker, hb *pb.Heartbeat, now int64) {
	held := hb.GetHeld()
	w.listed = len(held) > 0 || hb.GetActiveJobs() <= 0
	for _, id := range w.ext {
		if r.ext[id] == w {
			delete(r.ext, id)
		}
	}
	w.ext = w.ext[:0]
	if len(held) == 0 {
		w.Unplaced = 0
		return
	}
	r.rotate(now)
	for _, h := range held {
		id := h.GetJobId()
		if id == "" || r.jobs[id] != nil {
			continue // placed here (counted in Assigned) or on another worker
		}
		if _, mine := r.heldReleased[id]; mine {
			continue // released here
		}
		if _, gone := r.released[0][id]; gone {
			continue
		}
		if _, gone := r.released[1][id]; gone {
			continue
		}
		if r.ext[id] != nil {
			continue // counted against another worker
		}
		r.ext[id] = w
		w.ext = append(w.ext, id)
	}
	w.Unplaced = len(w.ext)
}

// rotate starts a new generation of released jobs once the current one is
// ReconcileGrace old.
func (r *Registry) rotate(now int64) {
	if now-r.releasedGen < int64(r.opts.ReconcileGrace) {
		return
	}
	old := r.released[1]
	clear(old)
	r.released[1], r.released[0] = r.released[0], old
	r.releasedGen = now
}

// remember records that jobID was released, for unplaced.
func (r *Registry) remember(jobID string, now int64) {
	r.rotate(now)
	r.released[0][jobID] = struct{}{}
}

// Assign counts job against worker at once, until Release (or a heartbeat
// of the worker that does not list it, ReconcileGrace later). A job assigned
// elsewhere before moves. It reports whether the worker is known.
func (r *Registry) Assign(workerID, jobID string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[workerID]
	if w == nil {
		return false
	}
	r.assign(w, &Job{ID: jobID}, r.now().UnixNano())
	return true
}

func (r *Registry) assign(w *Worker, job *Job, now int64) {
	jobID := job.ID
	if len(r.ext) == 0 {
		// the common case: every held job was placed here
	} else if ew := r.ext[jobID]; ew != nil { // counted from a heartbeat before: now placed here
		delete(r.ext, jobID)
		if i := slices.Index(ew.ext, jobID); i >= 0 {
			ew.ext[i] = ew.ext[len(ew.ext)-1]
			ew.ext = ew.ext[:len(ew.ext)-1]
		}
		ew.Unplaced = len(ew.ext)
		r.refresh(ew)
	}
	if prev := r.jobs[jobID]; prev != nil {
		if prev.worker == w {
			return
		}
		r.unassign(prev, now)
	}
	job.worker, job.at, job.seen, job.pos = w, now, 0, int32(len(w.placed))
	w.placed = append(w.placed, job)
	r.jobs[jobID] = job
	w.Assigned++
	if len(w.placed) > 2*w.Assigned+64 {
		tidyPlaced(w) // released entries: amortised, no map operation
	}
	r.refresh(w)
}

// Release stops counting job against its worker: it finished, was refused,
// was never confirmed, or was cancelled. workerID "" releases it from
// whichever worker it was assigned to; a job assigned to another worker than
// workerID stays.
func (r *Registry) Release(workerID, jobID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobs[jobID]
	if j == nil {
		if len(r.ext) == 0 {
			return
		}
		if w := r.ext[jobID]; w != nil && (workerID == "" || w.ID == workerID) {
			r.dropExt(w, jobID)
		}
		return
	}
	if workerID != "" && j.worker.ID != workerID {
		return
	}
	var now int64
	if !j.worker.Direct {
		now = r.now().UnixNano() // for remember
	}
	r.unassign(j, now)
}

// dropExt stops counting a held job not placed here against w.
func (r *Registry) dropExt(w *Worker, jobID string) {
	before := w.Free()
	delete(r.ext, jobID)
	if i := slices.Index(w.ext, jobID); i >= 0 {
		w.ext[i] = w.ext[len(w.ext)-1]
		w.ext = w.ext[:len(w.ext)-1]
	}
	w.Unplaced = len(w.ext)
	r.remember(jobID, r.now().UnixNano())
	r.refresh(w)
	if w.Free() > before {
		r.version++
	}
}

// unassign stops counting jobID against w. The job stays in the worker's
// released list until its heartbeats stop listing it. A worker that is not
// direct may not be the one the queue group gave the job to: the registry
// then remembers the release for every worker's heartbeats (remember).
func (r *Registry) unassign(job *Job, now int64) {
	w, jobID := job.worker, job.ID
	before := w.Free()
	job.worker = nil // its entry in w.placed is stale from now on
	w.released = append(w.released, hashID(jobID))
	delete(r.jobs, jobID)
	w.Assigned--
	if !w.Direct {
		r.remember(jobID, now)
	}
	r.refresh(w)
	if w.Free() > before {
		r.version++
	}
}

// idSeed seeds hashID, once per process.
var idSeed = maphash.MakeSeed()

// hashID is the hash a worker's released list keeps of a job id. Two ids
// with the same hash (2^-64 a pair) could only leave a job the worker
// holds, not placed here, uncounted (taken for one released here) until
// the worker's next heartbeat.
func hashID(id string) uint64 { return maphash.String(idSeed, id) }

// AssignedTo returns the worker a job is counted against.
func (r *Registry) AssignedTo(jobID string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if j := r.jobs[jobID]; j != nil {
		return j.worker.ID, true
	}
	return "", false
}

// Expire forgets the workers whose heartbeats stopped (Misses intervals
// ago) and the jobs counted against them, and returns their ids.
func (r *Registry) Expire() []string {
	now := r.now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	var gone []string
	for id, w := range r.workers {
		if w.until > now {
			continue
		}
		gone = append(gone, id)
		r.remove(w)
	}
	sort.Strings(gone)
	return gone
}

// Forget removes a worker at once (it said it stopped).
func (r *Registry) Forget(workerID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w := r.workers[workerID]; w != nil {
		r.remove(w)
	}
}

func (r *Registry) remove(w *Worker) {
	r.leave(w)
	for i, j := range w.placed {
		if j.worker == w && j.pos == int32(i) {
			delete(r.jobs, j.ID)
			j.worker = nil
		}
	}
	clear(w.placed)
	w.placed = nil
	for _, id := range w.ext {
		if r.ext[id] == w {
			delete(r.ext, id)
		}
	}
	if len(w.Topics) == 0 {
		r.legacy--
	}
	delete(r.workers, w.ID)
	r.version++
}

// Len is the number of live workers.
func (r *Registry) Len() int {
	now := r.now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, w := range r.workers {
		if w.until > now {
			n++
		}
	}
	return n
}

// Worker returns a copy of a live worker's view.
func (r *Registry) Worker(id string) (Worker, bool) {
	now := r.now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.workers[id]
	if w == nil || w.until <= now {
		return Worker{}, false
	}
	c := *w
	c.placed, c.in = nil, nil
	return c, true
}

// Workers lists the live workers for `cortex workers`, by id. The
// heartbeats are shared: do not modify them.
func (r *Registry) Workers() []*pb.WorkerInfo {
	now := r.now().UnixNano()
	r.mu.Lock()
	out := make([]*pb.WorkerInfo, 0, len(r.workers))
	for _, w := range r.workers {
		if w.until > now {
			out = append(out, &pb.WorkerInfo{Heartbeat: w.hb, LastSeenMs: w.LastSeen.UnixMilli(), Assigned: int32(w.Assigned)})
		}
	}
	r.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetHeartbeat().GetWorkerId() < out[j].GetHeartbeat().GetWorkerId() })
	return out
}

// Snapshot returns the last heartbeat of every live worker by id (the
// engine's WorkerRegistry); a ListOnly registry first forgets the workers
// whose heartbeats stopped. The heartbeats are shared: do not modify them.
func (r *Registry) Snapshot() map[string]*pb.Heartbeat {
	if r.opts.ListOnly {
		r.Expire()
	}
	now := r.now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*pb.Heartbeat, len(r.workers))
	for id, w := range r.workers {
		if w.until > now {
			out[id] = w.hb
		}
	}
	return out
}

// Place runs strategy s (nil: the job's pool's) for job over the live
// workers that can take jobs of its topic in its pool, and counts the chosen
// worker's new job at once, in the same step, so that concurrent decisions
// spread. A strategy that is WorkerBlind runs without the registry.
func (r *Registry) Place(job *Job, s Strategy) (Decision, error) {
	return r.place(job, s, time.Time{})
}

// PlaceAt is Place at now, a reading of the registry's clock the caller
// has just taken (one clock read per job instead of two, where the caller
// reads it anyway). Only a registry on the wall clock (WallClock) may be
// given a time.Now reading; PlaceAt of the zero time is Place.
func (r *Registry) PlaceAt(job *Job, s Strategy, now time.Time) (Decision, error) {
	return r.place(job, s, now)
}

// WallClock reports that the registry's clock is time.Now
// (RegistryOptions.Now unset), so that PlaceAt may be given a time.Now
// reading.
func (r *Registry) WallClock() bool { return r.wallClock }

func (r *Registry) place(job *Job, s Strategy, at time.Time) (Decision, error) {
	if s == nil {
		pool := job.Pool
		if pool == nil {
			pool = r.pools.Resolve(job.Topic)
		}
		s = pool.Placer()
	}
	if b, ok := s.(WorkerBlind); ok && b.WorkerBlind() {
		return s.Place(job, Candidates{job: job})
	}
	if at.IsZero() {
		at = r.now()
	}
	now := at.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	set := r.topicSet(job.Topic)
	c := Candidates{r: r, set: set, job: job, now: now}
	if n := len(set.items); n > 0 {
		c.off = int(set.rr % uint32(n))
		set.rr++
	}
	c.req = r.feats.require(job)
	d, err := s.Place(job, c)
	if err == nil && d.WorkerID != "" {
		if w := r.workers[d.WorkerID]; w != nil {
			r.assign(w, job, now)
		}
	}
	return d, err
}

// ---- candidate sets ----

// topicSet returns the candidate set of a topic, building it on first use.
func (r *Registry) topicSet(topic string) *candSet {
	if s := r.topicSets[topic]; s != nil {
		return s
	}
	if len(r.topicSets) >= r.opts.MaxTopics {
		for t, s := range r.topicSets { // evict one: it is rebuilt when needed
			r.dropSet(s)
			delete(r.topicSets, t)
			break
		}
	}
	s := &candSet{topic: topic, pool: r.pools.Resolve(topic)}
	r.topicSets[topic] = s
	for _, w := range r.workers {
		if r.belongs(w, s) {
			r.add(s, w)
		}
	}
	return s
}

// poolSet is the set of every worker of a job's pool: the topic set itself
// for an implicit pool.
func (r *Registry) poolSet(s *candSet) *candSet {
	if s.pool.index < 0 || s.pool.index >= len(r.poolSets) {
		return s
	}
	return r.poolSets[s.pool.index]
}

// belongs reports whether w can take jobs of s: it serves s's topic (any
// topic of s's pool for a pool set) and is eligible for s's pool.
func (r *Registry) belongs(w *Worker, s *candSet) bool {
	if !eligible(w, s.pool) {
		return false
	}
	if s.topic != "" {
		return serves(w, s.topic)
	}
	for _, t := range w.Topics {
		for _, p := range s.pool.Topics {
			if overlap(t, p) {
				return true
			}
		}
	}
	return false
}

func serves(w *Worker, topic string) bool {
	for _, t := range w.Topics {
		if t == topic || MatchSubject(t, topic) {
			return true
		}
	}
	return false
}

// eligible: w is not reserved for another pool and has p's capabilities
// and labels.
func eligible(w *Worker, p *Pool) bool {
	if w.Pool != "" && w.Pool != p.Name {
		return false
	}
	for _, c := range p.Capabilities {
		if !slices.Contains(w.Capabilities, c) {
			return false
		}
	}
	for k, v := range p.Labels {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// join puts w in every candidate set it belongs to, after a change of what
// it serves or is.
func (r *Registry) join(w *Worker) {
	r.leave(w)
	if w.wild {
		for _, s := range r.topicSets {
			if r.belongs(w, s) {
				r.add(s, w)
			}
		}
	} else {
		for i, t := range w.Topics {
			if slices.Contains(w.Topics[:i], t) {
				continue
			}
			if s := r.topicSets[t]; s != nil && eligible(w, s.pool) {
				r.add(s, w)
			}
		}
	}
	for _, s := range r.poolSets {
		if r.belongs(w, s) {
			r.add(s, w)
		}
	}
}

// leave takes w out of every candidate set.
func (r *Registry) leave(w *Worker) {
	for len(w.in) > 0 {
		m := w.in[len(w.in)-1]
		r.removeAt(m.set, m.idx)
	}
}

func (r *Registry) add(s *candSet, w *Worker) {
	s.items = append(s.items, slot{w: w})
	w.in = append(w.in, membership{set: s, idx: len(s.items) - 1})
	r.fill(&s.items[len(s.items)-1])
}

// removeAt removes slot i of s, moving the last slot into its place.
func (r *Registry) removeAt(s *candSet, i int) {
	w := s.items[i].w
	last := len(s.items) - 1
	if i != last {
		moved := s.items[last].w
		s.items[i] = s.items[last]
		for k := range moved.in {
			if moved.in[k].set == s {
				moved.in[k].idx = i
				break
			}
		}
	}
	s.items[last] = slot{}
	s.items = s.items[:last]
	for k := range w.in {
		if w.in[k].set == s {
			w.in[k] = w.in[len(w.in)-1]
			w.in = w.in[:len(w.in)-1]
			break
		}
	}
}

// dropSet takes every worker out of s, which is being discarded.
func (r *Registry) dropSet(s *candSet) {
	for len(s.items) > 0 {
		r.removeAt(s, len(s.items)-1)
	}
}

// refresh copies w's state into its slots.
func (r *Registry) refresh(w *Worker) {
	for _, m := range w.in {
		r.fill(&m.set.items[m.idx])
	}
}

func (r *Registry) fill(sl *slot) {
	w := sl.w
	sl.until, sl.free, sl.load = w.until, int32(min(w.Free(), 1<<23)), w.Load()
	sl.rank = 0
	if sl.free > 0 {
		sl.rank = uint32(sl.free)<<8 | (255 - uint32(sl.load)/LoadBand)
	}
}

// ---- capabilities and labels as bits ----

// featWords * 64 capabilities and labels are interned as bits, so that a
// job's own requirements are checked against a worker with a few ANDs.
// Beyond that, checks fall back to the worker's lists.
const featWords = 4

type featureSet [featWords]uint64

type features struct {
	caps   map[string]int
	labels map[string]map[string]int // key -> value -> bit
	n      int
}

func (f *features) capBit(c string, add bool) (int, bool) {
	if b, ok := f.caps[c]; ok {
		return b, true
	}
	if !add || f.n >= featWords*64 {
		return 0, false
	}
	f.caps[c] = f.n
	f.n++
	return f.n - 1, true
}

func (f *features) labelBit(k, v string, add bool) (int, bool) {
	if b, ok := f.labels[k][v]; ok {
		return b, true
	}
	if !add || f.n >= featWords*64 {
		return 0, false
	}
	m := f.labels[k]
	if m == nil {
		m = map[string]int{}
		f.labels[k] = m
	}
	m[v] = f.n
	f.n++
	return f.n - 1, true
}

func (f *features) full() bool { return f.n >= featWords*64 }

// of interns w's capabilities and labels and returns its bits.
func (f *features) of(w *Worker) featureSet {
	var s featureSet
	for _, c := range w.Capabilities {
		if b, ok := f.capBit(c, true); ok {
			s[b/64] |= 1 << (b % 64)
		}
	}
	for k, v := range w.Labels {
		if b, ok := f.labelBit(k, v, true); ok {
			s[b/64] |= 1 << (b % 64)
		}
	}
	return s
}

// requirement is a job's own requirements as bits.
type requirement struct {
	bits featureSet
	any  bool // the job requires something
	slow bool // some requirement has no bit: check the lists
	none bool // some requirement no worker has ever reported: nothing fits
}

func (f *features) require(job *Job) requirement {
	var q requirement
	for _, c := range job.Capabilities {
		q.any = true
		if b, ok := f.capBit(c, false); ok {
			q.bits[b/64] |= 1 << (b % 64)
		} else if f.full() {
			q.slow = true
		} else {
			q.none = true
		}
	}
	for k, v := range job.Labels {
		q.any = true
		if b, ok := f.labelBit(k, v, false); ok {
			q.bits[b/64] |= 1 << (b % 64)
		} else if f.full() {
			q.slow = true
		} else {
			q.none = true
		}
	}
	return q
}

// fits reports whether w meets job's own requirements q.
func (q *requirement) fits(w *Worker, job *Job) bool {
	switch {
	case !q.any:
		return true
	case q.none:
		return false
	case q.slow:
		return hasAll(w, job.Capabilities, job.Labels)
	}
	for i := range q.bits {
		if w.feat[i]&q.bits[i] != q.bits[i] {
			return false
		}
	}
	return true
}

func hasAll(w *Worker, caps []string, labels map[string]string) bool {
	for _, c := range caps {
		if !slices.Contains(w.Capabilities, c) {
			return false
		}
	}
	for k, v := range labels {
		if got, ok := w.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}
