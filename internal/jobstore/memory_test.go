package jobstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/storetest"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"google.golang.org/protobuf/proto"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) jobstore.Store { return jobstore.NewMemory() })
}

func TestMemoryZeroValueConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(*testing.T) jobstore.Store { return new(jobstore.Memory) })
}

func TestMemoryDeadLettersConformance(t *testing.T) {
	t.Parallel()
	storetest.RunDeadLetters(t, func(*testing.T) jobstore.DeadLetters { return jobstore.NewMemoryDeadLetters() })
}

func TestMemoryDeadLettersZeroValueConformance(t *testing.T) {
	t.Parallel()
	storetest.RunDeadLetters(t, func(*testing.T) jobstore.DeadLetters { return new(jobstore.MemoryDeadLetters) })
}

// watch runs m.Watch on its own goroutine; fn's records go to a channel.
func watch(t *testing.T, m *jobstore.Memory, fn func(jobstore.Record)) (cancel func(), done <-chan error) {
	t.Helper()
	ctx, cancelCtx := context.WithCancel(t.Context())
	ch := make(chan error, 1)
	go func() { ch <- m.Watch(ctx, fn) }()
	return cancelCtx, ch
}

func waitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(storetest.Timeout):
		t.Fatal("Watch did not return")
		return nil
	}
}

// A watcher that is stuck in fn does not hold up writers. Its queue keeps one
// record per job: once it resumes it gets, in revision order, the latest
// record of every job that changed meanwhile, as a lagging KV watcher does.
func TestMemoryStuckWatcherCoalesces(t *testing.T) {
	t.Parallel()
	m := jobstore.NewMemory()
	ctx := t.Context()
	slow, err := m.Create(ctx, storetest.NewJob("slow", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var mu sync.Mutex
	var seen []jobstore.Record
	cancel, done := watch(t, m, func(r jobstore.Record) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		mu.Lock()
		seen = append(seen, r)
		mu.Unlock()
	})
	defer cancel()
	<-entered // the watcher is stuck on the initial record

	want := []jobstore.Record{slow}
	others := make([]jobstore.Record, 10)
	for i := range others {
		others[i], err = m.Create(ctx, storetest.NewJob(fmt.Sprintf("other-%d", i), lifecycle.Pending))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, others[i])
	}
	// Enough writes to one job to make the watcher compact its queue.
	for i := range 1000 {
		slow, err = m.Update(ctx, slow, storetest.With(slow, lifecycle.Pending, func(j *pb.JobInfo) { j.UpdatedMs = int64(i) }))
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, slow)
		if i%100 == 0 {
			o := others[i/100]
			others[i/100], err = m.Update(ctx, o, storetest.With(o, lifecycle.Dispatched))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, others[i/100])
		}
	}
	close(release)
	storetest.Eventually(t, "the latest record of every job", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) > 0 && seen[len(seen)-1].Revision == slow.Revision
	})
	mu.Lock()
	got := append([]jobstore.Record(nil), seen...)
	mu.Unlock()
	storetest.RequireWatched(t, got, want)
	// The initial record, then exactly one record per job that changed.
	if len(got) != 1+1+len(others) {
		t.Fatalf("the watcher got %d records, want %d: one per changed job after the first", len(got), 2+len(others))
	}
	cancel()
	if err := waitDone(t, done); err != nil {
		t.Fatalf("Watch = %v, want nil", err)
	}
}

// Memory checks the transition from the state it holds, so even a caller
// that edited prev.Job after reading it cannot move a terminal job.
func TestMemoryUpdateChecksStoredState(t *testing.T) {
	t.Parallel()
	m := jobstore.NewMemory()
	ctx := t.Context()
	rec, err := m.Create(ctx, storetest.NewJob("done", lifecycle.Pending))
	if err != nil {
		t.Fatal(err)
	}
	rec, err = m.Update(ctx, rec, storetest.With(rec, lifecycle.Cancelled))
	if err != nil {
		t.Fatal(err)
	}
	lying := rec
	lying.Job = storetest.With(rec, lifecycle.Pending) // claims PENDING at the current revision
	_, err = m.Update(ctx, lying, storetest.With(rec, lifecycle.Dispatched))
	var ite *lifecycle.IllegalTransitionError
	if !errors.As(err, &ite) || ite.From != lifecycle.Cancelled || ite.To != lifecycle.Dispatched {
		t.Fatalf("Update from an edited prev = %v, want CANCELLED -> DISPATCHED refused", err)
	}
}

func TestMemoryEndedContext(t *testing.T) {
	t.Parallel()
	m := jobstore.NewMemory()
	d := jobstore.NewMemoryDeadLetters()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	job := storetest.NewJob("x", lifecycle.Pending)
	if _, err := m.Create(ctx, job); !errors.Is(err, context.Canceled) {
		t.Errorf("Create = %v, want context.Canceled", err)
	}
	if _, err := m.Get(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("Get = %v, want context.Canceled", err)
	}
	if _, err := m.List(ctx, jobstore.Filter{}); !errors.Is(err, context.Canceled) {
		t.Errorf("List = %v, want context.Canceled", err)
	}
	if err := d.Put(ctx, job); !errors.Is(err, context.Canceled) {
		t.Errorf("Put = %v, want context.Canceled", err)
	}
}

func TestMemoryForgetsTheOldestFinishedJobs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := jobstore.NewMemoryRetaining(3)
	for i := range 5 {
		id := fmt.Sprintf("job-%d", i)
		rec, err := m.Create(ctx, &pb.JobInfo{JobId: id, State: lifecycle.Pending})
		if err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			break // stays active
		}
		next := proto.CloneOf(rec.Job)
		next.State = lifecycle.Cancelled
		if _, err := m.Update(ctx, rec, next); err != nil {
			t.Fatal(err)
		}
	}
	// Four finished, three kept: job-0 is forgotten; the active job-4 stays.
	for i, want := range []bool{false, true, true, true, true} {
		_, err := m.Get(ctx, fmt.Sprintf("job-%d", i))
		if got := err == nil; got != want {
			t.Errorf("job-%d kept = %v, want %v (%v)", i, got, want, err)
		}
	}
}
