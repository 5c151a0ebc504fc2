package fault

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// NATS restarted on the same port and data directory while jobs are in
// flight: the scheduler and the workers reconnect by themselves, and every
// job, submitted before the restart or after it, reaches COMPLETED, once.
func TestNATSRestartOnSameDataDir(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	var workers []*systest.Proc
	for _, id := range []string{"worker-1", "worker-2"} {
		workers = append(workers, startWorker(t, id, url, cfg, "--work-time", "100ms-300ms", "--concurrency", "8"))
		waitWorkerKnown(t, sched, id)
	}
	c, b := newClient(t, url)

	const before, total = 200, 300
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("natsrestart-%03d", i)
	}
	submitMany(t, c, b, ids, 0, before, func(i int) bool { return i%2 == 0 })
	systest.Poll(t, 20*time.Second, 50*time.Millisecond, "some jobs COMPLETED before the restart", func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k >= 30, fmt.Sprintf("%d COMPLETED", k)
	})
	inFlight := before - countJobs(c, lifecycle.Completed)
	restartedAt := time.Now()
	n.Restart(t, time.Second)
	t.Logf("NATS down for 1s with about %d of %d jobs not finished", inFlight, before)

	// The processes reconnect by themselves; the test's client does too.
	for _, p := range append(workers, sched) {
		p.WaitForLog(t, 15*time.Second, "bus reconnected")
	}
	submitMany(t, c, b, ids, before, total, func(int) bool { return true })

	systest.Poll(t, 20*time.Second, 100*time.Millisecond, "all jobs COMPLETED after the NATS restart", func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k == total, fmt.Sprintf("%d of %d COMPLETED; not: %s", k, total, unfinished(c, ids))
	})
	t.Logf("all %d jobs COMPLETED %s after NATS went down (1s outage)", total, (time.Since(restartedAt)).Round(time.Millisecond))

	for _, id := range ids {
		if j := getJob(c, id); j == nil || j.GetState() != lifecycle.Completed || j.GetResultPtr() != "memory://echo/"+id {
			t.Errorf("job %s: %s", id, describe(j))
		}
	}
	if k := countJobs(c, pb.JobState_JOB_STATE_UNSPECIFIED); k != total {
		t.Errorf("the store holds %d jobs, want %d", k, total)
	}
	// Once: the scheduler recorded at most one completion per job. (A watch
	// of the store from here cannot say it: a KV watcher hears nothing for
	// some 15-20s after a server restart, until nats.go's ordered consumer
	// notices its missing heartbeats.)
	perJob := map[string]int{}
	for _, a := range sched.FindLogs("job changed state", "state", "COMPLETED") {
		perJob[a["job_id"]]++
	}
	for id, k := range perJob {
		if k > 1 {
			t.Errorf("job %s: the scheduler recorded %d completions", id, k)
		}
	}
}

// NATS killed with kill -9 (its own process: `cortex server`) while jobs are
// in flight, then started again on the same port and data directory: every
// job the scheduler confirmed before the kill, and every job submitted
// after it, reaches COMPLETED, once. The intake streams keep what they
// capture under limits and their consumer's acknowledgements with the
// consumer: what the server had not written of those when it died is
// delivered again (a resubmission, a result for a finished job), never lost.
func TestNATSKill9OnSameDataDir(t *testing.T) {
	requireBinaries(t)
	port := fmt.Sprint(systest.FreePort(t))
	dir := t.TempDir()
	url := "nats://127.0.0.1:" + port
	startServer := func(label string) *systest.Proc {
		p := start(t, binCortex, label, "server", "--host", "127.0.0.1", "--port", port, "--http-port", "0", "--data-dir", dir)
		p.WaitForLine(t, startTimeout, "NATS listening", func(line string) bool { return strings.Contains(line, "NATS listening") })
		return p
	}
	n := startServer("nats")
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	var workers []*systest.Proc
	for _, id := range []string{"worker-1", "worker-2"} {
		workers = append(workers, startWorker(t, id, url, cfg, "--work-time", "100ms-300ms", "--concurrency", "8"))
		waitWorkerKnown(t, sched, id)
	}
	c, b := newClient(t, url)

	const before, total = 200, 300
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("natskill-%03d", i)
	}
	submitMany(t, c, b, ids, 0, before, func(int) bool { return true })
	systest.Poll(t, 20*time.Second, 50*time.Millisecond, "some jobs COMPLETED before the kill", func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k >= 30, fmt.Sprintf("%d COMPLETED", k)
	})
	inFlight := before - countJobs(c, lifecycle.Completed)
	killedAt := time.Now()
	n.Kill(t)
	time.Sleep(time.Second)
	startServer("nats-again")
	t.Logf("NATS killed (kill -9), down for 1s, with about %d of %d jobs not finished", inFlight, before)

	for _, p := range append(workers, sched) {
		p.WaitForLog(t, 15*time.Second, "bus reconnected")
	}
	submitMany(t, c, b, ids, before, total, func(int) bool { return true })

	systest.Poll(t, 30*time.Second, 100*time.Millisecond, "all jobs COMPLETED after the kill", func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k == total, fmt.Sprintf("%d of %d COMPLETED; not: %s", k, total, unfinished(c, ids))
	})
	t.Logf("all %d jobs COMPLETED %s after NATS was killed", total, time.Since(killedAt).Round(time.Millisecond))
	for _, id := range ids {
		if j := getJob(c, id); j == nil || j.GetState() != lifecycle.Completed || j.GetResultPtr() != "memory://echo/"+id {
			t.Errorf("job %s: %s", id, describe(j))
		}
	}
	perJob := map[string]int{}
	for _, a := range sched.FindLogs("job changed state", "state", "COMPLETED") {
		perJob[a["job_id"]]++
	}
	for id, k := range perJob {
		if k > 1 {
			t.Errorf("job %s: the scheduler recorded %d completions", id, k)
		}
	}
	// The server started last would be stopped first (cleanups run last in,
	// first out): stop the processes that use it while it runs.
	for _, p := range append(workers, sched) {
		p.Stop(t, exitTimeout)
	}
}
