package placement_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// benchRegistry has n live workers serving job.echo, with spare capacity and
// varied load, and heartbeats that last the whole benchmark.
func benchRegistry(b *testing.B, n int, cfg placement.Config) (*placement.Registry, *placement.Pools) {
	b.Helper()
	pools := mustPools(b, cfg)
	now := time.Unix(1_700_000_000, 0)
	reg := placement.NewRegistry(placement.RegistryOptions{Pools: pools, Now: func() time.Time { return now }})
	for i := range n {
		reg.Heartbeat(&pb.Heartbeat{
			WorkerId: fmt.Sprintf("worker-%05d", i), Topics: []string{"job.echo"},
			Capabilities: []string{"echo", []string{"gpu", "cpu"}[i%2]},
			Labels:       map[string]string{"region": []string{"eu", "us", "ap"}[i%3]},
			Capacity:     8, CpuLoad: float32(i % 100), IntervalMs: 3_600_000,
		}, now)
	}
	return reg, pools
}

// A least-loaded placement decision (and the Assign it makes at once, and
// the Release of the job) over n live workers.
func BenchmarkPlace(b *testing.B) {
	for _, n := range []int{10, 1000, 10_000} {
		for _, tc := range []struct {
			name string
			req  *pb.JobRequest
		}{
			{"plain", &pb.JobRequest{JobId: "job-1", Topic: "job.echo"}},
			{"requirements", &pb.JobRequest{JobId: "job-1", Topic: "job.echo", RequiredCapabilities: []string{"gpu"}, RequiredLabels: map[string]string{"region": "eu"}}},
		} {
			b.Run(fmt.Sprintf("workers=%d/%s", n, tc.name), func(b *testing.B) {
				reg, pools := benchRegistry(b, n, placement.Config{})
				job := placement.NewJob(tc.req, pools)
				// The first decision on a topic builds its candidate slice.
				if d, err := reg.Place(job, nil); err == nil {
					reg.Release(d.WorkerID, job.ID)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					d, err := reg.Place(job, nil)
					if err != nil {
						b.Fatal(err)
					}
					reg.Release(d.WorkerID, job.ID)
				}
			})
		}
	}
}

// A heartbeat from a worker already known, unchanged but for its load.
func BenchmarkHeartbeat(b *testing.B) {
	reg, _ := benchRegistry(b, 1000, placement.Config{})
	hb := &pb.Heartbeat{WorkerId: "worker-00001", Topics: []string{"job.echo"}, Capabilities: []string{"echo", "cpu"},
		Labels: map[string]string{"region": "us"}, Capacity: 8, IntervalMs: 3_600_000}
	now := time.Unix(1_700_000_000, 0)
	b.ReportAllocs()
	for b.Loop() {
		reg.Heartbeat(hb, now)
	}
}

// Push a job, then Next and Start the next one and Finish it, with a
// standing backlog of 10,000 jobs over 10 tenants and three priorities.
func BenchmarkQueuePushNext(b *testing.B) {
	pools := mustPools(b, placement.Config{DefaultMaxPending: 1 << 30, MaxPendingTotal: 1 << 30})
	now := time.Unix(1_700_000_000, 0)
	qs := placement.NewQueues(placement.QueueOptions{Pools: pools, Now: func() time.Time { return now }})
	const backlog = 10_000
	jobs := make([]*placement.Job, 2*backlog)
	for i := range jobs {
		jobs[i] = placement.NewJob(&pb.JobRequest{
			JobId: fmt.Sprint("job-", i), Topic: "job.echo", Tenant: fmt.Sprint("tenant-", i%10),
			Priority: pb.JobPriority(1 + i%3),
		}, pools)
	}
	for _, j := range jobs[:backlog] {
		if err := qs.Push(j); err != nil {
			b.Fatal(err)
		}
	}
	next := backlog
	q := qs.Queue("job.echo")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := qs.Push(jobs[next%len(jobs)]); err != nil {
			b.Fatal(err)
		}
		next++
		j := q.Next()
		qs.Start(j)
		qs.Finish(j.ID)
		*j = placement.Job{ID: j.ID, Topic: j.Topic, Tenant: j.Tenant, Priority: j.Priority, Pool: j.Pool}
	}
}

// The placed path's registry work per job as the scheduler does it: Place a
// new job on a direct worker with 1,000 others in flight, Release the job
// placed 1,000 before (Release("", id), as a result does), and a heartbeat
// of the worker every 10,000 jobs. Job ids are distinct, so the maps hold
// what they hold in a run.
func BenchmarkPlaceInFlight(b *testing.B) {
	pools := mustPools(b, placement.Config{})
	now := time.Unix(1_700_000_000, 0)
	reg := placement.NewRegistry(placement.RegistryOptions{Pools: pools, Now: func() time.Time { return now }})
	hb := &pb.Heartbeat{WorkerId: "worker-1", Topics: []string{"job.echo"}, Capacity: 2000, Direct: true, IntervalMs: 3_600_000}
	reg.Heartbeat(hb, now)
	const inFlight, ids = 1000, 1 << 16
	jobs := make([]*placement.Job, ids)
	for i := range jobs {
		jobs[i] = placement.NewJob(&pb.JobRequest{JobId: fmt.Sprintf("job-%08d", i), Topic: "job.echo"}, pools)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := reg.Place(jobs[i%ids], nil); err != nil {
			b.Fatal(err)
		}
		if i >= inFlight {
			reg.Release("", jobs[(i-inFlight)%ids].ID)
		}
		i++
		if i%10_000 == 0 {
			reg.Heartbeat(hb, now)
		}
	}
}
