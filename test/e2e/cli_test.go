package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// changeRE is a line of `cortex job watch` (and of `cortex submit --wait`):
// time, state, attempt, worker, then the reason or where the result is.
var changeRE = regexp.MustCompile(`^\d\d:\d\d:\d\d\.\d{3}  ([A-Z]+) +attempt=(\d+)  worker=(\S+)(?:  (.*))?$`)

type change struct{ State, Attempt, Worker, Why string }

// changes parses the watch lines of out; other lines are skipped.
func changes(out string) []change {
	var cs []change
	for _, line := range systest.Lines(out) {
		if m := changeRE.FindStringSubmatch(line); m != nil {
			cs = append(cs, change{State: m[1], Attempt: m[2], Worker: m[3], Why: m[4]})
		}
	}
	return cs
}

// keyValues parses the "key: value" lines of `cortex job get`.
func keyValues(out string) map[string]string {
	kv := map[string]string{}
	for _, line := range systest.Lines(out) {
		if k, v, ok := strings.Cut(line, ":"); ok {
			kv[k] = strings.TrimSpace(v)
		}
	}
	return kv
}

// tableRow finds the row of the job in a `cortex job list` or `cortex dlq
// list` table, as its columns.
func tableRow(t *testing.T, table, jobID string) []string {
	t.Helper()
	lines := systest.Lines(table)
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "JOB_ID") {
		t.Fatalf("table without a JOB_ID header:\n%s", table)
	}
	for _, line := range lines[1:] {
		if f := strings.Fields(line); len(f) > 0 && f[0] == jobID {
			return f
		}
	}
	return nil
}

func hasJob(jobs []jobView, id string) bool {
	for _, j := range jobs {
		if j.JobID == id {
			return true
		}
	}
	return false
}

