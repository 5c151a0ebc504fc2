package e2e

import (
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

// The README's per-binary way: NATS, cortex-scheduler and cortex-worker-echo
// as separate processes, then send_echo_job; every step of the job is logged
// with its trace_id, and SIGINT stops both cleanly.
func TestPerBinaryFlow(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)

	sched := startScheduler(t, url)
	worker, workerID := startWorker(t, url)
	if !strings.HasPrefix(workerID, "worker-echo-") {
		t.Errorf("worker_id=%q, want the default worker-echo-<host>-<random>", workerID)
	}
	// The worker heartbeats as soon as it runs, and the scheduler is already
	// listening.
	sched.WaitForLog(t, logTimeout, "heartbeat", "worker_id", workerID)

	s, r := sendEcho(t, url)
	if r.WorkerID != workerID {
		t.Errorf("Result worker_id=%s, want the worker's %s", r.WorkerID, workerID)
	}
	if want := "memory://echo/" + s.JobID; r.ResultPtr != want {
		t.Errorf("Result result_ptr=%s, want %s", r.ResultPtr, want)
	}

	sched.WaitForLog(t, logTimeout, "submitted", "job_id", s.JobID, "topic", "job.echo", "trace_id", s.TraceID)
	// Placed (the default): on the worker's own subject, counted against it.
	sched.WaitForLog(t, logTimeout, "dispatched", "job_id", s.JobID, "subject", wire.WorkerJobSubject(workerID),
		"worker_id", workerID, "trace_id", s.TraceID)
	sched.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "status", "JOB_STATUS_COMPLETED",
		"worker_id", workerID, "trace_id", s.TraceID)
	worker.WaitForLog(t, logTimeout, "job", "job_id", s.JobID, "topic", "job.echo",
		"context_ptr", "memory://echo_ctx/"+s.JobID, "trace_id", s.TraceID)
	worker.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "status", "JOB_STATUS_COMPLETED", "trace_id", s.TraceID)
	// The scheduler (its default store: JetStream, which the server has)
	// remembers the job as the sender saw it end.
	sched.WaitForLog(t, logTimeout, "job store", "store", "jetstream")
	if j := getJob(t, url, s.JobID); j.State != "COMPLETED" || j.Attempts != 1 || j.WorkerID != workerID || j.TraceID != s.TraceID {
		t.Errorf("job get: %+v, want COMPLETED, attempt 1, worker %s, trace_id %s", j, workerID, s.TraceID)
	}

	sched.Interrupt(t)
	worker.Interrupt(t)
	if code := sched.Wait(t, exitTimeout); code != 0 {
		t.Errorf("cortex-scheduler exited %d after SIGINT, want 0", code)
	}
	if code := worker.Wait(t, exitTimeout); code != 0 {
		t.Errorf("cortex-worker-echo exited %d after SIGINT, want 0", code)
	}
	if _, ok := sched.FindLog("stopped"); !ok {
		t.Errorf("cortex-scheduler did not log that it stopped")
	}
	if _, ok := worker.FindLog("stopped", "worker_id", workerID); !ok {
		t.Errorf("cortex-worker-echo did not log that it stopped")
	}
}

var devURLRE = regexp.MustCompile(`NATS listening on (nats://\S+)`)

