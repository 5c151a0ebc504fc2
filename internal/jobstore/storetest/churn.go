package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Get never answers ErrNotFound for a job that exists, while jobs are
// created, moved along and finished around it (an active job's handoff to
// the finished jobs, compare-and-set writes of the same job): readers read
// jobs being written and jobs already finished, as cortex job get does
// during churn, and every read finds its job, in a state it was written in.
func testGetDuringChurn(t *testing.T, s jobstore.Store) {
	const (
		writers = 4
		jobs    = 150 // per writer
		readers = 4
	)
	path := []pb.JobState{lifecycle.Pending, lifecycle.Dispatched, lifecycle.Running, lifecycle.Completed}
	var (
		created [writers]atomic.Int64 // jobs of each writer created so far
		done    atomic.Bool
		reads   atomic.Int64
		wg      sync.WaitGroup
	)
	errs := make(chan error, writers+readers)
	for w := range writers {
		wg.Go(func() {
			for i := range jobs {
				id := fmt.Sprintf("churn-%d-%d", w, i)
				rec, err := s.Create(t.Context(), NewJob(id, path[0]))
				if err != nil {
					errs <- fmt.Errorf("Create(%s): %w", id, err)
					return
				}
				created[w].Store(int64(i + 1))
				for _, st := range path[1:] {
					if rec, err = s.Update(t.Context(), rec, With(rec, st)); err != nil {
						errs <- fmt.Errorf("Update(%s -> %s): %w", id, lifecycle.Name(st), err)
						return
					}
				}
			}
		})
	}
	var rg sync.WaitGroup
	for r := range readers {
		rg.Go(func() {
			for k := 0; !done.Load(); k++ {
				w := (k + r) % writers
				n := created[w].Load()
				if n == 0 {
					continue
				}
				// Mostly the job being written now, sometimes an older one.
				i := n - 1
				if k%4 == 0 {
					i = int64(k) % n
				}
				id := fmt.Sprintf("churn-%d-%d", w, i)
				rec, err := s.Get(t.Context(), id)
				reads.Add(1)
				if errors.Is(err, jobstore.ErrNotFound) {
					errs <- fmt.Errorf("Get(%s) during churn: not found, though it was created", id)
					return
				}
				if err != nil {
					errs <- fmt.Errorf("Get(%s): %w", id, err)
					return
				}
				if rec.Job.GetJobId() != id || rec.Job.GetState() == pb.JobState_JOB_STATE_UNSPECIFIED {
					errs <- fmt.Errorf("Get(%s) = %v", id, rec.Job)
					return
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	rg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() == 0 {
		t.Error("no reads happened during the churn")
	}
}
