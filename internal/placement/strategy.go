package placement

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Names of the built-in strategies.
const (
	// StrategyNaive is the design document's: the subject is the topic and
	// the NATS queue group of its workers picks one. No worker is chosen or
	// counted, and nothing is ever unplaceable.
	StrategyNaive = "naive"
	// StrategyLeastLoaded picks, among the live, non-draining workers that
	// serve the job's topic in its pool and meet every requirement, the one
	// with the most free capacity, then the lowest CPU/GPU load.
	StrategyLeastLoaded = "least-loaded"
)

// Decision is where a job goes.
type Decision struct {
	// WorkerID is the worker chosen, and counted against; "" when the bus
	// picks (a queue group).
	WorkerID string
	// Subject to publish the job on: the worker's own subject
	// (sys.worker.<id>.job) when it takes jobs directly, else the topic.
	Subject string
}

// Strategy decides where one job goes, over the candidates the registry
// hands it. It runs under the registry's lock: it must be quick, must not
// call the Registry, and must not keep the Candidates or the Workers they
// show. One instance serves every pool that names it, concurrently from
// several registries: keep no per-decision state in it. A job that cannot be
// placed gets an error from Candidates.Explain (or one of this package's
// error types), whose message is the reason the job waits.
type Strategy interface {
	Place(job *Job, c Candidates) (Decision, error)
}

// WorkerBlind is implemented by strategies that do not look at the workers
// (naive): Registry.Place then calls them without taking its lock or
// building candidates.
type WorkerBlind interface {
	WorkerBlind() bool
}

var strategies = struct {
	sync.RWMutex
	m map[string]Strategy
}{m: map[string]Strategy{
	StrategyNaive:       Naive{},
	StrategyLeastLoaded: LeastLoaded{},
}}

// RegisterStrategy makes a strategy available by name to the config
// (pools' strategy, default_strategy), without touching the engine. Call it
// before NewPools, typically from an init function.
func RegisterStrategy(name string, s Strategy) error {
	if name == "" || s == nil {
		return errors.New("placement: a strategy needs a name and an implementation")
	}
	strategies.Lock()
	defer strategies.Unlock()
	if _, taken := strategies.m[name]; taken {
		return fmt.Errorf("placement: strategy %q is already registered", name)
	}
	strategies.m[name] = s
	return nil
}

// LookupStrategy returns the strategy registered under name.
func LookupStrategy(name string) (Strategy, bool) { return lookupStrategy(name) }

func lookupStrategy(name string) (Strategy, bool) {
	strategies.RLock()
	defer strategies.RUnlock()
	s, ok := strategies.m[name]
	return s, ok
}

