package placement_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// clock is a test clock: it moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustPools(t testing.TB, cfg placement.Config) *placement.Pools {
	t.Helper()
	p, err := placement.NewPools(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// hb is a heartbeat of a worker serving job.echo with capacity n.
func hb(id string, capacity int32, opts ...func(*pb.Heartbeat)) *pb.Heartbeat {
	h := &pb.Heartbeat{WorkerId: id, Topics: []string{"job.echo"}, Capacity: capacity, IntervalMs: 1000, Confirms: true}
	for _, o := range opts {
		o(h)
	}
	return h
}

func caps(c ...string) func(*pb.Heartbeat) { return func(h *pb.Heartbeat) { h.Capabilities = c } }

func labels(kv ...string) func(*pb.Heartbeat) {
	return func(h *pb.Heartbeat) {
		h.Labels = map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Labels[kv[i]] = kv[i+1]
		}
	}
}

func topics(t ...string) func(*pb.Heartbeat) { return func(h *pb.Heartbeat) { h.Topics = t } }

func active(n int32) func(*pb.Heartbeat) { return func(h *pb.Heartbeat) { h.ActiveJobs = n } }

func load(cpu float32) func(*pb.Heartbeat) { return func(h *pb.Heartbeat) { h.CpuLoad = cpu } }

// rig is a registry and queues over one set of pools and one clock.
type rig struct {
	clock *clock
	pools *placement.Pools
	reg   *placement.Registry
	qs    *placement.Queues
}

func newRig(t testing.TB, cfg placement.Config) *rig {
	t.Helper()
	c := newClock()
	pools := mustPools(t, cfg)
	return &rig{
		clock: c, pools: pools,
		reg: placement.NewRegistry(placement.RegistryOptions{Pools: pools, Now: c.Now}),
		qs:  placement.NewQueues(placement.QueueOptions{Pools: pools, Now: c.Now}),
	}
}

func (r *rig) beat(hbs ...*pb.Heartbeat) {
	for _, h := range hbs {
		r.reg.Heartbeat(h, r.clock.Now())
	}
}

// job makes a job as the engine would from a request.
func (r *rig) job(id, topic string, opts ...func(*pb.JobRequest)) *placement.Job {
	req := &pb.JobRequest{JobId: id, Topic: topic}
	for _, o := range opts {
		o(req)
	}
	return placement.NewJob(req, r.pools)
}

func needs(c ...string) func(*pb.JobRequest) {
	return func(r *pb.JobRequest) { r.RequiredCapabilities = c }
}

func needsLabel(k, v string) func(*pb.JobRequest) {
	return func(r *pb.JobRequest) {
		if r.RequiredLabels == nil {
			r.RequiredLabels = map[string]string{}
		}
		r.RequiredLabels[k] = v
	}
}

func prio(p pb.JobPriority) func(*pb.JobRequest) { return func(r *pb.JobRequest) { r.Priority = p } }

func tenant(name string) func(*pb.JobRequest) { return func(r *pb.JobRequest) { r.Tenant = name } }

const (
	batch       = pb.JobPriority_JOB_PRIORITY_BATCH
	interactive = pb.JobPriority_JOB_PRIORITY_INTERACTIVE
	critical    = pb.JobPriority_JOB_PRIORITY_CRITICAL
)

// dispatch drains a pool as the engine does: Next, Place, then Start, Park
// or Block. It returns the jobs started, in order.
func (r *rig) dispatch(t testing.TB, pool string) []*placement.Job {
	t.Helper()
	var started []*placement.Job
	for {
		q := r.qs.Queue(pool)
		if q == nil {
			return started
		}
		job := q.Next()
		if job == nil {
			return started
		}
		_, err := r.reg.Place(job, nil)
		switch {
		case err == nil:
			r.qs.Start(job)
			started = append(started, job)
		case placement.PoolWide(err):
			q.Block(err.Error())
			return started
		default:
			r.qs.Park(job, err.Error())
		}
	}
}

// finish ends a started job: released from its worker, finished for its tenant.
func (r *rig) finish(job *placement.Job) {
	r.reg.Release("", job.ID)
	r.qs.Finish(job.ID)
	if q := r.qs.Queue(job.Pool.Name); q != nil {
		q.Wake()
	}
}