// `cortex dev` runs everything in one process: the job goes through its
// embedded NATS, scheduler and worker, and SIGINT stops the workers, then the
// scheduler, then NATS.
func TestDev(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	dev := start(t, binCortex, nil, "dev", "--port", "-1", "--http-port", "0", "--api-addr", "127.0.0.1:0", "--data-dir", dataDir, "--work-time", "0")

	line := dev.WaitForLine(t, startTimeout, "NATS listening on nats://…", devURLRE.MatchString)
	url := devURLRE.FindStringSubmatch(line)[1]
	// A job sent the moment dev says how is not lost: the line comes once
	// the scheduler takes submissions.
	dev.WaitForLine(t, startTimeout, "send a job", func(l string) bool { return strings.Contains(l, "send a job:") })
	s, r := sendEcho(t, url)
	// The scheduler's safety policy may log "the running policy", so the
	// worker's line is the one about its topic.
	workerID := dev.WaitForLog(t, startTimeout, "running", "topic", "job.echo")["worker_id"]
	schedID := dev.WaitForLog(t, startTimeout, "started")["id"]
	if schedID == "" {
		t.Fatalf("the scheduler's started line has no id")
	}
	if _, err := os.Stat(dataDir); err != nil {
		t.Errorf("--data-dir: %v", err)
	}
	if r.WorkerID != workerID {
		t.Errorf("Result worker_id=%s, want the dev worker's %s", r.WorkerID, workerID)
	}
	dev.WaitForLog(t, logTimeout, "submitted", "job_id", s.JobID, "trace_id", s.TraceID)
	dev.WaitForLog(t, logTimeout, "dispatched", "job_id", s.JobID, "subject", wire.WorkerJobSubject(workerID),
		"worker_id", workerID, "trace_id", s.TraceID)
	dev.WaitForLog(t, logTimeout, "job", "job_id", s.JobID, "topic", "job.echo", "context_ptr", "memory://echo_ctx/"+s.JobID, "trace_id", s.TraceID)
	// The worker's result line; the scheduler's names the worker.
	dev.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "status", "JOB_STATUS_COMPLETED", "worker_id", "", "trace_id", s.TraceID)
	dev.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "status", "JOB_STATUS_COMPLETED",
		"worker_id", workerID, "trace_id", s.TraceID)
	// The client commands work against the embedded server too.
	out := cortexOK(t, []string{"NATS_URL=" + url}, "submit", "--topic", "job.echo", "--wait")
	if cs := changes(out); len(cs) == 0 || cs[len(cs)-1].State != "COMPLETED" || cs[len(cs)-1].Worker != workerID {
		t.Errorf("cortex submit --wait against cortex dev: %+v, want COMPLETED by %s\n%s", cs, workerID, out)
	}
	if j := getJob(t, url, s.JobID); j.State != "COMPLETED" || j.WorkerID != workerID {
		t.Errorf("cortex job get against cortex dev: %+v", j)
	}
	// The logs go to stderr, the banner to stdout.
	if len(systest.FindLogs(dev.Stderr(), "submitted", "job_id", s.JobID)) == 0 {
		t.Errorf("the job's log lines are not on stderr")
	}

	if code := dev.Stop(t, exitTimeout); code != 0 {
		t.Errorf("cortex dev exited %d after SIGINT, want 0", code)
	}
	if !strings.Contains(dev.Stdout(), "CortexOS dev stopped.\n") {
		t.Errorf("cortex dev did not print %q on stdout", "CortexOS dev stopped.")
	}
	logs := systest.Lines(dev.Stderr())
	workerStopped := slices.IndexFunc(logs, func(l string) bool { return systest.ParseAttrs(l).Match("stopped", "worker_id", workerID) })
	schedStopped := slices.IndexFunc(logs, func(l string) bool { return systest.ParseAttrs(l).Match("stopped", "id", schedID) })
	switch {
	case workerStopped < 0 || schedStopped < 0:
		t.Errorf("cortex dev did not log that both the worker and the scheduler stopped")
	case schedStopped < workerStopped:
		t.Errorf("the scheduler stopped before the worker; the worker's last results could be lost")
	}
}

