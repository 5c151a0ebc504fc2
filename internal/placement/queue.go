package placement

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// levels of priority: BATCH, INTERACTIVE, CRITICAL.
const levels = 3

// Queues holds the pending jobs of every pool, one Queue per pool, and the
// tenants' counts across them. It is safe for concurrent use; every method
// is O(log n) in the jobs of a pool (times the handful of pools a tenant has
// jobs in, for the tenant limits) and allocates nothing but the bookkeeping
// of a tenant or pool that had no job queued.
//
// Order. Next returns the job to place next in a pool:
//
//   - Priority first. A job's level is its priority (BATCH < INTERACTIVE <
//     CRITICAL) raised by one per AgingStep it has waited since Enqueued,
//     up to CRITICAL, so BATCH work is never starved: after two steps it
//     competes with CRITICAL work as an equal. The highest level with a job
//     of a tenant under its limit wins.
//   - Then fair sharing between tenants by weight, within that level:
//     start-time fair queueing over per-tenant queues, so a tenant with
//     weight w gets w shares of a saturated pool for each share of a
//     weight-1 tenant, however many jobs it floods; a tenant that had
//     nothing queued joins at the current virtual time (no credit saved up).
//   - Then the job that has waited longest at that level.
//
// Tenants at MaxConcurrent (jobs Started and not Finished, over every pool)
// are skipped until one of their jobs finishes.
//
// Bounds. Push refuses, with a *QueueFullError, a job past its pool's
// MaxPending, its tenant's MaxPending, the pool's TenantMaxPending, or the
// total MaxPendingTotal. Readmit (a job coming back: refused by its worker,
// a retry, a restart) is not bounded: it was admitted once.
type Queues struct {
	mu      sync.Mutex
	pools   *Pools
	now     func() time.Time
	step    int64
	queues  map[string]*Queue
	tenant  map[string]*tenantState
	jobs    map[string]*Job // queued, parked and started
	queued  int             // queued and parked, every pool
	queuedN atomic.Int64    // queued, for Len
	seq     uint64
}

// Queue is one pool's pending jobs. Its methods take the Queues' lock.
type Queue struct {
	qs      *Queues
	pool    *Pool
	pending int // queued and parked
	tqs     map[string]*tenantQueue
	active  [levels]tqHeap // tenants under their limit with a job queued at that level
	promo   [levels - 1]jobHeap
	parked  []*Job
	vclock  float64 // the start tag of the last job started
	block   string
}

type tenantState struct {
	name    string
	cfg     Tenant
	pending int // queued and parked, every pool
	running int // started, not finished
	limited bool
	queues  []*tenantQueue
}

// tenantQueue is one tenant's jobs in one pool.
type tenantQueue struct {
	t     *tenantState
	q     *Queue
	jobs  [levels]jobHeap
	n     int // queued and parked
	vtime float64
	id    uint64
	hidx  [levels]int // in q.active[level]; -1 when not there
}

