package placement_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The engine's side of placement: heartbeats feed the registry, submissions
// the queues; a pool is drained by Next, Place and Start (or Park, or
// Block); results Release and Finish; a changed registry wakes the queues.
func Example() {
	cfg, err := placement.ParseConfig([]byte(`
pools:
  - name: gpu
    topics: ["job.llm.>"]
    capabilities: [gpu]
    max_pending: 100
tenants:
  - name: acme
    max_concurrent: 1
`))
	if err != nil {
		panic(err)
	}
	pools, err := placement.NewPools(cfg)
	if err != nil {
		panic(err)
	}
	reg := placement.NewRegistry(placement.RegistryOptions{Pools: pools})
	qs := placement.NewQueues(placement.QueueOptions{Pools: pools})

	// On a heartbeat:
	reg.Heartbeat(&pb.Heartbeat{
		WorkerId: "gpu-1", Topics: []string{"job.llm.>"}, Capabilities: []string{"gpu"},
		Capacity: 2, Direct: true, IntervalMs: 1000,
	}, time.Now())

	// On a submission: refuse (retryably) past a bound.
	for _, id := range []string{"a1", "a2", "b1"} {
		tenant := map[byte]string{'a': "acme", 'b': "bravo"}[id[0]]
		job := placement.NewJob(&pb.JobRequest{JobId: id, Topic: "job.llm.chat", Tenant: tenant}, pools)
		if err := qs.Push(job); errors.Is(err, placement.ErrQueueFull) {
			fmt.Println("refused:", err)
		}
	}

	// Draining a pool (on submit, on a release, when the registry's version
	// changed, on a tick):
	drain := func(q *placement.Queue) {
		for job := q.Next(); job != nil; job = q.Next() {
			d, err := reg.Place(job, nil) // counted against the worker at once
			switch {
			case err == nil:
				qs.Start(job)
				fmt.Println("dispatch", job.ID, "to", d.WorkerID, "on", d.Subject)
			case placement.PoolWide(err):
				q.Block(err.Error()) // nothing here can run now: every job says why
				return
			default:
				qs.Park(job, err.Error()) // this one cannot: let the others by
			}
		}
	}
	for _, q := range qs.Backlogged() {
		drain(q)
	}
	fmt.Println("a2 waits:", qs.Reason("a2"))

	// On a result (or refusal, lost lease, cancel of a running job):
	reg.Release("gpu-1", "a1")
	qs.Finish("a1")
	for _, q := range qs.Backlogged() {
		drain(q)
	}
	// Output:
	// dispatch a1 to gpu-1 on sys.worker.gpu-1.job
	// dispatch b1 to gpu-1 on sys.worker.gpu-1.job
	// a2 waits: tenant acme at its limit of 1
	// dispatch a2 to gpu-1 on sys.worker.gpu-1.job
}

// The registry can stand in for the engine's WorkerRegistry as it is.
var _ interface {
	UpdateHeartbeat(*pb.Heartbeat)
	Snapshot() map[string]*pb.Heartbeat
} = (*placement.Registry)(nil)
