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
// Layout. Active jobs are in a map by the hash of their id (below), small
// enough to stay in the CPU's cache. Finished jobs are in a ring, oldest first, indexed by a 64-bit
// hash of their id (random seed) that holds no pointers: with 100,000 jobs
// kept, a map by string id cost each job several cache misses (the key's
// bytes live elsewhere) and the garbage collector a scan of every key. Two
// ids with the same hash are as unlikely as 2^-64 per pair; should it happen,
// the older finished job is forgotten early, never confused with the newer
// (two active jobs keep both: the second goes to a map by id).
//
// Listing. Every write appends (revision, hash of the id, and for a finish
// its place in the ring) to a revision index, oldest first; an entry whose job has been written again or
// forgotten is stale, skipped, and dropped when stale entries are more than
// half of the index. ListPage walks it down from the token's revision, so a
// page examines at most PageQuery.Scan entries, whatever the store holds.
//
// The zero Memory is ready to use, keeping every job; NewMemory is the
// conventional constructor.
type Memory struct {
	mu        sync.Mutex
	active    map[uint64]memEntry // jobs in a non-terminal state, by hashID of the id
	activeDup map[string]memEntry // an active job whose hash another one holds (2^-64): by id
	rev       uint64
	watchers  map[*memWatcher]struct{}

	retain int         // finished jobs kept; 0: all
	ring   []doneEntry // finished jobs, oldest at next once len(ring) == retain
	next   int         // the oldest, once the ring is full
	index  idIndex     // hash of a finished job's id -> its place in ring

	revs      []revEntry // every write, in revision order; some stale
	staleRevs int        // entries of revs known to be stale

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

// revEntry is a write in the revision index: the revision, the hash of the
// job's id and, for a write that finished the job, its place in the ring
// plus one (0: the job was active). It holds no pointers (see Layout). With
// the place, an entry is resolved by reading the ring where the write went
// (entries of consecutive finishes are next to each other there), not by a
// random read of the id index.
type revEntry struct {
	rev, hash uint64
	ringPos   int
}

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
	h := m.hashID(stored.GetJobId())
	if e, ok := m.lookupHashLocked(stored.GetJobId(), h); ok {
		return e.record(), ErrExists
	}
	return m.writeLocked(stored, false, h).record(), nil
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
	h := m.hashID(id) // of next's id too (CheckUpdate)
	e, ok := m.lookupHashLocked(id, h)
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
	return m.writeLocked(stored, true, h).record(), nil
}

// lookupLocked finds a job, active or finished. m.mu is held.
func (m *Memory) lookupLocked(id string) (memEntry, bool) {
	return m.lookupHashLocked(id, m.hashID(id))
}

// lookupHashLocked is lookupLocked with the hash of id (hashID) given: a
// write that looks its job up first hashes the id once. m.mu is held.
func (m *Memory) lookupHashLocked(id string, h uint64) (memEntry, bool) {
	if e, ok := m.activeLocked(id, h); ok {
		return e, true
	}
	if i, ok := m.index.get(h); ok && m.ring[i].job.GetJobId() == id {
		return m.ring[i].memEntry, true
	}
	return memEntry{}, false
}

// activeLocked finds an active job by id and the hash of its id. m.mu is held.
func (m *Memory) activeLocked(id string, h uint64) (memEntry, bool) {
	if e, ok := m.active[h]; ok && e.job.GetJobId() == id {
		return e, true
	}
	if m.activeDup != nil {
		e, ok := m.activeDup[id]
		return e, ok
	}
	return memEntry{}, false
}

// putActiveLocked stores e, an active job. m.mu is held.
func (m *Memory) putActiveLocked(id string, h uint64, e memEntry) {
	if m.active == nil {
		m.active = make(map[uint64]memEntry)
	}
	if o, ok := m.active[h]; !ok || o.job.GetJobId() == id {
		m.active[h] = e
		return
	}
	if m.activeDup == nil {
		m.activeDup = make(map[string]memEntry)
	}
	m.activeDup[id] = e
}

// deleteActiveLocked removes an active job. m.mu is held.
func (m *Memory) deleteActiveLocked(id string, h uint64) {
	if o, ok := m.active[h]; ok && o.job.GetJobId() == id {
		delete(m.active, h)
		return
	}
	delete(m.activeDup, id)
}

