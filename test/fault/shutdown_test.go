package fault

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// startWorkerWithJob starts worker-a alone, submits one echo job and waits
// until worker-a runs it; then starts worker-b. The job's worker is certain.
func startWorkerWithJob(t *testing.T, url, cfg, id string, flagsA, flagsB []string) (sched, a, b *systest.Proc, c *client.Client) {
	t.Helper()
	sched = startScheduler(t, "sched", url, cfg)
	a = startWorker(t, "worker-a", url, cfg, flagsA...)
	waitWorkerKnown(t, sched, "worker-a")
	c, _ = newClient(t, url)
	submit(t, c, echoJob(id))
	waitState(t, c, id, 10*time.Second, "RUNNING on worker-a", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Running && j.GetWorkerId() == "worker-a"
	})
	b = startWorker(t, "worker-b", url, cfg, flagsB...)
	waitWorkerKnown(t, sched, "worker-b")
	return sched, a, b, c
}

// SIGTERM to a worker with a job in flight: it takes no new job, lets the
// running one (3s) finish within its grace (10s, the default), and exits 0. The
// job completes there, once, on its first attempt.
func TestWorkerSIGTERMFinishesInFlightJob(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	results := recordResults(t, url)
	const id, next = "sigterm-finish", "sigterm-next"
	_, a, _, c := startWorkerWithJob(t, url, cfg, id, []string{"--work-time", "3s"}, []string{"--work-time", "100ms"})

	termAt := time.Now()
	a.Signal(t, syscall.SIGTERM)
	a.WaitForLog(t, 5*time.Second, "shutting down", "worker_id", "worker-a", "in_flight", "1")
	submit(t, c, echoJob(next))

	if code := a.Wait(t, exitTimeout); code != 0 {
		t.Errorf("worker-a exited %d after SIGTERM, want 0", code)
	}
	t.Logf("worker-a exited %s after SIGTERM, its job done", time.Since(termAt).Round(time.Millisecond))
	done := waitTerminal(t, c, id, 10*time.Second)
	if done.GetState() != lifecycle.Completed || done.GetWorkerId() != "worker-a" || done.GetAttempt() != 1 || done.GetFailedAttempts() != 0 {
		t.Errorf("in-flight job: %s; want COMPLETED by worker-a on attempt 1", describe(done))
	}
	if rs := results.of(id); len(rs) != 1 || completedResults(rs) != 1 {
		t.Errorf("results for %s: %+v; want one COMPLETED", id, rs)
	}
	other := waitTerminal(t, c, next, 10*time.Second)
	if other.GetState() != lifecycle.Completed || other.GetWorkerId() != "worker-b" {
		t.Errorf("job submitted after the SIGTERM: %s; want COMPLETED by worker-b", describe(other))
	}
	if got := a.FindLogs("job", "job_id", next, "topic", "job.echo"); len(got) > 0 {
		t.Errorf("the draining worker took a new job: %v", got)
	}
	a.WaitForLog(t, time.Second, "stopped", "worker_id", "worker-a")
}

