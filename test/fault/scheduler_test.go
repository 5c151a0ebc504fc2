package fault

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// submitMany submits the jobs ids[from:to]: those for which confirmed(i)
// holds with client.Submit (the scheduler's confirmation), on `parallel`
// goroutines, the others with a plain core publish on sys.job.submit, as the
// design document's sender does.
func submitMany(t *testing.T, c *client.Client, b *bus.NatsBus, ids []string, from, to int, confirmed func(i int) bool) {
	t.Helper()
	const parallel = 8
	work := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range parallel {
		wg.Go(func() {
			for i := range work {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				job, err := c.Submit(ctx, echoJob(ids[i]))
				cancel()
				switch {
				case err != nil:
					failed.CompareAndSwap(nil, fmt.Sprintf("submit %s: %v", ids[i], err))
				case job.GetJobId() != ids[i] || !lifecycle.Active(job.GetState()) && job.GetState() != lifecycle.Completed:
					failed.CompareAndSwap(nil, fmt.Sprintf("submit %s answered %s", ids[i], describe(job)))
				}
			}
		})
	}
	for i := from; i < to; i++ {
		if confirmed(i) {
			work <- i
			continue
		}
		if err := systest.PublishSubmit(b, "fault-sender", "", echoJob(ids[i])); err != nil {
			t.Errorf("publish %s: %v", ids[i], err)
		}
	}
	close(work)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Errorf("flush: %v", err)
	}
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
}

// kill -9 of the scheduler with 1,000 jobs in flight, then a restart on the
// same NATS: every job reaches COMPLETED, none is lost, none completes twice.
//
// 600 jobs go in while the first scheduler runs (half confirmed by it, half
// published plainly); once it has recorded them all, and while most are still
// waiting, dispatched or running, it is killed. 200 more are published while
// no scheduler runs (the durable intake keeps them), and the last 200 are
// submitted, confirmed, to the restarted scheduler.
//
// The kill comes once the intake is recorded: a scheduler killed in the
// middle of it takes the submissions it had pulled from the stream and not
// yet acknowledged with it, and the stream hands them to the next scheduler
// only after the consumer's AckWait (30s). None is lost, but that wait is
// longer than this test should take.
//
// The backlog is deliberately several times what the workers can hold (3 x 8
// slots, 50-150ms a job): that is what made the hand-off collapse before the
// worker counted its slot wait from the dispatch's sending (pkg/worker
// acquire): every slot then ran attempts already given up on, and no job
// completed.
func TestSchedulerKill9With1000JobsInFlight(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched1 := startScheduler(t, "sched-1", url, cfg)
	results := recordResults(t, url)
	c, b := newClient(t, url)
	store := watchCompletions(t, b)
	workerIDs := map[string]bool{}
	for i := range 3 {
		id := fmt.Sprintf("worker-%d", i+1)
		workerIDs[id] = true
		startWorker(t, id, url, cfg, "--work-time", "50ms-150ms", "--concurrency", "8")
		waitWorkerKnown(t, sched1, id)
	}

	const total, phaseA, phaseB = 1000, 600, 800
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("bulk-%04d", i)
	}
	began := time.Now()
	submitMany(t, c, b, ids, 0, phaseA, func(i int) bool { return i%2 == 0 })

	// Kill once every phase-A job is recorded, with most still in flight.
	systest.Poll(t, 20*time.Second, 5*time.Millisecond, "the first 600 jobs recorded", func() (bool, string) {
		n, _ := store.stateCounts()
		return n >= phaseA, fmt.Sprintf("%d recorded", n)
	})
	sched1.Kill(t)
	killedAt := time.Now()
	recorded, byState := store.stateCounts()
	t.Logf("scheduler killed %s after the first submission: %d jobs recorded, by state %v",
		killedAt.Sub(began).Round(time.Millisecond), recorded, byState)
	if byState["COMPLETED"] >= phaseA {
		t.Fatalf("all %d jobs had completed before the kill: nothing was in flight", phaseA)
	}

	// While no scheduler runs: plain publishes, kept by the intake stream.
	submitMany(t, c, b, ids, phaseA, phaseB, func(int) bool { return false })
	sched2 := startScheduler(t, "sched-2", url, cfg)
	restartedAt := time.Now()
	submitMany(t, c, b, ids, phaseB, total, func(int) bool { return true })

	systest.Poll(t, 30*time.Second, 50*time.Millisecond, "all 1,000 jobs COMPLETED", func() (bool, string) {
		n, twice := store.count()
		return n >= total || len(twice) > 0, fmt.Sprintf("%d COMPLETED, states %v", n, func() map[string]int { _, s := store.stateCounts(); return s }())
	})
	t.Logf("all %d jobs COMPLETED %s after the restart (%s after the kill)", total,
		time.Since(restartedAt).Round(time.Millisecond), time.Since(killedAt).Round(time.Millisecond))

	// The scheduler's view: every job COMPLETED, by one of the workers, with
	// a result one of them really published for that attempt.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	listed, err := c.ListAll(ctx, client.ListOptions{Limit: 2 * total})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	all := listed.Jobs
	if len(all) != total {
		t.Errorf("list: %d jobs, want %d", len(all), total)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	var retried, reran int
	for _, j := range all {
		id := j.GetJobId()
		if !want[id] {
			t.Errorf("unexpected job %s", id)
			continue
		}
		delete(want, id)
		if j.GetState() != lifecycle.Completed || !workerIDs[j.GetWorkerId()] || j.GetResultPtr() != "memory://echo/"+id {
			t.Errorf("job %s: %s result_ptr=%q; want COMPLETED by a worker", id, describe(j), j.GetResultPtr())
			continue
		}
		if j.GetAttempt() > 1 {
			retried++
		}
		rs := results.of(id)
		matched := false
		for _, r := range rs {
			if r.Status == pb.JobStatus_JOB_STATUS_COMPLETED && r.WorkerID == j.GetWorkerId() && r.Attempt == j.GetAttempt() {
				matched = true
			}
		}
		if !matched {
			t.Errorf("job %s COMPLETED by %s attempt %d, but no such result was published: %+v", id, j.GetWorkerId(), j.GetAttempt(), results.of(id))
		}
		if completedResults(rs) > 1 {
			reran++
		}
	}
	if len(want) > 0 {
		t.Errorf("%d jobs lost, e.g. %v", len(want), firstKeys(want, 5))
	}
	// Once: one COMPLETED revision per job in the store, and at most one
	// COMPLETED transition per job in the two schedulers' logs.
	if n, twice := store.count(); n != total || len(twice) > 0 {
		t.Errorf("job store: %d jobs seen COMPLETED (want %d); completed twice: %v", n, total, twice)
	}
	perJob := map[string]int{}
	for _, s := range []*systest.Proc{sched1, sched2} {
		for _, a := range s.FindLogs("job changed state", "state", "COMPLETED") {
			perJob[a["job_id"]]++
		}
	}
	for id, k := range perJob {
		if k > 1 {
			t.Errorf("job %s: the schedulers recorded %d completions", id, k)
		}
	}
	t.Logf("%d jobs needed another attempt after the kill; %d ran to completion more than once (at-least-once execution), each still COMPLETED once",
		retried, reran)
}

