package jobstore

import (
	"context"
	"hash/maphash"
	"sort"
	"sync"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Memory is an in-process Store: a map guarded by a mutex. Revisions come
// from one store-wide counter, so they increase with every write, like the
// stream sequences of a KV bucket. Records are shared, not copied: the store
// keeps the job given to Create or Update, and hands the same pointer to
// every reader (see Store). That keeps the per-job cost of the in-memory
// scheduler to a few map operations.
//
// Watchers. Every watcher has its own queue of records not yet delivered. A
// write appends the new record to every watcher's queue while it
// still holds the store's lock, so each watcher sees changes in revision
// order, and the write never waits for a watcher. If the queue already holds
// an undelivered record of the same job, that record is dropped: the new one
// supersedes it and goes to the end, which is exactly what a KV bucket
// keeping one revision per key does to a lagging watcher (see Store.Watch).
// A watcher's queue therefore never holds more than one record per job, so
// a stuck watcher costs memory bounded by the number of jobs, never blocks
// writers, and is never cut off; once it resumes it gets the latest record
// of every job that changed meanwhile. A watcher that keeps up gets every
// revision. Watch delivers the queue on the caller's goroutine, one record
// at a time, so fn is never called concurrently for one watcher and may
// itself call the store.
//
// Retention. A finished job (terminal state) is kept until
// DefaultMemoryRetain newer jobs have finished (NewMemoryRetaining sets
// another number), then forgotten, so that a long-running scheduler's memory
// stays bounded: the KV store's TTL does the same. A job_id submitted again
// after its job was forgotten makes a new job.
//
// Layout. Active jobs are in a map by id, small enough to stay in the CPU's
// cache. Finished jobs are in a ring, oldest first, indexed by a 64-bit
// hash of their id (random seed) that holds no pointers: with 100,000 jobs
// kept, a map by string id cost each job several cache misses (the key's
// bytes live elsewhere) and the garbage collector a scan of every key. Two
// ids with the same hash are as unlikely as 2^-64 per pair; should it happen,
// the older job is forgotten early, never confused with the newer.
//
// The zero Memory is ready to use, keeping every job; NewMemory is the
// conventional constructor.
type Memory struct {
	mu       sync.Mutex
	active   map[string]memEntry // jobs in a non-terminal state
	rev      uint64
	watchers map[*memWatcher]struct{}

	retain int         // finished jobs kept; 0: all
	ring   []doneEntry // finished jobs, oldest at next once len(ring) == retain
	next   int         // the oldest, once the ring is full
	index  idIndex     // hash of a finished job's id -> its place in ring

	testHash func(string) uint64 // replaces the hash in tests, to make collisions
}

// indexSeed seeds the hashes of finished jobs' ids, once per process.
var indexSeed = maphash.MakeSeed()

func (m *Memory) hashID(id string) uint64 {
	if m.testHash != nil {
		return m.testHash(id)
	}
	return maphash.String(indexSeed, id)
}

// doneEntry is a finished job in the ring, with the hash it is indexed by.
type doneEntry struct {
	memEntry
	hash uint64
}

// DefaultMemoryRetain is how many finished jobs NewMemory keeps.
const DefaultMemoryRetain = 100_000

type memEntry struct {
	job *pb.JobInfo // owned by the store; never handed out
	rev uint64
}

func (e memEntry) record() Record {
	return Record{Job: e.job, Revision: e.rev}
}

var _ Store = (*Memory)(nil)

// InProcess reports that nothing outside this process writes to the store,
// so a scheduler that writes all of it needs no watch.
func (m *Memory) InProcess() bool { return true }

// NewMemory returns an empty in-memory store.
func NewMemory() *Memory {
	return NewMemoryRetaining(DefaultMemoryRetain)
}

// NewMemoryRetaining returns an empty in-memory store that keeps the last
// retain finished jobs (0: all of them).
func NewMemoryRetaining(retain int) *Memory {
	return &Memory{retain: max(retain, 0)}
}

// Create implements Store.
func (m *Memory) Create(ctx context.Context, job *pb.JobInfo) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if err := CheckCreate(job); err != nil {
		return Record{}, err
	}
	stored := job
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.lookupLocked(stored.GetJobId()); ok {
		return e.record(), ErrExists
	}
	return m.writeLocked(stored, false).record(), nil
}

// Get implements Store. An id no store could hold is ErrInvalidID.
func (m *Memory) Get(ctx context.Context, id string) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if err := ValidID(id); err != nil {
		return Record{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.lookupLocked(id)
	if !ok {
		return Record{}, ErrNotFound
	}
	return e.record(), nil
}

// Update implements Store. The checks run in this order, the same as in
// every store: arguments and transition (CheckUpdate), then existence
// (ErrNotFound), then revision (ErrRevision).
func (m *Memory) Update(ctx context.Context, prev Record, next *pb.JobInfo) (Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, err
	}
	if err := CheckUpdate(prev, next); err != nil {
		return Record{}, err
	}
	stored := next
	id := prev.Job.GetJobId()
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.lookupLocked(id)
	if !ok {
		return Record{}, ErrNotFound
	}
	if e.rev != prev.Revision {
		return Record{}, ErrRevision
	}
	// prev is at the stored revision, so prev.Job should be the stored job.
	// If the caller edited prev.Job after reading it, the stored state is the
	// truth: check the transition from it too.
	if err := lifecycle.Check(id, e.job.GetState(), stored.GetState()); err != nil {
		return Record{}, err
	}
	return m.writeLocked(stored, true).record(), nil
}