// The client's view against the default store (JetStream, which the test
// server has): submit --wait follows an echo job to COMPLETED; job get (human
// and JSON), job list and job watch show it; resubmitting it is harmless, a
// different job under its id is refused, and an unknown id is an error.
func TestCLISubmitWaitAndInspect(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url)
	sched.WaitForLog(t, logTimeout, "job store", "store", "jetstream")
	// --inline: the echo handler (no work time) runs on the delivery goroutine.
	w, workerID := startWorker(t, url, "--inline")
	if running := w.WaitForLog(t, startTimeout, "running"); running["inline"] != "true" {
		t.Errorf("worker running line %v, want inline=true", running)
	}
	env := []string{"NATS_URL=" + url}

	const id = "cli-echo-1"
	out := cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", id, "--env", "GREETING=hi", "--wait")
	first := systest.ParseAttrs(systest.Lines(out)[0])
	if first["job_id"] != id || first["topic"] != "job.echo" || first["trace_id"] == "" {
		t.Fatalf("submit --wait: first line %q, want job_id=%s trace_id=… topic=job.echo", systest.Lines(out)[0], id)
	}
	cs := changes(out)
	if len(cs) < 2 || cs[0].State != "DISPATCHED" || cs[0].Attempt != "1" {
		t.Fatalf("submit --wait: changes %+v, want DISPATCHED (at once, attempt 1) first, then on to COMPLETED\n%s", cs, out)
	}
	last := cs[len(cs)-1]
	if last.State != "COMPLETED" || last.Attempt != "1" || last.Worker != workerID || last.Why != "result_ptr=memory://echo/"+id {
		t.Errorf("submit --wait: last change %+v, want COMPLETED attempt=1 worker=%s result_ptr=memory://echo/%s", last, workerID, id)
	}
	sched.WaitForLog(t, logTimeout, "result", "job_id", id, "status", "JOB_STATUS_COMPLETED", "trace_id", first["trace_id"])

	j := getJob(t, url, id)
	want := jobView{JobID: id, State: "COMPLETED", Attempts: 1, MaxAttempts: j.MaxAttempts, WorkerID: workerID,
		ResultPtr: "memory://echo/" + id, Topic: "job.echo", TraceID: first["trace_id"], Created: j.Created, Updated: j.Updated}
	if j != want {
		t.Errorf("job get --json:\n got %+v\nwant %+v", j, want)
	}
	if j.MaxAttempts < 1 {
		t.Errorf("job get --json: max_attempts=%d", j.MaxAttempts)
	}

	kv := keyValues(cortexOK(t, env, "job", "get", id))
	for k, v := range map[string]string{"job_id": id, "state": "COMPLETED", "attempts": "1", "worker_id": workerID,
		"result_ptr": "memory://echo/" + id, "error": "-", "topic": "job.echo", "env": "GREETING=hi"} {
		if kv[k] != v {
			t.Errorf("job get: %s: %q, want %q", k, kv[k], v)
		}
	}

	row := tableRow(t, cortexOK(t, env, "job", "list", "--state", "COMPLETED"), id)
	if len(row) < 5 || row[1] != "COMPLETED" || row[2] != "1" || row[3] != workerID {
		t.Errorf("job list --state COMPLETED: row %q, want %s COMPLETED 1 %s …", row, id, workerID)
	}
	completed := listJobs(t, url, "job", "list", "--state", "completed")
	if !hasJob(completed, id) {
		t.Errorf("job list --state completed --json: %s missing", id)
	}
	for _, c := range completed {
		if c.State != "COMPLETED" {
			t.Errorf("job list --state completed --json: %s is %s", c.JobID, c.State)
		}
	}
	if hasJob(listJobs(t, url, "job", "list", "--state", "PENDING"), id) {
		t.Errorf("job list --state PENDING lists the completed %s", id)
	}

	// Paging: the newest job first, and a token for the rest, on stderr.
	cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", id+"-b", "--tenant", "paged", "--wait")
	p, code := cortex(t, env, "job", "list", "--limit", "1", "--json")
	newest := decodeJobs(t, p.Stdout())
	tok, found := strings.CutPrefix(strings.TrimSpace(p.Stderr()), "more jobs: --page-token ")
	if code != 0 || len(newest) != 1 || newest[0].JobID != id+"-b" || !found || tok == "" {
		t.Fatalf("job list --limit 1: exit %d, %+v, stderr %q; want %s-b and a page token", code, newest, p.Stderr(), id)
	}
	if older := listJobs(t, url, "job", "list", "--page-token", tok); !hasJob(older, id) || hasJob(older, id+"-b") {
		t.Errorf("job list --page-token: %+v; want %s, not %s-b", older, id, id)
	}
	if mine := listJobs(t, url, "job", "list", "--tenant", "paged"); len(mine) != 1 || mine[0].JobID != id+"-b" {
		t.Errorf("job list --tenant paged: %+v; want %s-b alone", mine, id)
	}

	// A watch of a finished job prints where it ended and exits 0.
	cs = changes(cortexOK(t, env, "job", "watch", id))
	if len(cs) != 1 || cs[0].State != "COMPLETED" {
		t.Errorf("job watch of a completed job: %+v, want one COMPLETED line", cs)
	}

	// --json --wait prints one object: the job as it ended.
	done := decodeJob(t, []byte(cortexOK(t, env, "submit", "--topic", "job.echo", "--wait", "--json")))
	if done.State != "COMPLETED" || done.JobID == "" || done.WorkerID != workerID {
		t.Errorf("submit --wait --json: %+v, want a COMPLETED job", done)
	}

	// The same job again is the same job; another under its id is refused.
	again := systest.ParseAttrs(cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", id, "--env", "GREETING=hi"))
	if again["job_id"] != id || again["state"] != "COMPLETED" {
		t.Errorf("resubmitting %s: %v, want the existing COMPLETED job", id, again)
	}
	cortexFails(t, env, "already exists with different content", "submit", "--topic", "job.echo", "--job-id", id, "--env", "GREETING=bye")

	cortexFails(t, env, "not found", "job", "get", "no-such-job")
	cortexFails(t, env, "not found", "job", "get", "no-such-job", "--json")
	cortexFails(t, env, "not found", "job", "watch", "no-such-job")
}