// The sender follows its job through the scheduler's status path. A job the
// safety policy refuses ends it at once, DENIED, with the reason; a job for a
// topic no worker serves is recorded and stays PENDING, so the sender gives up
// at its --timeout saying so, with the reason; without NATS it fails at once.
// Here the scheduler keeps its jobs in memory.
func TestSenderWithoutResult(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url, "--store", "memory")
	sched.WaitForLog(t, logTimeout, "job store", "store", "memory")

	began := time.Now()
	destroy := start(t, binSender, nil, "--nats-url", url, "--topic", "sys.destroy", "--timeout", "30s")
	nobody := start(t, binSender, nil, "--nats-url", url, "--topic", "job.nobody", "--timeout", "1s")
	for _, p := range []*systest.Proc{destroy, nobody} {
		if code := p.Wait(t, exitTimeout); code != 1 {
			t.Errorf("%s exited %d, want 1", strings.Join(p.Args(), " "), code)
		}
		if resultRE.MatchString(p.Stdout()) {
			t.Errorf("%s printed a Result line", strings.Join(p.Args(), " "))
		}
	}

	// Refused: at once, not at the 30 s timeout.
	s := sentLine(t, destroy)
	if took := time.Since(began); took > 15*time.Second {
		t.Errorf("the sys.destroy sender took %s; a refusal should end it at once", took)
	}
	if err := destroy.Stderr(); !strings.Contains(err, "job_id="+s.JobID+" DENIED") || !strings.Contains(err, "forbidden topic") {
		t.Errorf("sys.destroy: stderr %q does not say job_id=%s DENIED ... forbidden topic", err, s.JobID)
	}
	sched.WaitForLog(t, logTimeout, "denied", "component", "safety", "job_id", s.JobID, "topic", "sys.destroy", "reason", "forbidden topic", "trace_id", s.TraceID)
	// One info line per denial: the kernel's. The scheduler's own refusal line is at debug.
	if a, ok := sched.FindLog("job blocked", "job_id", s.JobID); ok && a["level"] != "DEBUG" {
		t.Errorf("the denial is logged twice at info: the scheduler's line %v", a)
	}
	if _, ok := sched.FindLog("dispatched", "job_id", s.JobID); ok {
		t.Errorf("the sys.destroy job was dispatched")
	}
	if j := getJob(t, url, s.JobID); j.State != "DENIED" || !strings.Contains(j.Error, "forbidden topic") {
		t.Errorf("sys.destroy job: state=%s error=%q, want DENIED for the forbidden topic", j.State, j.Error)
	}

	// Not refused, not taken: still PENDING, and why. Placement (the
	// default) knows no worker serves job.nobody, so it never dispatches it.
	s = sentLine(t, nobody)
	const why = "no live worker serves job.nobody"
	err := nobody.Stderr()
	if !strings.Contains(err, "no result within 1s") || !strings.Contains(err, "job_id="+s.JobID+" is still PENDING ("+why+")") {
		t.Errorf("job.nobody: stderr %q does not say no result within 1s, job_id=%s is still PENDING (%s)", err, s.JobID, why)
	}
	if _, ok := sched.FindLog("dispatched", "job_id", s.JobID); ok {
		t.Errorf("the job.nobody job was dispatched with no worker for it")
	}
	if j := waitJob(t, url, s.JobID, "PENDING", func(j jobView) bool { return j.State == "PENDING" }); j.PendingReason != why || j.TraceID != s.TraceID {
		t.Errorf("job.nobody job: pending_reason=%q trace_id=%s, want %q, %s", j.PendingReason, j.TraceID, why, s.TraceID)
	}

	noNATS, code := sendJob(t, closedURL(t), "--timeout", "20s")
	if code == 0 {
		t.Errorf("send_echo_job without NATS exited 0, want non-zero")
	}
	if !strings.Contains(noNATS.Stderr(), "send_echo_job:") {
		t.Errorf("send_echo_job without NATS: stderr %q has no error", noNATS.Stderr())
	}
}

// Two echo workers started without --id get distinct ids and share job.echo
// through their queue group.
func TestTwoWorkers(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	startScheduler(t, url)
	w1, id1 := startWorker(t, url)
	w2, id2 := startWorker(t, url)
	if id1 == id2 {
		t.Fatalf("both workers have worker_id=%s", id1)
	}

	// Which member of a queue group gets a message is random; send jobs until
	// each worker has had one. Each job goes to one worker with probability
	// 1/2, so 24 jobs all on the same worker happen once in 2^23 runs.
	const batch, maxJobs = 4, 24
	seen := map[string]int{}
	for sentJobs := 0; sentJobs < maxJobs && len(seen) < 2; sentJobs += batch {
		var senders []*systest.Proc
		for range batch {
			senders = append(senders, start(t, binSender, nil, "--nats-url", url, "--timeout", "20s"))
		}
		for _, p := range senders {
			if code := p.Wait(t, exitTimeout); code != 0 {
				t.Fatalf("send_echo_job exited %d\nstdout:\n%sstderr:\n%s", code, p.Stdout(), p.Stderr())
			}
			s, r := checkCompleted(t, p)
			if r.WorkerID != id1 && r.WorkerID != id2 {
				t.Fatalf("job %s completed by worker_id=%s, neither %s nor %s", s.JobID, r.WorkerID, id1, id2)
			}
			seen[r.WorkerID]++
			w := w1
			if r.WorkerID == id2 {
				w = w2
			}
			w.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "trace_id", s.TraceID)
		}
	}
	if len(seen) < 2 {
		t.Errorf("jobs per worker %v: one worker got all %d jobs", seen, maxJobs)
	}
}

