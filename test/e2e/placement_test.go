package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// shippedLeaseInterval is how often cortex-worker-echo heartbeats while it
// holds jobs, by default (--lease-interval).
const shippedLeaseInterval = 500 * time.Millisecond

// Placement is the default: cortex-scheduler with no placement section and
// cortex-worker-echo with its shipped heartbeat intervals (5 s idle, 500 ms
// while it holds jobs; no shortened timers). The tests time nothing with the
// wall clock: they count the worker's heartbeats, and compare orders.

// heartbeatCounter counts, per worker, the heartbeats seen on the bus that
// list held jobs: a busy worker sends one every lease interval (500 ms), so
// they are the test's clock.
type heartbeatCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func countHeartbeats(t *testing.T, url string) *heartbeatCounter {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	hc := &heartbeatCounter{n: map[string]int{}}
	if _, err := nc.Subscribe("sys.heartbeat.>", func(m *nats.Msg) {
		var p pb.BusPacket
		if proto.Unmarshal(m.Data, &p) != nil || len(p.GetHeartbeat().GetHeld()) == 0 {
			return
		}
		hc.mu.Lock()
		hc.n[p.GetHeartbeat().GetWorkerId()]++
		hc.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return hc
}

func (hc *heartbeatCounter) of(id string) int {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.n[id]
}

// submitAll submits jobs of the given priorities, in order, and returns their ids.
func submitAll(t *testing.T, c *client.Client, prefix string, prios []pb.JobPriority) []string {
	t.Helper()
	ids := make([]string, len(prios))
	for i, p := range prios {
		ids[i] = fmt.Sprintf("%s-%02d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Submit(ctx, &pb.JobRequest{JobId: ids[i], Topic: "job.echo", Priority: p})
		cancel()
		if err != nil {
			t.Fatalf("submit %s: %v", ids[i], err)
		}
	}
	return ids
}

// waitAll waits until every job completed and returns them.
func waitAll(t *testing.T, c *client.Client, ids []string) []*pb.JobInfo {
	t.Helper()
	out := make([]*pb.JobInfo, len(ids))
	for i, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		j, err := c.Wait(ctx, id)
		cancel()
		if err != nil {
			t.Fatalf("waiting for %s: %v", id, err)
		}
		if j.GetState() != lifecycle.Completed {
			t.Fatalf("job %s ended %s (%s)", id, j.GetState(), j.GetError())
		}
		out[i] = j
	}
	return out
}

func prios(p pb.JobPriority, n int) []pb.JobPriority {
	out := make([]pb.JobPriority, n)
	for i := range out {
		out[i] = p
	}
	return out
}

// A capacity-1 worker with 300 ms jobs runs 25 jobs back to back: each slot
// a result frees is used at once, not at the worker's next heartbeat. While
// the worker is busy, a waiting job says so.
func TestDefaultPlacementUsesFreedSlotsAtOnce(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	hc := countHeartbeats(t, url)
	startScheduler(t, url, "--log-level", "info")
	_, wid := startWorker(t, url, "--log-level", "info", "--capacity", "1", "--work-time", "300ms")
	c := systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "placement-test"})

	before := hc.of(wid)
	ids := submitAll(t, c, "slot", prios(pb.JobPriority_JOB_PRIORITY_INTERACTIVE, 25))

	// The last job waits for the busy worker, and says so.
	want := "worker " + wid + " full: 1 of 1 slots busy"
	var reason string
	for deadline := time.Now().Add(logTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		j, err := c.Get(ctx, ids[len(ids)-1])
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if reason = j.GetPendingReason(); reason == want || j.GetState() != lifecycle.Pending {
			break
		}
	}
	if reason != want {
		t.Errorf("pending_reason of a job behind a busy worker: %q, want %q", reason, want)
	}

	jobs := waitAll(t, c, ids)
	beats := hc.of(wid) - before
	t.Logf("25 jobs of 300 ms on one slot: %d lease heartbeats of the worker", beats)
	// The slot a job frees is used at once: the next job is dispatched
	// (its attempt_started, the scheduler's clock) right after the previous
	// one completed (its updated time). Waiting for the worker's next
	// heartbeat would put up to a lease interval (500 ms) between them,
	// spread evenly: about a fifth of the gaps would be under a fifth of
	// it. Nearly all are, when nothing waits for a heartbeat.
	slices.SortFunc(jobs, func(a, b *pb.JobInfo) int { return int(a.GetAttemptStartedMs() - b.GetAttemptStartedMs()) })
	quick := 0
	gaps := make([]int64, 0, len(jobs)-1)
	for i := 1; i < len(jobs); i++ {
		gap := jobs[i].GetAttemptStartedMs() - jobs[i-1].GetUpdatedMs()
		gaps = append(gaps, gap)
		if gap < (shippedLeaseInterval / 5).Milliseconds() {
			quick++
		}
	}
	t.Logf("gaps between a job's end and the next one's dispatch (ms): %v", gaps)
	if quick < 20 {
		t.Errorf("%d of %d jobs were dispatched within a fifth of a lease interval of the slot freeing, want at least 20: jobs wait for heartbeats; gaps %v ms", quick, len(gaps), gaps)
	}
	for _, j := range jobs {
		if j.GetWorkerId() != wid || j.GetAttempt() != 1 {
			t.Errorf("job %s: worker %s attempt %d, want %s and 1", j.GetJobId(), j.GetWorkerId(), j.GetAttempt(), wid)
		}
	}
}

// With the shipped config, CRITICAL work submitted behind queued BATCH work
// on a capacity-1 worker runs first.
func TestDefaultPlacementCriticalOvertakesBatch(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	startScheduler(t, url, "--log-level", "info")
	startWorker(t, url, "--log-level", "info", "--capacity", "1", "--work-time", "300ms")
	c := systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "placement-test"})

	batch := submitAll(t, c, "batch", prios(pb.JobPriority_JOB_PRIORITY_BATCH, 20))
	critical := submitAll(t, c, "critical", prios(pb.JobPriority_JOB_PRIORITY_CRITICAL, 5))
	jobs := waitAll(t, c, append(slices.Clone(batch), critical...))
	slices.SortStableFunc(jobs, func(a, b *pb.JobInfo) int {
		return int(a.GetAttemptStartedMs() - b.GetAttemptStartedMs())
	})
	order := make([]string, len(jobs))
	lastCritical := 0
	for i, j := range jobs {
		order[i] = j.GetJobId()
		if j.GetRequest().GetPriority() == pb.JobPriority_JOB_PRIORITY_CRITICAL {
			lastCritical = i
		}
	}
	// The first BATCH job starts at once (the worker is idle); at most one
	// more can have been placed before the CRITICAL jobs arrived.
	if lastCritical > 6 {
		t.Errorf("the last CRITICAL job started %d-th; order %v", lastCritical+1, order)
	}
	if !slices.Equal(order[len(order)-10:], batch[10:]) {
		t.Errorf("BATCH jobs out of order at the end: %v", order)
	}
}