func firstKeys(m map[string]bool, n int) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}

// kill -9 of the scheduler between a dispatch and its answer: the job is left
// DISPATCHED in the store, and its worker is gone too. A restarted scheduler,
// which has not heard any heartbeat yet when it takes the job over, must not
// take the silence for a worker that does not confirm (and leave the job
// waiting for its attempt timeout): once the live worker heartbeats, the job
// is dispatched again and completes.
func TestSchedulerKill9MidDispatch(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers) // timeout 30s: the stall this test rules out
	sched1 := startScheduler(t, "sched-1", url, cfg)
	a := startWorker(t, "worker-a", url, cfg, "--work-time", "100ms")
	waitWorkerKnown(t, sched1, "worker-a")
	c, _ := newClient(t, url)

	// worker-a, stopped, receives the dispatch but cannot answer it.
	a.Signal(t, syscall.SIGSTOP)
	const id = "mid-dispatch"
	submit(t, c, echoJob(id))
	waitState(t, c, id, 5*time.Second, "DISPATCHED", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Dispatched })
	sched1.Kill(t) // within the 500ms ack_timeout: nobody decides about the dispatch
	a.Kill(t)

	b := startWorker(t, "worker-b", url, cfg, "--work-time", "100ms")
	startScheduler(t, "sched-2", url, cfg)
	restartedAt := time.Now()
	done := waitTerminal(t, c, id, 15*time.Second)
	took := time.Since(restartedAt)
	t.Logf("the job left DISPATCHED ended %s after the restart: %s", took.Round(time.Millisecond), describe(done))
	if done.GetState() != lifecycle.Completed || done.GetWorkerId() != "worker-b" {
		t.Errorf("job: %s; want COMPLETED by worker-b", describe(done))
	}
	if took > 5*time.Second {
		t.Errorf("the job took %s after the restart, want within 5s (a 1s heartbeat, a dispatch and 100ms of work)", took)
	}
	b.WaitForLog(t, time.Second, "result", "job_id", id, "status", "JOB_STATUS_COMPLETED")
}
