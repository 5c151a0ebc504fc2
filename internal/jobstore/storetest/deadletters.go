package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// RunDeadLetters runs the DeadLetters conformance suite.
func RunDeadLetters(t *testing.T, newDL func(t *testing.T) jobstore.DeadLetters) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d jobstore.DeadLetters)
	}{
		{"PutListOrder", testDLPutListOrder},
		{"Take", testDLTake},
		{"TakeMissing", testDLTakeMissing},
		{"PutReplaces", testDLPutReplaces},
		{"InvalidID", testDLInvalidID},
		{"Copies", testDLCopies},
		{"TakeConcurrent", testDLTakeConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, newDL(t))
		})
	}
}

// deadJob is a failed, dead-lettered job.
func deadJob(id string) *pb.JobInfo {
	j := NewJob(id, lifecycle.Failed)
	j.DeadLetter = true
	j.Attempt = 3
	j.Error = "attempt 3 of 3 failed: boom"
	return j
}

func mustPut(t *testing.T, d jobstore.DeadLetters, jobs ...*pb.JobInfo) {
	t.Helper()
	for _, j := range jobs {
		if err := d.Put(t.Context(), j); err != nil {
			t.Fatalf("Put(%s): %v", j.GetJobId(), err)
		}
	}
}

// requireList fails unless List(limit) is exactly want, in order.
func requireList(t *testing.T, d jobstore.DeadLetters, limit int, want ...*pb.JobInfo) {
	t.Helper()
	got, err := d.List(t.Context(), limit)
	if err != nil {
		t.Fatalf("List(%d): %v", limit, err)
	}
	if len(got) != len(want) {
		t.Fatalf("List(%d) = %v, want %v", limit, ids(got), ids(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("List(%d)[%d] = %v, want %v (order %v, want %v)", limit, i, got[i], want[i], ids(got), ids(want))
		}
	}
}

func ids(jobs []*pb.JobInfo) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.GetJobId()
	}
	return out
}

func mustTake(t *testing.T, d jobstore.DeadLetters, want *pb.JobInfo) {
	t.Helper()
	got, err := d.Take(t.Context(), want.GetJobId())
	if err != nil {
		t.Fatalf("Take(%s): %v", want.GetJobId(), err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("Take(%s) = %v, want %v", want.GetJobId(), got, want)
	}
}

func testDLPutListOrder(t *testing.T, d jobstore.DeadLetters) {
	requireList(t, d, 0)
	a, b, c := deadJob("a"), deadJob("b.x"), deadJob("c")
	mustPut(t, d, a, b, c)
	requireList(t, d, 0, a, b, c)
	requireList(t, d, 1, a)
	requireList(t, d, 2, a, b)
	requireList(t, d, 3, a, b, c)
	requireList(t, d, 10, a, b, c)
}

func testDLTake(t *testing.T, d jobstore.DeadLetters) {
	a, b, c := deadJob("a"), deadJob("b"), deadJob("c")
	mustPut(t, d, a, b, c)
	mustTake(t, d, b)
	requireList(t, d, 0, a, c)
	if _, err := d.Take(t.Context(), "b"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("second Take(b): err = %v, want ErrNotFound", err)
	}
	mustTake(t, d, a)
	mustTake(t, d, c)
	requireList(t, d, 0)
	// Taken jobs can come back.
	mustPut(t, d, b)
	requireList(t, d, 0, b)
}

func testDLTakeMissing(t *testing.T, d jobstore.DeadLetters) {
	if _, err := d.Take(t.Context(), "nobody"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Take(missing) in an empty queue: err = %v, want ErrNotFound", err)
	}
	mustPut(t, d, deadJob("somebody"))
	if _, err := d.Take(t.Context(), "nobody"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Take(missing): err = %v, want ErrNotFound", err)
	}
	// A job whose id extends another's is a different job.
	if _, err := d.Take(t.Context(), "somebody.else"); !errors.Is(err, jobstore.ErrNotFound) {
		t.Fatalf("Take(somebody.else): err = %v, want ErrNotFound", err)
	}
	requireList(t, d, 0, deadJob("somebody"))
}

func testDLPutReplaces(t *testing.T, d jobstore.DeadLetters) {
	a, b := deadJob("a"), deadJob("b")
	mustPut(t, d, a, b)
	a2 := deadJob("a")
	a2.Error = "failed again"
	mustPut(t, d, a2)
	// One entry per job; the replaced job is now the newest.
	requireList(t, d, 0, b, a2)
	mustTake(t, d, a2)
	requireList(t, d, 0, b)
}

func testDLInvalidID(t *testing.T, d jobstore.DeadLetters) {
	ctx := t.Context()
	for _, id := range InvalidIDs {
		if err := d.Put(ctx, deadJob(id)); !errors.Is(err, jobstore.ErrInvalidID) {
			t.Errorf("Put(%q): err = %v, want ErrInvalidID", id, err)
		}
		if _, err := d.Take(ctx, id); !errors.Is(err, jobstore.ErrInvalidID) {
			t.Errorf("Take(%q): err = %v, want ErrInvalidID", id, err)
		}
	}
	if err := d.Put(ctx, nil); !errors.Is(err, jobstore.ErrInvalidID) {
		t.Errorf("Put(nil): err = %v, want ErrInvalidID", err)
	}
	bad := deadJob("bad-utf8")
	bad.Error = "\xff"
	if err := d.Put(ctx, bad); err == nil {
		t.Error("Put of a job with invalid UTF-8 in a string field succeeded")
	}
	requireList(t, d, 0)
}

func testDLCopies(t *testing.T, d jobstore.DeadLetters) {
	in := deadJob("copy")
	want := proto.Clone(in).(*pb.JobInfo)
	mustPut(t, d, in)
	in.Error = "scribbled"
	in.Request.EnvVars["A"] = "scribbled"
	requireList(t, d, 0, want)
	got, err := d.List(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got[0].Error = "scribbled"
	got[0].Request.Topic = "scribbled"
	requireList(t, d, 0, want)
}

func testDLTakeConcurrent(t *testing.T, d jobstore.DeadLetters) {
	const n = 8
	job := deadJob("contested")
	mustPut(t, d, job)
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		won   atomic.Int32
		errs  = make(chan error, n)
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := d.Take(context.Background(), job.GetJobId())
			switch {
			case err == nil:
				won.Add(1)
				if !proto.Equal(got, job) {
					errs <- fmt.Errorf("taker %d got %v, want %v", i, got, job)
				}
			case !errors.Is(err, jobstore.ErrNotFound):
				errs <- fmt.Errorf("taker %d: err = %v, want nil or ErrNotFound", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := won.Load(); got != 1 {
		t.Fatalf("%d of %d racing Takes got the job, want exactly 1", got, n)
	}
	requireList(t, d, 0)
}