// QueueOptions configure Queues.
type QueueOptions struct {
	// Pools resolves jobs without a Pool and gives the bounds, tenants and
	// aging step. Default: NewPools(Config{}).
	Pools *Pools
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// NewQueues returns empty queues.
func NewQueues(opts QueueOptions) *Queues {
	if opts.Pools == nil {
		opts.Pools, _ = NewPools(Config{})
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Queues{
		pools: opts.Pools, now: opts.Now, step: int64(opts.Pools.AgingStep()),
		queues: make(map[string]*Queue), tenant: make(map[string]*tenantState), jobs: make(map[string]*Job),
	}
}

// Push queues a new job, or refuses it with a *QueueFullError (errors.Is
// ErrQueueFull, retryable) whose message is the reason. Pushing a job
// already known is a no-op.
func (qs *Queues) Push(job *Job) error {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.jobs[job.ID] != nil {
		return nil
	}
	qs.prepare(job)
	pool := job.Pool
	if limit := qs.pools.cfg.MaxPendingTotal; qs.queued >= limit {
		return &QueueFullError{Bound: BoundTotal, Pool: pool.Name, Tenant: job.Tenant, Limit: limit}
	}
	q := qs.queues[pool.Name]
	if q != nil && q.pending >= pool.MaxPending {
		return &QueueFullError{Bound: BoundPool, Pool: pool.Name, Tenant: job.Tenant, Limit: pool.MaxPending}
	}
	t := qs.tenant[job.Tenant]
	if limit := qs.pools.Tenant(job.Tenant).MaxPending; limit > 0 && t != nil && t.pending >= limit {
		return &QueueFullError{Bound: BoundTenant, Pool: pool.Name, Tenant: job.Tenant, Limit: limit}
	}
	if limit := pool.TenantMaxPending; limit > 0 && q != nil {
		if tq := q.tqs[job.Tenant]; tq != nil && tq.n >= limit {
			return &QueueFullError{Bound: BoundTenantPool, Pool: pool.Name, Tenant: job.Tenant, Limit: limit}
		}
	}
	qs.admit(job)
	return nil
}

// Readmit queues a job again without checking the bounds: a started job
// whose worker refused it or whose attempt failed (it stops counting as
// running), or a job found pending after a restart. It keeps its Enqueued
// time, so its aging goes on. A job queued already is left as it is.
func (qs *Queues) Readmit(job *Job) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if known := qs.jobs[job.ID]; known != nil {
		if known.state != jobStarted {
			return
		}
		qs.finish(known)
		job = known
	}
	qs.prepare(job)
	qs.admit(job)
}

// prepare fills in what the job's owner may have left out.
func (qs *Queues) prepare(job *Job) {
	if job.Tenant == "" {
		job.Tenant = DefaultTenantName
	}
	if job.Pool == nil {
		job.Pool = qs.pools.Resolve(job.Topic)
	}
	if job.Enqueued.IsZero() {
		job.Enqueued = qs.now()
	}
	job.enq = job.Enqueued.UnixNano()
}

// admit queues a prepared job.
func (qs *Queues) admit(job *Job) {
	q := qs.queues[job.Pool.Name]
	if q == nil {
		q = &Queue{qs: qs, pool: job.Pool, tqs: make(map[string]*tenantQueue)}
		q.promo[0].k, q.promo[1].k = 1, 1
		for l := range q.active {
			q.active[l].level = l
		}
		qs.queues[job.Pool.Name] = q
	}
	t := qs.tenant[job.Tenant]
	if t == nil {
		t = &tenantState{name: job.Tenant, cfg: qs.pools.Tenant(job.Tenant)}
		qs.tenant[job.Tenant] = t
	}
	tq := q.tqs[job.Tenant]
	if tq == nil {
		qs.seq++
		tq = &tenantQueue{t: t, q: q, id: qs.seq, vtime: q.vclock, hidx: [levels]int{-1, -1, -1}}
		for l := range tq.jobs {
			tq.jobs[l].k = 0
		}
		q.tqs[job.Tenant] = tq
		t.queues = append(t.queues, tq)
	}
	if job.seq == 0 { // a job readmitted keeps its place among equals
		qs.seq++
		job.seq = qs.seq
	}
	job.q, job.tq, job.ten, job.reason = q, tq, t, ""
	qs.jobs[job.ID] = job
	tq.n++
	q.pending++
	t.pending++
	qs.queued++
	qs.queuedN.Store(int64(qs.queued))
	q.insert(job, qs.now().UnixNano())
}

// insert puts a job into its level's heaps, at the level it has aged to.
func (q *Queue) insert(job *Job, now int64) {
	base := job.baseLevel()
	level, entry := base, job.enq
	if step := q.qs.step; step > 0 && now > job.enq {
		up := min(int64(levels-1-base), (now-job.enq)/step)
		level, entry = base+int8(up), job.enq+up*step
	}
	job.level, job.entry, job.state = level, entry, jobQueued
	tq := job.tq
	tq.jobs[level].push(job)
	if level < levels-1 {
		q.promo[level].push(job)
	}
	q.activate(tq, int(level))
}

// detach takes a queued job out of its heaps.
func (q *Queue) detach(job *Job) {
	tq, l := job.tq, int(job.level)
	tq.jobs[l].remove(job.hidx[0])
	if l < levels-1 {
		q.promo[l].remove(job.hidx[1])
	}
	if tq.jobs[l].len() == 0 && tq.hidx[l] >= 0 {
		q.active[l].remove(tq.hidx[l])
	}
}

// activate enters tq in the tenants competing at level l, if it has a job
// there and its tenant is under its limit. A tenant that was not competing
// at l joins at the current virtual time: no credit for the time it had
// nothing queued.
func (q *Queue) activate(tq *tenantQueue, l int) {
	if tq.hidx[l] >= 0 || tq.t.limited || tq.jobs[l].len() == 0 {
		return
	}
	if tq.vtime < q.vclock {
		tq.vtime = q.vclock
		q.fixTenant(tq)
	}
	q.active[l].push(tq)
}

// fixTenant restores the heaps after tq's virtual time changed.
func (q *Queue) fixTenant(tq *tenantQueue) {
	for l := range tq.hidx {
		if i := tq.hidx[l]; i >= 0 {
			q.active[l].fix(i)
		}
	}
}

// promote raises the jobs that have waited an AgingStep at their level.
func (q *Queue) promote(now int64) {
	step := q.qs.step
	if step <= 0 {
		return
	}
	for l := range q.promo {
		h := &q.promo[l]
		for h.len() > 0 && h.s[0].entry+step <= now {
			j := h.s[0]
			q.detach(j)
			j.level++
			j.entry += step
			j.tq.jobs[j.level].push(j)
			if int(j.level) < levels-1 {
				q.promo[j.level].push(j)
			}
			q.activate(j.tq, int(j.level))
		}
	}
}

// Queue returns the queue of a pool, nil while it has no job.
func (qs *Queues) Queue(pool string) *Queue {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return qs.queues[pool]
}

// Backlogged returns the queues that are not blocked and have a job Next
// could return, by pool name: those the engine should drain.
func (qs *Queues) Backlogged() []*Queue {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	var out []*Queue
	for _, q := range qs.queues {
		if q.block != "" {
			continue
		}
		for l := range q.active {
			if q.active[l].len() > 0 {
				out = append(out, q)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pool.Name < out[j].pool.Name })
	return out
}

// Pool is the queue's pool.
func (q *Queue) Pool() *Pool { return q.pool }

// Len is the number of pending jobs of the pool, parked ones included.
func (q *Queue) Len() int {
	q.qs.mu.Lock()
	defer q.qs.mu.Unlock()
	return q.pending
}

// Next returns the job to place next (see Queues for the order), or nil
// when no queued job's tenant is under its limit. It does not take the job
// out: the caller then Starts it (placed), Parks it (it cannot be placed,
// but others may), or Blocks the queue (nothing in the pool can be placed).
func (q *Queue) Next() *Job {
	q.qs.mu.Lock()
	defer q.qs.mu.Unlock()
	q.promote(q.qs.now().UnixNano())
	for l := levels - 1; l >= 0; l-- {
		if h := &q.active[l]; h.len() > 0 {
			return h.s[0].jobs[l].s[0]
		}
	}
	return nil
}

// Start takes a queued (or parked) job out of its queue: it was placed. It
// counts as running for its tenant's limit until Finish, Remove or Readmit.
func (qs *Queues) Start(job *Job) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.jobs[job.ID] != job || (job.state != jobQueued && job.state != jobParked) {
		return
	}
	q, tq, t := job.q, job.tq, job.tq.t
	q.take(job)
	// Start-time fair queueing: the virtual clock moves to the start tag of
	// the job started, and its tenant's next tag is one share later.
	q.vclock = max(q.vclock, tq.vtime)
	tq.vtime += 1 / float64(t.cfg.Weight)
	q.fixTenant(tq)
	q.block = ""
	qs.started(job, t)
	qs.tidy(q, tq)
}

// StartNow starts a new job without queueing it, when nothing can be ahead
// of it: its pool has no job pending and its tenant is under its
// concurrency limit. It reports whether it did; if not, Push it. A started
// job counts as running for its tenant, as after Start. The caller then
// places it, and Removes it if that fails.
func (qs *Queues) StartNow(job *Job) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.jobs[job.ID] != nil {
		return false
	}
	qs.prepare(job)
	if q := qs.queues[job.Pool.Name]; q != nil && q.pending > 0 {
		return false
	}
	t := qs.tenant[job.Tenant]
	if t == nil {
		t = &tenantState{name: job.Tenant, cfg: qs.pools.Tenant(job.Tenant)}
		qs.tenant[job.Tenant] = t
	} else if t.limited {
		return false
	}
	if m := t.cfg.MaxConcurrent; m > 0 && t.running >= m {
		qs.tidyTenant(t)
		return false
	}
	job.q, job.tq, job.ten, job.reason = nil, nil, t, ""
	qs.jobs[job.ID] = job
	qs.started(job, t)
	return true
}