// lookupLocked finds a job, active or finished. m.mu is held.
func (m *Memory) lookupLocked(id string) (memEntry, bool) {
	if e, ok := m.active[id]; ok {
		return e, true
	}
	if i, ok := m.index.get(m.hashID(id)); ok && m.ring[i].job.GetJobId() == id {
		return m.ring[i].memEntry, true
	}
	return memEntry{}, false
}

// finishLocked keeps e, a finished job, in the ring, forgetting the oldest
// finished job once more than m.retain have finished. m.mu is held.
func (m *Memory) finishLocked(e memEntry) {
	d := doneEntry{memEntry: e, hash: m.hashID(e.job.GetJobId())}
	if m.retain == 0 || len(m.ring) < m.retain {
		m.index.put(d.hash, len(m.ring))
		m.ring = append(m.ring, d)
		return
	}
	m.index.deleteIfAt(m.ring[m.next].hash, m.next) // unless a newer job took its hash
	m.ring[m.next] = d
	m.index.put(d.hash, m.next)
	m.next = (m.next + 1) % m.retain
}

// writeLocked stores job under a new revision, as active or finished
// (wasActive: it is in the active map now), and queues it for every
// watcher. m.mu is held.
func (m *Memory) writeLocked(job *pb.JobInfo, wasActive bool) memEntry {
	m.rev++
	e := memEntry{job: job, rev: m.rev}
	id := job.GetJobId()
	if lifecycle.Terminal(job.GetState()) {
		if wasActive {
			delete(m.active, id)
		}
		m.finishLocked(e)
	} else {
		if m.active == nil {
			m.active = make(map[string]memEntry)
		}
		m.active[id] = e
	}
	for w := range m.watchers {
		w.push(e.record())
	}
	return e
}

// allLocked returns every job kept. m.mu is held.
func (m *Memory) allLocked(keep func(memEntry) bool) []memEntry {
	all := make([]memEntry, 0, len(m.active)+len(m.ring))
	for _, e := range m.active {
		if keep(e) {
			all = append(all, e)
		}
	}
	for _, d := range m.ring {
		if keep(d.memEntry) {
			all = append(all, d.memEntry)
		}
	}
	return all
}

// List implements Store. Memory returns records in revision order (least
// recently written first); callers must not rely on that, other stores
// differ. A negative Limit is no limit.
func (m *Memory) List(ctx context.Context, f Filter) ([]Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	matched := m.allLocked(func(e memEntry) bool { return f.Match(e.job) })
	m.mu.Unlock()
	// Entries are immutable once written (a write replaces the entry), so
	// they can be read without the lock.
	sort.Slice(matched, func(i, j int) bool { return matched[i].rev < matched[j].rev })
	if f.Limit > 0 && len(matched) > f.Limit {
		matched = matched[:f.Limit]
	}
	out := make([]Record, len(matched))
	for i, e := range matched {
		out[i] = e.record()
	}
	return out, nil
}

// Watch implements Store; see Memory for how watchers are fed. Current
// records come first, in revision order. fn runs on the caller's goroutine.
// Watch returns nil once ctx has ended; it checks before every call of fn.
func (m *Memory) Watch(ctx context.Context, fn func(Record)) error {
	if ctx.Err() != nil {
		return nil
	}
	w := &memWatcher{wake: make(chan struct{}, 1), pos: make(map[string]int)}
	m.mu.Lock()
	initial := m.allLocked(func(memEntry) bool { return true })
	sort.Slice(initial, func(i, j int) bool { return initial[i].rev < initial[j].rev })
	for _, e := range initial {
		w.push(e.record())
	}
	if m.watchers == nil {
		m.watchers = make(map[*memWatcher]struct{})
	}
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.watchers, w)
		m.mu.Unlock()
	}()

	for {
		batch := w.take()
		for _, r := range batch {
			if ctx.Err() != nil {
				return nil
			}
			fn(r)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-w.wake:
		}
	}
}

// memWatcher is one watcher's queue of undelivered records, in revision
// order, at most one live record per job. Writers push while holding
// Memory.mu, so pushes are in revision order; the watcher takes the whole
// queue at once.
type memWatcher struct {
	mu    sync.Mutex
	queue []Record       // a superseded record is left as a hole (Job nil)
	pos   map[string]int // job id -> index of its live record in queue
	holes int
	wake  chan struct{} // capacity 1: "the queue may be non-empty"
}

func (w *memWatcher) push(r Record) {
	id := r.Job.GetJobId()
	w.mu.Lock()
	if i, ok := w.pos[id]; ok {
		w.queue[i] = Record{}
		w.holes++
	}
	w.pos[id] = len(w.queue)
	w.queue = append(w.queue, r)
	if w.holes > 64 && w.holes > len(w.queue)/2 {
		w.compact()
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// compact removes the holes. w.mu is held.
func (w *memWatcher) compact() {
	live := w.queue[:0]
	for _, r := range w.queue {
		if r.Job != nil {
			w.pos[r.Job.GetJobId()] = len(live)
			live = append(live, r)
		}
	}
	clear(w.queue[len(live):])
	w.queue = live
	w.holes = 0
}

func (w *memWatcher) take() []Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.holes > 0 {
		w.compact()
	}
	batch := w.queue
	w.queue = nil
	clear(w.pos)
	return batch
}
