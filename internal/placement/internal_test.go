package placement

import (
	"fmt"
	"testing"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Memory follows the jobs: once every job is done or gone, no tenant,
// implicit pool queue or job is left behind.
func TestQueuesForgetWhatIsDone(t *testing.T) {
	t.Parallel()
	pools, err := NewPools(Config{Pools: []Pool{{Name: "kept", Topics: []string{"job.kept"}}},
		Tenants: []Tenant{{Name: "t3", MaxConcurrent: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_700_000_000, 0)
	qs := NewQueues(QueueOptions{Pools: pools, Now: func() time.Time { return now }})
	var jobs []*Job
	for i := range 600 {
		j := NewJob(&pb.JobRequest{JobId: fmt.Sprint("j", i), Topic: fmt.Sprint("job.t", i%7), Tenant: fmt.Sprint("t", i%11),
			Priority: pb.JobPriority(i % 4)}, pools)
		if i%5 == 0 {
			j = NewJob(&pb.JobRequest{JobId: fmt.Sprint("j", i), Topic: "job.kept", Tenant: "t3"}, pools)
		}
		if err := qs.Push(j); err != nil {
			t.Fatal(err)
		}
		jobs = append(jobs, j)
		now = now.Add(time.Second) // some age to the top
	}
	for i, j := range jobs {
		switch i % 4 {
		case 0:
			qs.Remove(j.ID)
		case 1:
			qs.Park(j, "parked")
		}
	}
	for _, q := range qs.queues {
		q.Wake()
	}
	// Drain everything, finishing as we go.
	for n := 0; qs.Len() > 0; n++ {
		if n > 10_000 {
			t.Fatalf("stuck with %d queued", qs.Len())
		}
		for _, q := range qs.Backlogged() {
			j := q.Next()
			qs.Start(j)
			if n%3 == 0 {
				qs.Readmit(j) // refused: back in the queue
				continue
			}
			qs.Finish(j.ID)
		}
	}
	if len(qs.tenant) != 0 || len(qs.jobs) != 0 || qs.queued != 0 {
		t.Errorf("left: %d tenants, %d jobs, %d queued", len(qs.tenant), len(qs.jobs), qs.queued)
	}
	if len(qs.queues) != 1 || qs.queues["kept"] == nil || len(qs.queues["kept"].tqs) != 0 {
		t.Errorf("queues left: %v", qs.queues)
	}
	for _, q := range qs.queues {
		for l := range q.active {
			if q.active[l].len() != 0 {
				t.Errorf("level %d still has tenants", l)
			}
		}
		for l := range q.promo {
			if q.promo[l].len() != 0 {
				t.Errorf("promotion heap %d still has jobs", l)
			}
		}
	}
}

// The candidate slices stay consistent with the workers through joins,
// changes, expiry and eviction.
func TestCandidateSetsConsistent(t *testing.T) {
	t.Parallel()
	pools, _ := NewPools(Config{Pools: []Pool{{Name: "p", Topics: []string{"job.p.*"}, Capabilities: []string{"gpu"}}}})
	now := time.Unix(1_700_000_000, 0)
	r := NewRegistry(RegistryOptions{Pools: pools, Now: func() time.Time { return now }, MaxTopics: 3})
	check := func() {
		t.Helper()
		for _, s := range append(r.poolSets, func() []*candSet {
			var out []*candSet
			for _, s := range r.topicSets {
				out = append(out, s)
			}
			return out
		}()...) {
			for i, sl := range s.items {
				found := false
				for _, m := range sl.w.in {
					found = found || (m.set == s && m.idx == i)
				}
				if !found || !r.belongs(sl.w, s) || r.workers[sl.w.ID] != sl.w {
					t.Fatalf("slot %d of %q/%s: %s is not where it should be", i, s.topic, s.pool.Name, sl.w.ID)
				}
			}
		}
		for _, w := range r.workers {
			for _, m := range w.in {
				if m.set.items[m.idx].w != w {
					t.Fatalf("%s: membership points at %s", w.ID, m.set.items[m.idx].w.ID)
				}
			}
		}
	}
	topics := []string{"job.a", "job.b", "job.p.x", "job.p.y", "job.c"}
	for i := range 40 {
		hb := &pb.Heartbeat{WorkerId: fmt.Sprint("w", i%9), IntervalMs: int64(1000 * (1 + i%3)),
			Topics: []string{topics[i%5], topics[(i+2)%5]}, Capacity: int32(i % 4)}
		if i%4 == 0 {
			hb.Topics = []string{"job.>"}
		}
		if i%3 == 0 {
			hb.Capabilities = []string{"gpu"}
		}
		r.Heartbeat(hb, now)
		check()
		job := NewJob(&pb.JobRequest{JobId: fmt.Sprint("j", i), Topic: topics[(i*7)%5]}, pools)
		if d, err := r.Place(job, nil); err == nil && i%2 == 0 {
			r.Release(d.WorkerID, job.ID)
		}
		check()
		now = now.Add(700 * time.Millisecond)
		if i%6 == 0 {
			r.Expire()
			check()
		}
	}
}