// Cancelling, refusals and deadlines, with the scheduler's memory store and
// the NATS URL from a config file: a job for a topic no worker serves stays
// PENDING with its reason until it is cancelled (a watcher sees it end);
// a job the safety policy refuses is DENIED at submission; a job that nobody
// takes ends TIMEOUT at its deadline.
func TestCLICancelDenyDeadline(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url, "--store", "memory")
	sched.WaitForLog(t, logTimeout, "job store", "store", "memory")
	cfg := filepath.Join(t.TempDir(), "cortex.yaml")
	if err := os.WriteFile(cfg, []byte("nats_url: "+url+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := func(args ...string) []string { return append(args, "--config", cfg) }

	const id = "cli-nobody-1"
	sub := systest.ParseAttrs(cortexOK(t, nil, conf("submit", "--topic", "job.nobody", "--job-id", id)...))
	// Placement (the default) knows no worker serves job.nobody: the job is
	// recorded PENDING and stays so, never dispatched.
	if sub["job_id"] != id || sub["state"] != "PENDING" {
		t.Fatalf("submit: %v, want job_id=%s state=PENDING", sub, id)
	}
	watch := start(t, binCortex, nil, conf("job", "watch", id)...)
	const why = "no live worker serves job.nobody"
	waitForText(t, watch, why)
	j := getJob(t, url, id)
	if j.State != "PENDING" || j.PendingReason != why || j.Attempts != 0 || j.WorkerID != "" {
		t.Errorf("job get: %+v, want PENDING, attempts 0, no worker, pending_reason %q", j, why)
	}
	systest.Eventually(t, logTimeout, "job list --state PENDING to list "+id, func() bool {
		return tableRow(t, cortexOK(t, nil, conf("job", "list", "--state", "PENDING")...), id) != nil
	})

	out := systest.ParseAttrs(cortexOK(t, nil, conf("job", "cancel", id, "--reason", "changed my mind")...))
	if out["job_id"] != id || out["state"] != "CANCELLED" || out["reason"] != "changed my mind" {
		t.Errorf("job cancel: %v, want job_id=%s state=CANCELLED reason=%q", out, id, "changed my mind")
	}
	if code := watch.Wait(t, exitTimeout); code != 1 {
		t.Errorf("job watch of a job cancelled exited %d, want 1", code)
	}
	if cs := changes(watch.Stdout()); len(cs) < 2 || cs[0].State != "PENDING" ||
		cs[len(cs)-1].State != "CANCELLED" || cs[len(cs)-1].Worker != "-" || cs[len(cs)-1].Why != "changed my mind" {
		t.Errorf("job watch: changes %+v, want PENDING … CANCELLED (changed my mind)", cs)
	}
	if err := watch.Stderr(); !strings.Contains(err, "ended CANCELLED: changed my mind") {
		t.Errorf("job watch: stderr %q does not say it ended CANCELLED", err)
	}
	if was := sched.WaitForLog(t, logTimeout, "job cancelled", "job_id", id)["was"]; was != "PENDING" {
		t.Errorf("the scheduler cancelled the job in state %s, want PENDING", was)
	}
	if _, ok := sched.FindLog("dispatched", "job_id", id); ok {
		t.Errorf("the job.nobody job was dispatched with no worker for it")
	}
	if j := getJob(t, url, id); j.State != "CANCELLED" || j.Error != "changed my mind" {
		t.Errorf("job get after cancel: state=%s error=%q, want CANCELLED, %q", j.State, j.Error, "changed my mind")
	}
	if !hasJob(listJobs(t, url, "job", "list", "--state", "CANCELLED"), id) {
		t.Errorf("job list --state CANCELLED: %s missing", id)
	}
	cortexFails(t, nil, "already CANCELLED", conf("job", "cancel", id)...)
	cortexFails(t, nil, "not found", conf("job", "cancel", "no-such-job")...)

	// Refused by the safety policy: DENIED, exit 1, the reason on stderr;
	// with --json the DENIED job is on stdout too.
	denied := cortexFails(t, nil, "forbidden topic", conf("submit", "--topic", "sys.destroy", "--job-id", "cli-destroy-1", "--json")...)
	if j := decodeJob(t, []byte(denied.Stdout())); j.State != "DENIED" || j.JobID != "cli-destroy-1" {
		t.Errorf("submit --json of a denied job printed %+v", j)
	}
	if !strings.Contains(denied.Stderr(), "DENIED") {
		t.Errorf("submit of a denied job: stderr %q does not say DENIED", denied.Stderr())
	}
	if j := getJob(t, url, "cli-destroy-1"); j.State != "DENIED" {
		t.Errorf("denied job: state=%s", j.State)
	}

	// Nobody takes it, and its deadline is 1 s away: it ends TIMEOUT, saying
	// it was still pending and why.
	p := cortexFails(t, nil, "ended TIMEOUT", conf("submit", "--topic", "job.nobody", "--job-id", "cli-ttl-1", "--ttl", "1s", "--wait")...)
	if !strings.Contains(p.Stderr(), "job.nobody") {
		t.Errorf("submit --ttl 1s --wait: stderr %q does not say why (job.nobody)", p.Stderr())
	}
	if cs := changes(p.Stdout()); len(cs) == 0 || cs[len(cs)-1].State != "TIMEOUT" {
		t.Errorf("submit --ttl 1s --wait: changes %+v, want TIMEOUT last", cs)
	}

	// --wait-timeout gives up on a job that goes on, saying where it is.
	p = cortexFails(t, nil, "after 500ms", conf("submit", "--topic", "job.nobody", "--wait", "--wait-timeout", "500ms")...)
	if st := p.Stderr(); !strings.Contains(st, "is still PENDING after 500ms: "+why) {
		t.Errorf("submit --wait-timeout 500ms: stderr %q does not say where the job is", st)
	}
	if !strings.Contains(p.Stdout(), why) {
		t.Errorf("submit --wait-timeout 500ms: the changes %q do not show why it waits", p.Stdout())
	}
}

// startPoisonWorker runs a worker for job.poison the way the design document
// describes one (a NATS subscription that publishes results, no runtime): it
// fails every job, except the re-driven ones, which it completes.
func startPoisonWorker(t *testing.T, url string) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe("job.poison", func(m *nats.Msg) {
		var p pb.BusPacket
		if err := proto.Unmarshal(m.Data, &p); err != nil || p.GetJobRequest() == nil {
			return
		}
		req := p.GetJobRequest()
		res := &pb.JobResult{JobId: req.GetJobId(), WorkerId: "worker-poison", Attempt: req.GetAttempt()}
		if strings.Contains(req.GetJobId(), "-redrive-") {
			res.Status, res.ResultPtr = pb.JobStatus_JOB_STATUS_COMPLETED, "memory://poison/"+req.GetJobId()
		} else {
			res.Status, res.Error = pb.JobStatus_JOB_STATUS_FAILED, "poison: cannot digest "+req.GetJobId()
		}
		data, err := proto.Marshal(wire.JobResultPacket(p.GetTraceId(), "worker-poison", res))
		if err != nil {
			t.Error(err)
			return
		}
		_ = nc.Publish(wire.SubjectResult, data)
	})
	if err != nil {
		t.Fatal(err)
	}
	// It heartbeats as the document's workers do, every 5 s, with what a
	// v1.0 heartbeat has (no topics, no capacity): placement then leaves
	// the topics of such workers to their queue group.
	beat := func() {
		hb := &pb.Heartbeat{WorkerId: "worker-poison", Region: "local", Type: "cpu", CpuLoad: 1}
		if data, err := proto.Marshal(wire.HeartbeatPacket("hb-worker-poison", "worker-poison", hb)); err == nil {
			_ = nc.Publish(wire.HeartbeatSubject("poison"), data)
		}
	}
	beat()
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		tick := time.NewTicker(5 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				beat()
			}
		}
	}()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// waitJob polls `cortex job get --json` until the job satisfies cond, and
