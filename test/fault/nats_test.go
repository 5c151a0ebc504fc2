package fault

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// NATS restarted on the same port and data directory while jobs are in
// flight: the scheduler and the workers reconnect by themselves, and every
// job, submitted before the restart or after it, reaches COMPLETED, once.
func TestNATSRestartOnSameDataDir(t *testing.T) {
	requireBinaries(t)
	n := startNATS(t)
	url := n.URL()
	_, c := natsOutage(t, url, "natsrestart", "restart (down 1s)", func(i int) bool { return i%2 == 0 }, func() {
		n.Restart(t, time.Second)
	})
	if k := countJobs(c, pb.JobState_JOB_STATE_UNSPECIFIED); k != 300 {
		t.Errorf("the store holds %d jobs, want 300", k)
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
	procs, _ := natsOutage(t, url, "natskill", "kill -9 (down 1s)", func(int) bool { return true }, func() {
		n.Kill(t)
		time.Sleep(time.Second) // the outage's length, not an assertion
		startServer("nats-again")
	})
	// The server started last would be stopped first (cleanups run last in,
	// first out): stop the processes that use it while it runs.
	for _, p := range procs {
		p.Stop(t, exitTimeout)
	}
}

// natsOutage runs a scheduler and two echo workers on url, submits 200 jobs
// (confirmed says which submissions wait for the scheduler's answer),
// brings NATS down with outage once some have COMPLETED, waits for every
// process to reconnect, submits 100 more, and checks that every job
// COMPLETED with its result and that the scheduler recorded each
// completion once. It returns the processes it started (the workers, then
// the scheduler) and the test's client.
func natsOutage(t *testing.T, url, prefix, what string, confirmed func(int) bool, outage func()) ([]*systest.Proc, *client.Client) {
	t.Helper()
	cfg := writeConfig(t, fastTimers)
	sched := startScheduler(t, "sched", url, cfg)
	var workers []*systest.Proc
	for _, id := range []string{"worker-1", "worker-2"} {
		workers = append(workers, startWorker(t, id, url, cfg, "--work-time", "100ms-300ms", "--concurrency", "8"))
		waitWorkerKnown(t, sched, id)
	}
	procs := append(workers, sched)
	c, b := newClient(t, url)

	const before, total = 200, 300
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%03d", prefix, i)
	}
	submitMany(t, c, b, ids, 0, before, confirmed)
	systest.Poll(t, 20*time.Second, 50*time.Millisecond, "some jobs COMPLETED before the "+what, func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k >= 30, fmt.Sprintf("%d COMPLETED", k)
	})
	inFlight := before - countJobs(c, lifecycle.Completed)
	downAt := time.Now()
	outage()
	t.Logf("NATS %s with about %d of %d jobs not finished", what, inFlight, before)

	// The processes reconnect by themselves; the test's client does too.
	for _, p := range procs {
		p.WaitForLog(t, 15*time.Second, "bus reconnected")
	}
	submitMany(t, c, b, ids, before, total, func(int) bool { return true })

	systest.Poll(t, 30*time.Second, 100*time.Millisecond, "all jobs COMPLETED after the "+what, func() (bool, string) {
		k := countJobs(c, lifecycle.Completed)
		return k == total, fmt.Sprintf("%d of %d COMPLETED; not: %s", k, total, unfinished(c, ids))
	})
	t.Logf("all %d jobs COMPLETED %s after the NATS %s", total, time.Since(downAt).Round(time.Millisecond), what)
	for _, id := range ids {
		if j := getJob(c, id); j == nil || j.GetState() != lifecycle.Completed || j.GetResultPtr() != "memory://echo/"+id {
			t.Errorf("job %s: %s", id, describe(j))
		}
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
	return procs, c
}