// started counts job as running for its tenant t, and stops offering the
// tenant's jobs once it reaches its limit.
func (qs *Queues) started(job *Job, t *tenantState) {
	job.state = jobStarted
	t.running++
	if m := t.cfg.MaxConcurrent; m > 0 && t.running >= m && !t.limited {
		t.limited = true
		for _, tq := range t.queues {
			for l, i := range tq.hidx {
				if i >= 0 {
					tq.q.active[l].remove(i)
				}
			}
		}
	}
}

// take removes a queued or parked job from its queue's structures and counts.
func (q *Queue) take(job *Job) {
	if job.state == jobParked {
		q.unpark(job)
	} else {
		q.detach(job)
	}
	job.tq.n--
	job.tq.t.pending--
	q.pending--
	q.qs.queued--
	q.qs.queuedN.Store(int64(q.qs.queued))
}

// tidy forgets a tenant queue, a tenant and an implicit pool's queue once
// they have nothing left, so that memory follows the jobs.
func (qs *Queues) tidy(q *Queue, tq *tenantQueue) {
	t := tq.t
	if tq.n == 0 {
		delete(q.tqs, t.name)
		for i, x := range t.queues {
			if x == tq {
				t.queues[i] = t.queues[len(t.queues)-1]
				t.queues[len(t.queues)-1] = nil
				t.queues = t.queues[:len(t.queues)-1]
				break
			}
		}
	}
	qs.tidyTenant(t)
	if q.pending == 0 && q.pool.Implicit() && qs.queues[q.pool.Name] == q {
		delete(qs.queues, q.pool.Name)
	}
}