// returns it.
func waitJob(t *testing.T, url, id, what string, cond func(jobView) bool) jobView {
	t.Helper()
	var j jobView
	systest.Eventually(t, logTimeout, "job "+id+" "+what, func() bool {
		j = getJob(t, url, id)
		return cond(j)
	})
	return j
}

// A job that fails every attempt ends FAILED in the dead-letter queue:
// submit --wait exits 1, dlq list shows it, dlq retry runs it again as a new
// job (which completes) and takes it out of the queue.
func TestCLIDeadLetters(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	startScheduler(t, url)
	startPoisonWorker(t, url)
	env := []string{"NATS_URL=" + url}

	const id = "cli-poison-1"
	p := cortexFails(t, env, "ended FAILED", "submit", "--topic", "job.poison", "--job-id", id, "--max-attempts", "2", "--wait")
	if !strings.Contains(p.Stderr(), "poison: cannot digest "+id) {
		t.Errorf("submit --wait of a poison job: stderr %q does not give the worker's error", p.Stderr())
	}
	j := getJob(t, url, id)
	if j.State != "FAILED" || j.Attempts != 2 || j.FailedAttempts != 2 || j.MaxAttempts != 2 || j.WorkerID != "worker-poison" {
		t.Errorf("poison job: %+v, want FAILED after 2 failed attempts of 2 on worker-poison", j)
	}

	dead := listJobs(t, url, "dlq", "list")
	if !hasJob(dead, id) {
		t.Fatalf("dlq list --json: %s missing (%+v)", id, dead)
	}
	if row := tableRow(t, cortexOK(t, env, "dlq", "list"), id); len(row) < 2 || row[1] != "FAILED" {
		t.Errorf("dlq list: row %q, want %s FAILED …", row, id)
	}

	retry := systest.ParseAttrs(cortexOK(t, env, "dlq", "retry", id))
	newID := retry["job_id"]
	if newID != id+"-redrive-1" || retry["redriven_from"] != id {
		t.Fatalf("dlq retry: %v, want job_id=%s-redrive-1 redriven_from=%s", retry, id, id)
	}
	cs := changes(cortexOK(t, env, "job", "watch", newID))
	if len(cs) == 0 || cs[len(cs)-1].State != "COMPLETED" || cs[len(cs)-1].Why != "result_ptr=memory://poison/"+newID {
		t.Errorf("job watch of the re-driven job: %+v, want COMPLETED with result_ptr=memory://poison/%s", cs, newID)
	}
	if hasJob(listJobs(t, url, "dlq", "list"), id) {
		t.Errorf("dlq list: %s is still there after dlq retry", id)
	}
	if j := getJob(t, url, id); j.State != "FAILED" {
		t.Errorf("the re-driven job itself is %s, want FAILED still", j.State)
	}
	cortexFails(t, env, "dead letter "+id, "dlq", "retry", id)
}

