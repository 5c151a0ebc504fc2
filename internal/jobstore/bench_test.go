package jobstore_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// BenchmarkMemoryJobLife is what the in-memory scheduler writes for a job
// that is dispatched at once and completes: a create (DISPATCHED) and an
// update (COMPLETED), with the store keeping DefaultMemoryRetain finished jobs
// (full from the start, as in a long-running scheduler).
func BenchmarkMemoryJobLife(b *testing.B) {
	for _, retain := range []int{1_000, jobstore.DefaultMemoryRetain} {
		b.Run("retain="+strconv.Itoa(retain), func(b *testing.B) { benchJobLife(b, retain) })
	}
}

func benchJobLife(b *testing.B, retain int) {
	ctx := context.Background()
	m := jobstore.NewMemoryRetaining(retain)
	ids := make([]string, retain+b.N)
	for i := range ids {
		ids[i] = "bench-job-" + strconv.Itoa(i)
	}
	life := func(id string) {
		rec, err := m.Create(ctx, &pb.JobInfo{JobId: id, State: lifecycle.Dispatched, Attempt: 1})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := m.Update(ctx, rec, &pb.JobInfo{JobId: id, State: lifecycle.Completed, Attempt: 1}); err != nil {
			b.Fatal(err)
		}
	}
	for _, id := range ids[:retain] {
		life(id)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		life(ids[retain+i])
	}
}