// Finish counts a started job as done: its tenant runs one job fewer. It
// forgets the job.
func (qs *Queues) Finish(jobID string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if job := qs.jobs[jobID]; job != nil && job.state == jobStarted {
		qs.finish(job)
		delete(qs.jobs, jobID)
		qs.tidyTenant(job.ten)
	}
}

func (qs *Queues) finish(job *Job) {
	t := job.ten
	t.running--
	job.state = jobNew
	if t.limited && t.running < t.cfg.MaxConcurrent {
		t.limited = false
		for _, tq := range t.queues {
			for l := range tq.jobs {
				tq.q.activate(tq, l)
			}
		}
	}
}

func (qs *Queues) tidyTenant(t *tenantState) {
	if t.pending == 0 && t.running == 0 && qs.tenant[t.name] == t && t.name != DefaultTenantName {
		delete(qs.tenant, t.name)
	}
}

// Remove forgets a job in any state (cancelled, or finished without a
// result); a started one stops counting as running. It reports whether the
// job was known.
func (qs *Queues) Remove(jobID string) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	job := qs.jobs[jobID]
	if job == nil {
		return false
	}
	delete(qs.jobs, jobID)
	switch job.state {
	case jobStarted:
		qs.finish(job)
		qs.tidyTenant(job.ten)
	case jobQueued, jobParked:
		job.q.take(job)
		job.state = jobNew
		qs.tidy(job.q, job.tq)
	}
	return true
}

// Park sets a queued job aside, with the reason it cannot be placed (a
// job-specific placement error), so that Next offers the pool's other
// jobs. Wake queues it again. It keeps counting against the bounds.
func (qs *Queues) Park(job *Job, reason string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if qs.jobs[job.ID] != job {
		return
	}
	switch job.state {
	case jobParked:
		job.reason = reason
	case jobQueued:
		q := job.q
		q.detach(job)
		job.state, job.reason = jobParked, reason
		job.hidx[1] = len(q.parked)
		q.parked = append(q.parked, job)
	}
}

func (q *Queue) unpark(job *Job) {
	i, last := job.hidx[1], len(q.parked)-1
	q.parked[i] = q.parked[last]
	q.parked[i].hidx[1] = i
	q.parked[last] = nil
	q.parked = q.parked[:last]
	job.reason = ""
}

// Block records why nothing in the pool can be placed now (a PoolWide
// placement error): every queued job of the pool reports it as its reason
// until Wake or a Start.
func (q *Queue) Block(reason string) {
	q.qs.mu.Lock()
	defer q.qs.mu.Unlock()
	q.block = reason
}

// Blocked returns the reason Block recorded, "" when not blocked.
func (q *Queue) Blocked() string {
	q.qs.mu.Lock()
	defer q.qs.mu.Unlock()
	return q.block
}

// Wake clears the pool's block and queues its parked jobs again, at the
// level they have aged to: call it when the registry changed (Version).
func (q *Queue) Wake() {
	q.qs.mu.Lock()
	defer q.qs.mu.Unlock()
	q.block = ""
	now := q.qs.now().UnixNano()
	for len(q.parked) > 0 {
		j := q.parked[len(q.parked)-1]
		q.unpark(j)
		q.insert(j, now)
	}
}