// A config file that does not load stops the binary at start, naming the file.
// (send_echo_job reads no config file: it is written against pkg/ alone, and
// takes NATS_URL, the NATS_* credentials and flags.)
func TestInvalidConfig(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	cases := []struct {
		name, content, want string // want: in stderr, besides the path
		bins                []string
	}{
		{"unknown key", "nats_url: nats://127.0.0.1:4222\nbogus_key: 1\n", "bogus_key",
			[]string{binScheduler, binWorker}},
		{"bad yaml", "nats_url: [nats://127.0.0.1:4222\n", "yaml", []string{binScheduler}},
		{"bad log level", "log_level: loud\n", "log_level", []string{binScheduler}},
		{"bad nats url", "nats_url: http://127.0.0.1:4222\n", "scheme", []string{binScheduler}},
		{"missing file", "", "no such file", []string{binScheduler}},
	}
	for _, c := range cases {
		for _, bin := range c.bins {
			t.Run(c.name+"/"+bin, func(t *testing.T) {
				t.Parallel()
				path := filepath.Join(t.TempDir(), "cortex.yaml")
				if c.content != "" {
					if err := os.WriteFile(path, []byte(c.content), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				// No NATS_URL: an accepted config would dial localhost:4222,
				// and fail, if at all, for another reason than the file.
				p := start(t, bin, nil, "--config", path)
				code := p.Wait(t, quickTimeout)
				stderr := p.Stderr()
				if code == 0 {
					t.Fatalf("exited 0 with config %q", c.content)
				}
				if !strings.Contains(stderr, path) {
					t.Errorf("stderr %q does not name the file %s", stderr, path)
				}
				if !strings.Contains(stderr, c.want) {
					t.Errorf("stderr %q does not say %q", stderr, c.want)
				}
				if !strings.HasPrefix(stderr, bin+": ") {
					t.Errorf("stderr %q does not start with %q", stderr, bin+": ")
				}
			})
		}
	}
}

// Garbage on the bus is dropped and logged; the scheduler and the worker go on
// serving jobs.
func TestSchedulerSurvivesGarbage(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	url := natstest.URL(t)
	sched := startScheduler(t, url)
	worker, _ := startWorker(t, url)

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	garbage := [][]byte{
		[]byte("this is not protobuf \xff\xfe\x00\x01"),
		{0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // varint overflow
		{0x52, 0x10, 0x0a}, // field 10 (job_request) cut short
		{},                 // an empty packet: no payload
		[]byte(strings.Repeat("\x00", 4096)),
	}
	for _, subject := range []string{wire.SubjectSubmit, wire.SubjectResult, "sys.heartbeat.echo", "job.echo"} {
		for _, data := range garbage {
			if err := nc.Publish(subject, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Well-formed packets the scheduler must refuse: no job_id, and a topic
	// that would loop back onto sys.job.submit.
	for _, req := range []*pb.JobRequest{
		{Topic: "job.echo"},
		{JobId: "loop-job", Topic: wire.SubjectSubmit},
	} {
		data, err := proto.Marshal(wire.JobRequestPacket("garbage-trace", "e2e", req))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Publish(wire.SubjectSubmit, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	sched.WaitForLog(t, logTimeout, "bus dropped packet", "subject", wire.SubjectSubmit)
	sched.WaitForLog(t, logTimeout, "bus dropped packet", "subject", wire.SubjectResult)
	sched.WaitForLog(t, logTimeout, "bus dropped packet", "subject", "sys.heartbeat.echo")
	if a := sched.WaitForLog(t, logTimeout, "refused job", "job_id", "", "trace_id", "garbage-trace"); !strings.Contains(a["err"], "invalid job_id") {
		t.Errorf("job without job_id refused with err=%q, want invalid job_id", a["err"])
	}
	if a := sched.WaitForLog(t, logTimeout, "refused job", "job_id", "loop-job"); !strings.Contains(a["err"], "invalid topic") {
		t.Errorf("job for %s refused with err=%q, want invalid topic", wire.SubjectSubmit, a["err"])
	}
	worker.WaitForLog(t, logTimeout, "bus dropped packet", "subject", "job.echo")

	s, _ := sendEcho(t, url)
	sched.WaitForLog(t, logTimeout, "result", "job_id", s.JobID, "status", "JOB_STATUS_COMPLETED", "trace_id", s.TraceID)
	if _, ok := sched.FindLog("dispatched", "job_id", "loop-job"); ok {
		t.Errorf("the job for topic %s was dispatched", wire.SubjectSubmit)
	}
	for _, p := range []*systest.Proc{sched, worker} {
		if code := p.Stop(t, exitTimeout); code != 0 {
			t.Errorf("%s exited %d after SIGINT, want 0", p.Name(), code)
		}
	}
}