// Without a scheduler, without NATS, or with a bad flag or config, every
// client command fails with exit 1 and one clear line.
func TestCLIErrors(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t) // NATS, but no scheduler
	env := []string{"NATS_URL=" + url}

	for _, args := range [][]string{
		{"job", "get", "some-job"},
		{"job", "watch", "some-job"},
		{"job", "cancel", "some-job"},
		{"job", "list"},
		{"dlq", "list"},
		{"dlq", "retry", "some-job"},
	} {
		cortexFails(t, env, "no scheduler is answering on "+url, args...)
	}
	began := time.Now()
	cortexFails(t, env, "no answer from a scheduler on "+url+" within 500ms",
		"submit", "--topic", "job.echo", "--request-timeout", "500ms")
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("submit --request-timeout 500ms took %s", took)
	}

	closed := closedURL(t)
	cortexFails(t, nil, "cannot reach NATS at "+closed, "job", "list", "--nats-url", closed)
	// --nats-url wins over NATS_URL.
	cortexFails(t, env, "cannot reach NATS at "+closed, "job", "get", "x", "--nats-url", closed)

	bad := filepath.Join(t.TempDir(), "cortex.yaml")
	if err := os.WriteFile(bad, []byte("bogus_key: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := cortexFails(t, env, "bogus_key", "job", "list", "--config", bad)
	if !strings.Contains(p.Stderr(), bad) {
		t.Errorf("bad config: stderr %q does not name the file", p.Stderr())
	}

	cortexFails(t, env, "unknown state", "job", "list", "--state", "DONE")
	cortexFails(t, env, "want batch, interactive or critical", "submit", "--topic", "job.echo", "--priority", "urgent")
	cortexFails(t, env, "want KEY=VALUE", "submit", "--topic", "job.echo", "--env", "NOEQUALS")
	cortexFails(t, env, `"topic" not set`, "submit")
	cortexFails(t, env, "accepts 1 arg", "job", "get")
}

// A watch outlives the scheduler: killed with SIGKILL and started again on
// the same JetStream, the scheduler still has the job, and the watch, which
// kept asking, sees it end.
func TestCLIWatchAcrossSchedulerRestart(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url)
	env := []string{"NATS_URL=" + url}

	const id = "cli-restart-1"
	cortexOK(t, env, "submit", "--topic", "job.nobody", "--job-id", id)
	watch := start(t, binCortex, env, "job", "watch", id)
	waitForText(t, watch, "PENDING")

	sched.Kill(t)
	startScheduler(t, url)
	// Still waiting for a worker: PENDING, or DISPATCHED for the moment the
	// new scheduler offers it to job.nobody again.
	if j := getJob(t, url, id); !slices.Contains([]string{"PENDING", "DISPATCHED"}, j.State) {
		t.Fatalf("after the scheduler's restart the job is %s, want PENDING (or DISPATCHED)", j.State)
	}
	cortexOK(t, env, "job", "cancel", id, "--reason", "after the restart")
	if code := watch.Wait(t, exitTimeout); code != 1 {
		t.Errorf("job watch exited %d, want 1 (CANCELLED)", code)
	}
	if cs := changes(watch.Stdout()); len(cs) == 0 || cs[len(cs)-1].State != "CANCELLED" || cs[len(cs)-1].Why != "after the restart" {
		t.Errorf("job watch across a restart: %+v, want CANCELLED (after the restart) last", cs)
	}
}