// WakeAll wakes every queue.
func (qs *Queues) WakeAll() {
	qs.mu.Lock()
	qs2 := make([]*Queue, 0, len(qs.queues))
	for _, q := range qs.queues {
		if q.block != "" || len(q.parked) > 0 {
			qs2 = append(qs2, q)
		}
	}
	qs.mu.Unlock()
	for _, q := range qs2 {
		q.Wake()
	}
}

// Len is the number of pending jobs over every pool, parked ones included.
func (qs *Queues) Len() int {
	return int(qs.queuedN.Load()) // without the lock: asked after every job
}

// Running is the number of a tenant's jobs started and not finished.
func (qs *Queues) Running(tenant string) int {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if t := qs.tenant[tenant]; t != nil {
		return t.running
	}
	return 0
}

// Reason says why a pending job is not running: parked with a placement
// reason, its tenant at its limit, its pool blocked, or waiting its turn.
// "" for a job not pending here.
func (qs *Queues) Reason(jobID string) string {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	job := qs.jobs[jobID]
	if job == nil || (job.state != jobQueued && job.state != jobParked) {
		return ""
	}
	switch t := job.tq.t; {
	case job.state == jobParked:
		return job.reason
	case t.limited:
		return (&TenantLimitError{Tenant: t.name, Limit: t.cfg.MaxConcurrent}).Error()
	case job.q.block != "":
		return job.q.block
	}
	return "waiting in pool " + job.q.pool.Name
}

// Job returns a job known to the queues: pending or started.
func (qs *Queues) Job(jobID string) (*Job, bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	j := qs.jobs[jobID]
	return j, j != nil
}

// ---- heaps ----

// jobHeap orders jobs by when they entered their level, then push order.
// k selects the index slot of Job.hidx it maintains.
type jobHeap struct {
	s []*Job
	k int
}

func jobLess(a, b *Job) bool { return a.entry < b.entry || (a.entry == b.entry && a.seq < b.seq) }

func (h *jobHeap) len() int { return len(h.s) }

func (h *jobHeap) push(j *Job) {
	h.s = append(h.s, j)
	j.hidx[h.k] = len(h.s) - 1
	h.up(len(h.s) - 1)
}

func (h *jobHeap) remove(i int) {
	last := len(h.s) - 1
	if i != last {
		h.swap(i, last)
	}
	h.s[last] = nil
	h.s = h.s[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
}

func (h *jobHeap) swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].hidx[h.k] = i
	h.s[j].hidx[h.k] = j
}

func (h *jobHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !jobLess(h.s[i], h.s[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *jobHeap) down(i int) bool {
	start, n := i, len(h.s)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && jobLess(h.s[r], h.s[l]) {
			m = r
		}
		if !jobLess(h.s[m], h.s[i]) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}

// tqHeap orders tenant queues by virtual time, then age. level selects the
// index slot of tenantQueue.hidx it maintains.
type tqHeap struct {
	s     []*tenantQueue
	level int
}

func tqLess(a, b *tenantQueue) bool { return a.vtime < b.vtime || (a.vtime == b.vtime && a.id < b.id) }

func (h *tqHeap) len() int { return len(h.s) }

func (h *tqHeap) push(t *tenantQueue) {
	h.s = append(h.s, t)
	t.hidx[h.level] = len(h.s) - 1
	h.up(len(h.s) - 1)
}

func (h *tqHeap) remove(i int) {
	last := len(h.s) - 1
	h.s[i].hidx[h.level] = -1
	if i != last {
		h.s[i] = h.s[last]
		h.s[i].hidx[h.level] = i
	}
	h.s[last] = nil
	h.s = h.s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h *tqHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h *tqHeap) swap(i, j int) {
	h.s[i], h.s[j] = h.s[j], h.s[i]
	h.s[i].hidx[h.level] = i
	h.s[j].hidx[h.level] = j
}

func (h *tqHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !tqLess(h.s[i], h.s[p]) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h *tqHeap) down(i int) bool {
	start, n := i, len(h.s)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && tqLess(h.s[r], h.s[l]) {
			m = r
		}
		if !tqLess(h.s[m], h.s[i]) {
			break
		}
		h.swap(i, m)
		i = m
	}
	return i > start
}
