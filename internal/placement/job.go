package placement

import (
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Job is what placement knows of a job. The exported fields are set by
// NewJob (or the caller) before the job is pushed and not changed after;
// the rest is the queue's bookkeeping.
type Job struct {
	ID, Topic string
	// Tenant; "" is DefaultTenantName.
	Tenant string
	// Priority is BATCH, INTERACTIVE or CRITICAL; UNSPECIFIED counts as
	// INTERACTIVE (see NormalizePriority).
	Priority pb.JobPriority
	// Capabilities and Labels the job itself requires, on top of its pool's.
	Capabilities []string
	Labels       map[string]string
	// Pool the job belongs to (Pools.Resolve of its topic).
	Pool *Pool
	// Enqueued is when the job was first queued: its aging counts from
	// here, across retries. Zero: set by Push.
	Enqueued time.Time

	// Queue bookkeeping, guarded by the Queues' lock.
	state  jobState
	q      *Queue
	tq     *tenantQueue
	ten    *tenantState // its tenant: set when queued or started
	level  int8         // effective priority level now: 0 BATCH .. 2 CRITICAL
	entry  int64        // when it entered that level, unix nanoseconds
	enq    int64        // Enqueued, unix nanoseconds
	seq    uint64       // push order: ties
	hidx   [2]int       // in its tenant queue's level heap; in the pool's promotion heap, or the parked list
	reason string       // why it is parked

	// Registry bookkeeping, guarded by the Registry's lock: the job is
	// counted against worker (nil: not counted) since at, and is
	// worker.placed[pos]; seen is the reconcile epoch its worker's
	// heartbeat last listed it in.
	worker *Worker
	at     int64
	seen   uint64
	pos    int32
}

type jobState uint8

const (
	jobNew jobState = iota
	jobQueued
	jobParked
	jobStarted
)

// NewJob makes the Job of a request, in the pool its topic resolves to. It
// shares the request's slices and maps: do not modify them after.
func NewJob(req *pb.JobRequest, pools *Pools) *Job {
	return NewJobIn(req, pools.Resolve(req.GetTopic()))
}

// NewJobIn is NewJob for a caller that resolved the request's pool already
// (Pools.Resolve of its topic): it saves the second resolution.
func NewJobIn(req *pb.JobRequest, pool *Pool) *Job {
	tenant := req.GetTenant()
	if tenant == "" {
		tenant = DefaultTenantName
	}
	return &Job{
		ID:           req.GetJobId(),
		Topic:        req.GetTopic(),
		Tenant:       tenant,
		Priority:     NormalizePriority(req.GetPriority()),
		Capabilities: req.GetRequiredCapabilities(),
		Labels:       req.GetRequiredLabels(),
		Pool:         pool,
	}
}

// NormalizePriority maps UNSPECIFIED (a client that did not say, such as the
// design document's) and unknown values to INTERACTIVE: the ordinary class,
// ahead of BATCH work and behind CRITICAL.
func NormalizePriority(p pb.JobPriority) pb.JobPriority {
	switch p {
	case pb.JobPriority_JOB_PRIORITY_BATCH, pb.JobPriority_JOB_PRIORITY_INTERACTIVE, pb.JobPriority_JOB_PRIORITY_CRITICAL:
		return p
	}
	return pb.JobPriority_JOB_PRIORITY_INTERACTIVE
}

// baseLevel is the job's priority as a level, 0 (BATCH) to 2 (CRITICAL).
func (j *Job) baseLevel() int8 { return int8(NormalizePriority(j.Priority)) - 1 }

// requirement describes the job's own requirements for a reason:
// "capability gpu and label region=eu".
func (j *Job) requirement() string {
	s := ""
	for _, c := range j.Capabilities {
		if s != "" {
			s += " and "
		}
		s += "capability " + c
	}
	for _, k := range sortedKeys(j.Labels) {
		if s != "" {
			s += " and "
		}
		s += "label " + k + "=" + j.Labels[k]
	}
	return s
}