// cortex workers lists what the worker binary reports; cortex submit
// carries a job's requirements to the scheduler, and job get shows them.
func TestCLIWorkersAndRequirements(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	startScheduler(t, url)
	_, workerID := startWorker(t, url, "--capacity", "3", "--capabilities", "echo,gpu", "--labels", "gpu=h100,region=eu")
	env := []string{"NATS_URL=" + url}

	var ws []struct {
		WorkerID     string            `json:"worker_id"`
		Capacity     int               `json:"capacity"`
		Capabilities []string          `json:"capabilities"`
		Labels       map[string]string `json:"labels"`
		LastSeen     string            `json:"last_seen"`
	}
	systest.Eventually(t, logTimeout, "the worker listed", func() bool {
		ws = ws[:0]
		if err := json.Unmarshal([]byte(cortexOK(t, env, "workers", "--json")), &ws); err != nil {
			t.Fatal(err)
		}
		return len(ws) == 1
	})
	w := ws[0]
	if w.WorkerID != workerID || w.Capacity != 3 || !slices.Contains(w.Capabilities, "gpu") ||
		w.Labels["region"] != "eu" || w.LastSeen == "" {
		t.Errorf("workers --json: %+v", w)
	}
	table := cortexOK(t, env, "workers")
	if !strings.Contains(table, workerID) || !strings.Contains(table, "gpu=h100,region=eu") {
		t.Errorf("workers:\n%s", table)
	}

	cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", "needs-gpu", "--tenant", "acme",
		"--require", "gpu", "--label", "region=eu", "--priority", "critical", "--wait")
	kv := keyValues(cortexOK(t, env, "job", "get", "needs-gpu"))
	if kv["tenant"] != "acme" || kv["state"] != "COMPLETED" || kv["worker_id"] != workerID || kv["priority"] != "critical" {
		t.Errorf("job get: %v", kv)
	}
	cortexFails(t, env, "want KEY=VALUE", "submit", "--topic", "job.echo", "--label", "gpu")
}

// The scheduler binary with --policy: a denied job says which rule denied it,
// in the refusal and in job get; with --placement, a job needing a capability
// nobody has waits and job get says why.
func TestCLIPolicyAndPlacementFlags(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(`version: "e2e-1"
rules:
  - id: no-secrets
    match: {env_vars: ["*_SECRET"]}
    decision: deny
    reason: pass secrets by reference
`), 0o644); err != nil {
		t.Fatal(err)
	}
	place := filepath.Join(dir, "placement.yaml")
	if err := os.WriteFile(place, []byte("default_strategy: least-loaded\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := natstest.URL(t)
	sched := startScheduler(t, url, "--policy", policy, "--placement", place)
	sched.WaitForLog(t, logTimeout, "policy in force", "version", "e2e-1")
	startWorker(t, url, "--capabilities", "echo", "--direct")
	env := []string{"NATS_URL=" + url}

	cortexFails(t, env, "rule no-secrets", "submit", "--topic", "job.echo", "--job-id", "leaky", "--env", "DB_SECRET=x")
	kv := keyValues(cortexOK(t, env, "job", "get", "leaky"))
	if kv["state"] != "DENIED" || kv["rule_id"] != "no-secrets" || kv["policy_version"] != "e2e-1" {
		t.Errorf("job get of a denied job: %v", kv)
	}
	sched.WaitForLog(t, logTimeout, "denied", "component", "safety", "job_id", "leaky", "rule_id", "no-secrets")

	cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", "plain", "--wait")
	cortexOK(t, env, "submit", "--topic", "job.echo", "--job-id", "needs-gpu", "--require", "gpu")
	waitJob(t, url, "needs-gpu", "a pending reason", func(j jobView) bool {
		return j.State == "PENDING" && strings.Contains(j.PendingReason, "no live worker with capability gpu")
	})
}