// finishLocked keeps e, a finished job, in the ring, forgetting the oldest
// finished job once more than m.retain have finished. m.mu is held.
// It returns e's place in the ring.
func (m *Memory) finishLocked(e memEntry, h uint64) int {
	d := doneEntry{memEntry: e, hash: h}
	if m.retain == 0 || len(m.ring) < m.retain {
		m.index.put(d.hash, len(m.ring))
		m.ring = append(m.ring, d)
		return len(m.ring) - 1
	}
	pos := m.next
	m.index.deleteIfAt(m.ring[pos].hash, pos) // unless a newer job took its hash
	m.ring[pos] = d
	m.staleRevs++ // the forgotten job's index entry
	m.index.put(d.hash, pos)
	m.next = (pos + 1) % m.retain
	return pos
}

// writeLocked stores job under a new revision, as active or finished
// (wasActive: it is in the active map now), indexes the write and queues it
// for every watcher. h is hashID of its id. m.mu is held.
func (m *Memory) writeLocked(job *pb.JobInfo, wasActive bool, h uint64) memEntry {
	m.rev++
	e := memEntry{job: job, rev: m.rev}
	id := job.GetJobId()
	re := revEntry{rev: e.rev, hash: h}
	if lifecycle.Terminal(job.GetState()) {
		if wasActive {
			m.deleteActiveLocked(id, h)
		}
		re.ringPos = m.finishLocked(e, h) + 1
	} else {
		m.putActiveLocked(id, h, e)
	}
	if wasActive {
		m.staleRevs++ // the job's previous write
	}
	m.revs = append(m.revs, re)
	if m.staleRevs > minCompact && 2*m.staleRevs > len(m.revs) {
		m.compactRevsLocked()
	}
	for w := range m.watchers {
		w.push(e.record())
	}
	return e
}

// minCompact is the fewest stale index entries worth a compaction.
const minCompact = 1024

// resolveLocked returns the job an index entry stands for, if the entry is
// its latest write. m.mu is held.
func (m *Memory) resolveLocked(re revEntry) (memEntry, bool) {
	if re.ringPos > 0 { // a finish: its job is where it went, unless forgotten since
		if d := &m.ring[re.ringPos-1]; d.rev == re.rev {
			return d.memEntry, true
		}
		return memEntry{}, false
	}
	// An active job's write: a job that finished since has its finish's
	// revision in the ring, never this one.
	if e, ok := m.active[re.hash]; ok && e.rev == re.rev {
		return e, true
	}
	for _, e := range m.activeDup { // empty, but for a hash collision
		if e.rev == re.rev {
			return e, true
		}
	}
	return memEntry{}, false
}

// compactRevsLocked drops the stale entries of the revision index. It runs
// when they are more than half of it, so its cost is spread over as many
// writes as it removes entries. m.mu is held.
func (m *Memory) compactRevsLocked() {
	live := m.revs[:0]
	for _, re := range m.revs {
		if _, ok := m.resolveLocked(re); ok {
			live = append(live, re)
		}
	}
	m.revs = live
	m.staleRevs = 0
}

// allLocked returns every job kept. m.mu is held.
func (m *Memory) allLocked(keep func(memEntry) bool) []memEntry {
	all := make([]memEntry, 0, len(m.active)+len(m.activeDup)+len(m.ring))
	for _, e := range m.active {
		if keep(e) {
			all = append(all, e)
		}
	}
	for _, e := range m.activeDup {
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

// ListPage implements Store: it walks the revision index down from the
// token's revision, examining at most q's scan budget of entries, under the
// store's lock (about 50 ns an entry).
func (m *Memory) ListPage(ctx context.Context, q PageQuery) (Page, error) {
	if err := ctx.Err(); err != nil {
		return Page{}, err
	}
	before, err := DecodePageToken(q.Token)
	if err != nil {
		return Page{}, err
	}
	size, scan := q.Limits()
	var page Page
	m.mu.Lock()
	defer m.mu.Unlock()
	i := len(m.revs)
	if before > 0 {
		i = sort.Search(len(m.revs), func(j int) bool { return m.revs[j].rev >= before })
	}
	for n := 0; i > 0 && n < scan && len(page.Records) < size; n++ {
		i--
		e, ok := m.resolveLocked(m.revs[i])
		if ok && q.Filter.Match(e.job) {
			page.Records = append(page.Records, e.record())
		}
	}
	if i > 0 {
		page.Next = PageTokenBefore(m.revs[i].rev)
	}
	return page, nil
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
