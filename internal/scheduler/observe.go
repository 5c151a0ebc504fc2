package scheduler

import (
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Observer hears what the engine does, for metrics and traces. Its methods
// are called synchronously on the engine's goroutines, so they must be cheap
// and must not block (count with atomics, record a span). The jobs they get
// are the engine's: read them, do not keep or change them.
type Observer interface {
	// JobRecorded is called after every write of a job: prev is nil when
	// the job was just created (it may be created DISPATCHED, or DENIED).
	JobRecorded(prev, next *pb.JobInfo)
	// SafetyDecided is called for every decision the safety checker made
	// on a job (at admission, or when a job awaiting safety is checked
	// again), before the job is recorded.
	SafetyDecided(job *pb.JobRequest, traceID string, v safety.Verdict)
}

// observeRecorded tells o, if any, of a write.
func observeRecorded(o Observer, prev, next *pb.JobInfo) {
	if o != nil {
		o.JobRecorded(prev, next)
	}
}

// observeSafety tells o, if any, of a safety decision.
func observeSafety(o Observer, req *pb.JobRequest, traceID string, v safety.Verdict) {
	if o != nil {
		o.SafetyDecided(req, traceID, v)
	}
}

// PoolLoad is the jobs this replica tracks in one pool, and the live
// workers that serve it.
type PoolLoad struct {
	Pending, Running int // RUNNING counts DISPATCHED jobs too: handed to a worker
	Workers          int
	SlotsUsed        int // jobs the pool's workers report running (at most their capacity)
	SlotsFree        int
}

// DefaultPoolLabel names the pool of jobs and workers that name none.
const DefaultPoolLabel = "default"

// PoolLabel is the pool label of a job: its pool, or DefaultPoolLabel for
// a job in no pool or in its topic's implicit pool (a topic no configured
// pool matches; labelling those by topic would make a series per topic).
func PoolLabel(j *pb.JobInfo) string {
	if p := j.GetPool(); p != "" && p != j.GetRequest().GetTopic() {
		return p
	}
	return DefaultPoolLabel
}

// Load reports, by pool, the active jobs this replica tracks and the live
// workers it knows: read when metrics are scraped, not per job. A pool a
// worker names that the placement config does not have counts under
// "other", so the names stay bounded.
func (e *Engine) Load() map[string]PoolLoad {
	out := map[string]PoolLoad{}
	if e.placer.pools != nil {
		for _, p := range e.placer.pools.List() {
			out[p.Name] = PoolLoad{}
		}
	}
	label := func(name string) string {
		switch {
		case name == "" || name == DefaultPoolLabel:
			return DefaultPoolLabel
		case e.placer.pools != nil:
			if _, ok := e.placer.pools.Pool(name); ok {
				return name
			}
		}
		return "other"
	}
	jobLabel := func(j *pb.JobInfo) string { return label(PoolLabel(j)) }
	e.cache.each(false, func(rec jobstore.Record, _ time.Time) {
		j := rec.Job
		name := jobLabel(j)
		l := out[name]
		switch j.GetState() {
		case lifecycle.Pending:
			l.Pending++
		case lifecycle.Dispatched, lifecycle.Running:
			l.Running++
		}
		out[name] = l
	})
	for _, w := range e.placer.workers() {
		hb := w.GetHeartbeat()
		name := label(hb.GetPool())
		l := out[name]
		l.Workers++
		capacity := max(int(hb.GetCapacity()), 1)
		used := min(max(int(hb.GetActiveJobs()), int(w.GetAssigned())), capacity)
		l.SlotsUsed += used
		l.SlotsFree += capacity - used
		out[name] = l
	}
	return out
}

// Observers is an Observer that tells each of os in turn; nil ones are
// left out, and with none it is nil.
func Observers(os ...Observer) Observer {
	var list multiObserver
	for _, o := range os {
		if o != nil {
			list = append(list, o)
		}
	}
	switch len(list) {
	case 0:
		return nil
	case 1:
		return list[0]
	}
	return list
}

type multiObserver []Observer

func (m multiObserver) JobRecorded(prev, next *pb.JobInfo) {
	for _, o := range m {
		o.JobRecorded(prev, next)
	}
}

func (m multiObserver) SafetyDecided(req *pb.JobRequest, traceID string, v safety.Verdict) {
	for _, o := range m {
		o.SafetyDecided(req, traceID, v)
	}
}