// StrategyNames lists the registered strategies, sorted.
func StrategyNames() []string {
	strategies.RLock()
	defer strategies.RUnlock()
	names := make([]string, 0, len(strategies.m))
	for n := range strategies.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Naive is the design document's strategy: the subject is the topic, and
// the workers subscribed to it share the job through their queue group.
type Naive struct{}

// Place implements Strategy.
func (Naive) Place(job *Job, _ Candidates) (Decision, error) {
	return Decision{Subject: job.Topic}, nil
}

// WorkerBlind implements WorkerBlind, and the engine's SchedulingStrategy.
func (Naive) WorkerBlind() bool { return true }

// PickSubject is Naive as the design document's SchedulingStrategy (the
// engine's seam, scheduler.NaiveStrategy): the subject is the topic, which
// must be a literal subject under job. (wire.ValidateTopic: no wildcards,
// no empty tokens), so that a job is never published onto a system subject
// such as sys.job.submit, which would loop. It does not look at workers.
func (Naive) PickSubject(req *pb.JobRequest, _ map[string]*pb.Heartbeat) (string, error) {
	topic := req.GetTopic()
	if err := wire.ValidateTopic(topic); err != nil {
		return "", err
	}
	return topic, nil
}

// LoadBand: loads within the same band of percentage points count as equal,
// so that measurement noise does not decide between idle workers and the
// rotation spreads a burst instead.
const LoadBand = 5

// LeastLoaded places a job on the candidate with the most free capacity
// (Capacity minus the larger of the jobs placed on it and the jobs it
// reports), then the lowest load band (the larger of CPU load and GPU
// utilisation, in LoadBand points); among equals, the first from a start that
// rotates with every decision, so that a burst spreads over equal workers.
// The subject is the worker's own when it is direct, else the topic. When no
// topic-aware worker serves the topic but v1.0 workers (which report no
// topics) are live, it falls back to naive.
type LeastLoaded struct{}

// Place implements Strategy. It reads the candidate slots directly: the
// same as comparing Free, then Load in LoadBand bands, and checking Fits,
// in a scan of one slice with one comparison per worker in the common case.
func (LeastLoaded) Place(job *Job, c Candidates) (Decision, error) {
	best := -1
	if c.set != nil {
		items, now, off := c.set.items, c.now, c.off
		var bestRank uint32
		scan := func(from, to int) {
			for i := from; i < to; i++ {
				sl := &items[i]
				if sl.rank > bestRank && sl.until > now && c.Fits(i) {
					best, bestRank = i, sl.rank
				}
			}
		}
		scan(off, len(items))
		scan(0, off)
	}
	if best < 0 {
		if c.LiveCount() == 0 && c.LegacyWorkers() > 0 {
			return Decision{Subject: job.Topic}, nil
		}
		return Decision{}, c.Explain()
	}
	w := c.Worker(best)
	return Decision{WorkerID: w.ID, Subject: w.Subject(job)}, nil
}

// Candidates are the workers that can take jobs of one job's topic in its
// pool: they serve the topic, are not reserved for another pool, and have
// the pool's capabilities and labels. Some may have stopped heartbeating
// since (Free is 0) or be draining; the job's own requirements are checked
// with Fits. Index i runs from 0 to Len()-1.
type Candidates struct {
	r   *Registry
	set *candSet
	job *Job
	req requirement
	now int64
	off int
}

// Len is the number of candidates.
func (c Candidates) Len() int {
	if c.set == nil {
		return 0
	}
	return len(c.set.items)
}

// Worker returns candidate i. Read only, and only during Place.
func (c Candidates) Worker(i int) *Worker { return c.set.items[i].w }

// Free is how many more jobs candidate i can take now: 0 when it stopped
// heartbeating, drains or is full.
func (c Candidates) Free(i int) int {
	sl := &c.set.items[i]
	if sl.until <= c.now {
		return 0
	}
	return int(sl.free)
}

// Load is candidate i's load, the larger of CPU load and GPU utilisation (0-100).
func (c Candidates) Load(i int) float32 { return c.set.items[i].load }

// Fits reports whether candidate i meets the job's own capabilities and labels.
func (c Candidates) Fits(i int) bool {
	if !c.req.any {
		return true
	}
	return c.req.fits(c.set.items[i].w, c.job)
}

// Offset is where a scan should start for ties to rotate between decisions.
func (c Candidates) Offset() int { return c.off }

// Now is the time of the decision.
func (c Candidates) Now() time.Time { return time.Unix(0, c.now) }

// Pool is the job's pool.
func (c Candidates) Pool() *Pool {
	if c.set == nil {
		return c.job.Pool
	}
	return c.set.pool
}

// LiveCount is the number of candidates still heartbeating and not draining.
func (c Candidates) LiveCount() int {
	n := 0
	for i := range c.Len() {
		if sl := &c.set.items[i]; sl.until > c.now && !sl.w.Draining {
			n++
		}
	}
	return n
}

// LegacyWorkers is the number of workers that report no topics (v1.0
// workers): they may serve any topic, through its queue group.
func (c Candidates) LegacyWorkers() int {
	if c.r == nil {
		return 0
	}
	return c.r.legacy
}

// Explain returns why no candidate can take the job now, as the typed error
// a strategy returns: *NoWorkerError (ErrUnplaceable) when none qualifies,
// *PoolFullError (ErrWait) when those that do are all busy. It returns nil
// when some candidate could take it.
func (c Candidates) Explain() error {
	if c.set == nil {
		return nil
	}
	job, set, r := c.job, c.set, c.r
	var live, draining, fitting, fitBusy, fitSlots int
	var fitOne *Worker // the one worker that fits, when there is one
	for i := range set.items {
		sl := &set.items[i]
		if sl.until <= c.now {
			continue
		}
		if sl.w.Draining {
			draining++
			continue
		}
		live++
		if c.req.fits(sl.w, job) {
			fitting++
			fitOne = sl.w
			fitSlots += sl.w.Capacity
			fitBusy += sl.w.Capacity - int(sl.free)
		}
	}
	switch {
	case live == 0:
		return r.noWorker(job, set, draining > 0, c.now)
	case fitting == 0:
		return c.missing()
	case fitBusy < fitSlots:
		return nil
	}
	one := ""
	if fitting == 1 {
		one = fitOne.ID
	}
	busy, slots := usage(set, c.now)
	if busy < slots { // others have room, not those that fit the job
		return &PoolFullError{Pool: set.pool.Name, Busy: fitBusy, Slots: fitSlots, Requirement: job.requirement()}
	}
	e := &PoolFullError{Pool: set.pool.Name, Busy: busy, Slots: slots}
	if live == 1 {
		e.Worker = one
	}
	if ps := r.poolSet(set); ps != set {
		if pb, psl := usage(ps, c.now); pb < psl {
			e.Topic = job.Topic // other topics of the pool have room
			e.Worker = ""
			return e
		} else {
			e.Busy, e.Slots = pb, psl
			if psl != slots {
				e.Worker = "" // more workers in the pool than this one
			}
		}
	}
	e.PoolWide = true
	return e
}

// usage sums the busy and total slots of a set's live, non-draining workers.
func usage(s *candSet, now int64) (busy, slots int) {
	for i := range s.items {
		sl := &s.items[i]
		if sl.until <= now || sl.w.Draining {
			continue
		}
		slots += sl.w.Capacity
		busy += sl.w.Capacity - int(sl.free)
	}
	return busy, slots
}

// missing explains why no live candidate meets the job's own requirements:
// the first no candidate has, or all of them together.
func (c Candidates) missing() error {
	job, set := c.job, c.set
	has := func(ok func(w *Worker) bool) bool {
		for i := range set.items {
			if sl := &set.items[i]; sl.until > c.now && !sl.w.Draining && ok(sl.w) {
				return true
			}
		}
		return false
	}
	e := &NoWorkerError{Pool: set.pool.Name, Topic: job.Topic}
	for _, cp := range job.Capabilities {
		if !has(func(w *Worker) bool { return hasAll(w, []string{cp}, nil) }) {
			e.Capability = cp
			return e
		}
	}
	for _, k := range sortedKeys(job.Labels) {
		v := job.Labels[k]
		if !has(func(w *Worker) bool { got, ok := w.Labels[k]; return ok && got == v }) {
			e.Label = k + "=" + v
			return e
		}
	}
	e.Requirement = job.requirement()
	return e
}

// noWorker explains why no live worker can take jobs of set's topic.
func (r *Registry) noWorker(job *Job, set *candSet, draining bool, now int64) error {
	pool := set.pool
	e := &NoWorkerError{Pool: pool.Name, Topic: job.Topic}
	_, poolSlots := usage(r.poolSet(set), now)
	e.PoolWide = poolSlots == 0
	if draining {
		e.Draining = true
		return e
	}
	var serving []*Worker
	for _, w := range r.workers {
		if w.until > now && !w.Draining && serves(w, job.Topic) {
			serving = append(serving, w)
		}
	}
	if len(serving) == 0 {
		return e
	}
	anyHas := func(ok func(w *Worker) bool) bool {
		for _, w := range serving {
			if ok(w) {
				return true
			}
		}
		return false
	}
	for _, cp := range pool.Capabilities {
		if !anyHas(func(w *Worker) bool { return hasAll(w, []string{cp}, nil) }) {
			e.Capability = cp
			return e
		}
	}
	for _, k := range pool.labelKey {
		v := pool.Labels[k]
		if !anyHas(func(w *Worker) bool { got, ok := w.Labels[k]; return ok && got == v }) {
			e.Label = k + "=" + v
			return e
		}
	}
	if !anyHas(func(w *Worker) bool { return w.Pool == "" || w.Pool == pool.Name }) {
		e.OtherPools = true
		return e
	}
	e.Requirement = poolRequirement(pool)
	return e
}

func poolRequirement(p *Pool) string {
	j := &Job{Capabilities: p.Capabilities, Labels: p.Labels}
	return j.requirement()
}