// SIGTERM to a worker whose job outlasts a tiny --shutdown-grace: the job is
// cancelled and handed back (not counted as a failure), runs on the other
// worker and completes there, once.
func TestWorkerSIGTERMHandsBackAfterGrace(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	results := recordResults(t, url)
	const id = "sigterm-handback"
	sched, a, b, c := startWorkerWithJob(t, url, cfg, id,
		[]string{"--work-time", "5s", "--shutdown-grace", "300ms"}, []string{"--work-time", "1s"})

	termAt := time.Now()
	a.Signal(t, syscall.SIGTERM)
	moved := waitState(t, c, id, 10*time.Second, "RUNNING on worker-b", func(j *pb.JobInfo) bool {
		return j.GetState() == lifecycle.Running && j.GetWorkerId() == "worker-b"
	})
	t.Logf("SIGTERM with a 300ms grace: job RUNNING on worker-b (attempt %d) %s later",
		moved.GetAttempt(), time.Since(termAt).Round(time.Millisecond))
	if code := a.Wait(t, exitTimeout); code != 0 {
		t.Errorf("worker-a exited %d after SIGTERM, want 0", code)
	}
	a.WaitForLog(t, time.Second, "shutdown grace over, handing back unfinished jobs", "worker_id", "worker-a")
	sched.WaitForLog(t, 5*time.Second, "job changed state", "state", "PENDING", "job_id", id, "reason", "handed back by worker-a: worker shutting down")

	done := waitTerminal(t, c, id, 10*time.Second)
	if done.GetState() != lifecycle.Completed || done.GetWorkerId() != "worker-b" || done.GetAttempt() != 2 || done.GetFailedAttempts() != 0 {
		t.Errorf("job: %s; want COMPLETED by worker-b on attempt 2, no failed attempt", describe(done))
	}
	b.WaitForLog(t, 5*time.Second, "result", "job_id", id, "status", "JOB_STATUS_COMPLETED")
	rs := results.of(id)
	if completedResults(rs) != 1 || len(rs) != 2 {
		t.Errorf("results for %s: %+v; want worker-a's CANCELLED hand-back and one COMPLETED", id, rs)
	}
	for _, r := range rs {
		if r.WorkerID == "worker-a" && (r.Status != pb.JobStatus_JOB_STATUS_CANCELLED || r.Attempt != 1) {
			t.Errorf("worker-a's result %+v, want CANCELLED for attempt 1", r)
		}
	}
}

// SIGTERM to the scheduler with jobs in flight: it exits 0; jobs published
// while it is down wait in the intake stream, and a restarted scheduler
// carries every job, old and new, to COMPLETED, once.
func TestSchedulerSIGTERMAndRestart(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched1 := startScheduler(t, "sched-1", url, cfg)
	for _, id := range []string{"worker-1", "worker-2"} {
		startWorker(t, id, url, cfg, "--work-time", "200ms-600ms", "--concurrency", "4")
		waitWorkerKnown(t, sched1, id)
	}
	c, b := newClient(t, url)
	store := watchCompletions(t, b)

	const before, total = 60, 80
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("term-%02d", i)
	}
	submitMany(t, c, b, ids, 0, before, func(int) bool { return true })
	systest.Poll(t, 20*time.Second, 20*time.Millisecond, "some jobs COMPLETED", func() (bool, string) {
		k, _ := store.count()
		return k >= 10, fmt.Sprintf("%d COMPLETED", k)
	})
	termAt := time.Now()
	sched1.Signal(t, syscall.SIGTERM)
	if code := sched1.Wait(t, exitTimeout); code != 0 {
		t.Errorf("the scheduler exited %d after SIGTERM, want 0", code)
	}
	_, byState := store.stateCounts()
	t.Logf("scheduler stopped %s after SIGTERM; jobs by state then: %v", time.Since(termAt).Round(time.Millisecond), byState)
	sched1.WaitForLog(t, time.Second, "stopped", "id", "sched-1")
	if byState["COMPLETED"] >= before {
		t.Fatalf("every job had finished before the SIGTERM: nothing was in flight")
	}

	submitMany(t, c, b, ids, before, total, func(int) bool { return false }) // no scheduler: plain publishes
	sched2 := startScheduler(t, "sched-2", url, cfg)
	restartAt := time.Now()
	systest.Poll(t, 30*time.Second, 50*time.Millisecond, "all jobs COMPLETED after the restart", func() (bool, string) {
		k, _ := store.count()
		_, by := store.stateCounts()
		return k == total, fmt.Sprintf("%d COMPLETED; %v", k, by)
	})
	t.Logf("all %d jobs COMPLETED %s after the restart", total, time.Since(restartAt).Round(time.Millisecond))
	if k, twice := store.count(); k != total || len(twice) > 0 {
		t.Errorf("job store: %d COMPLETED (want %d), completed twice: %v", k, total, twice)
	}
	perJob := map[string]int{}
	for _, s := range []*systest.Proc{sched1, sched2} {
		for _, a := range s.FindLogs("job changed state", "state", "COMPLETED") {
			perJob[a["job_id"]]++
		}
	}
	for _, id := range ids {
		if perJob[id] != 1 {
			t.Errorf("job %s: the schedulers recorded %d completions, want 1", id, perJob[id])
		}
	}
}
