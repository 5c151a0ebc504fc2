package e2e

import (
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
)

// The binaries under test, by the name they are built to.
const (
	binScheduler = "cortex-scheduler"
	binWorker    = "cortex-worker-echo"
	binCortex    = "cortex"
	binSender    = "send_echo_job"
)

// Bounds. They only keep a broken binary from hanging the run; none of them
// is a performance assertion.
const (
	startTimeout = 30 * time.Second // a process logs that it is ready
	logTimeout   = 15 * time.Second // a line about a job shows up in a log
	exitTimeout  = 30 * time.Second // a process exits once asked to, or on its own
	quickTimeout = 10 * time.Second // a binary refusing its config exits at once
)

// bins are the three commands and the sender script, built once for the
// package, with -race when the tests are: the concurrency of the real wiring
// (cortex dev runs NATS, the scheduler and the workers in one process) is
// checked too (see systest.Binaries).
var bins = systest.NewBinaries("./cmd/"+binScheduler, "./cmd/"+binWorker, "./cmd/"+binCortex,
	"./tools/scripts/"+binSender+".go")

func TestMain(m *testing.M) { os.Exit(bins.Run(m)) }

// requireBinaries skips the test under -short (and on Windows, which has no
// SIGINT to send), and otherwise builds the binaries once for the package.
func requireBinaries(t *testing.T) {
	t.Helper()
	bins.Require(t)
}

// closedURL is a NATS URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	return "nats://127.0.0.1:" + strconv.Itoa(systest.FreePort(t))
}

// start runs the binary name with args and env (added to systest.BaseEnv) in
// an empty temporary working directory, so no config/local.yaml is found.
// See systest.Start for how it is stopped and its output shown.
func start(t *testing.T, name string, env []string, args ...string) *systest.Proc {
	t.Helper()
	return systest.Start(t, systest.Process{Path: bins.Path(name), Env: env, Args: args})
}

// waitForText waits until p writes a line containing substr.
func waitForText(t *testing.T, p *systest.Proc, substr string) string {
	t.Helper()
	return p.WaitForLine(t, logTimeout, strconv.Quote(substr), func(line string) bool {
		return strings.Contains(line, substr)
	})
}

// sent and result are what the sender printed.
type sent struct{ JobID, TraceID, Topic string }

type result struct{ JobID, Status, WorkerID, ResultPtr, TraceID, State, Attempts string }

var (
	sentRE   = regexp.MustCompile(`(?m)^Sent job job_id=\S+ trace_id=\S+ topic=\S+$`)
	resultRE = regexp.MustCompile(`(?m)^Result job_id=\S+ status=\S+ worker_id=\S* result_ptr=\S* execution_ms=\d+ trace_id=\S+ state=[A-Z]+ attempts=\d+$`)
)

// sentLine parses the sender's "Sent job" line.
func sentLine(t *testing.T, p *systest.Proc) sent {
	t.Helper()
	line := sentRE.FindString(p.Stdout())
	if line == "" {
		t.Fatalf("%s: no %q line on stdout", p.Name(), "Sent job job_id=… trace_id=… topic=…")
	}
	a := systest.ParseAttrs(line)
	return sent{JobID: a["job_id"], TraceID: a["trace_id"], Topic: a["topic"]}
}

// resultLine parses the sender's "Result" line.
func resultLine(t *testing.T, p *systest.Proc) result {
	t.Helper()
	line := resultRE.FindString(p.Stdout())
	if line == "" {
		t.Fatalf("%s: no %q line on stdout", p.Name(), "Result job_id=… status=… … trace_id=…")
	}
	a := systest.ParseAttrs(line)
	return result{JobID: a["job_id"], Status: a["status"], WorkerID: a["worker_id"], ResultPtr: a["result_ptr"],
		TraceID: a["trace_id"], State: a["state"], Attempts: a["attempts"]}
}

// sendJob runs the sender against url and waits for it to exit.
func sendJob(t *testing.T, url string, args ...string) (*systest.Proc, int) {
	t.Helper()
	p := start(t, binSender, nil, append([]string{"--nats-url", url}, args...)...)
	return p, p.Wait(t, exitTimeout)
}

// sendEcho runs the sender against url and checks that its echo job
// completed: exit 0, a Sent and a Result line with the same ids.
func sendEcho(t *testing.T, url string) (sent, result) {
	t.Helper()
	p, code := sendJob(t, url, "--timeout", "20s")
	if code != 0 {
		t.Fatalf("send_echo_job exited %d, want 0\nstdout:\n%sstderr:\n%s", code, p.Stdout(), p.Stderr())
	}
	return checkCompleted(t, p)
}

func checkCompleted(t *testing.T, p *systest.Proc) (sent, result) {
	t.Helper()
	s, r := sentLine(t, p), resultLine(t, p)
	if s.JobID == "" || s.TraceID == "" || s.Topic != "job.echo" {
		t.Fatalf("Sent line: %+v", s)
	}
	if r.JobID != s.JobID || r.TraceID != s.TraceID {
		t.Fatalf("Result ids job_id=%s trace_id=%s, want the sent job_id=%s trace_id=%s", r.JobID, r.TraceID, s.JobID, s.TraceID)
	}
	if r.Status != "JOB_STATUS_COMPLETED" || r.State != "COMPLETED" {
		t.Fatalf("Result status=%s state=%s, want JOB_STATUS_COMPLETED and COMPLETED", r.Status, r.State)
	}
	if n, err := strconv.Atoi(r.Attempts); err != nil || n < 1 {
		t.Fatalf("Result attempts=%s, want at least 1", r.Attempts)
	}
	if r.WorkerID == "" {
		t.Fatalf("Result has no worker_id")
	}
	return s, r
}

// startScheduler starts cortex-scheduler on url (through NATS_URL) at debug
// and waits until it is subscribed.
func startScheduler(t *testing.T, url string, args ...string) *systest.Proc {
	t.Helper()
	p := start(t, binScheduler, []string{"NATS_URL=" + url}, append([]string{"--log-level", "debug"}, args...)...)
	p.WaitForLog(t, startTimeout, "started")
	return p
}

// startWorker starts cortex-worker-echo on url (through NATS_URL) at debug
// with no simulated work, waits until it runs and returns its worker id.
func startWorker(t *testing.T, url string, args ...string) (*systest.Proc, string) {
	t.Helper()
	p := start(t, binWorker, []string{"NATS_URL=" + url},
		append([]string{"--log-level", "debug", "--work-time", "0"}, args...)...)
	id := p.WaitForLog(t, startTimeout, "running")["worker_id"]
	if id == "" {
		t.Fatalf("%s: running line without a worker_id", p.Name())
	}
	return p, id
}

// cortex runs the cortex command with args and env (plus baseEnv), waits for
// it to exit and returns it with its exit code.
func cortex(t *testing.T, env []string, args ...string) (*systest.Proc, int) {
	t.Helper()
	p := start(t, binCortex, env, args...)
	return p, p.Wait(t, exitTimeout)
}

// cortexOK is cortex for a command that must succeed: it fails the test on
// any other exit code and returns stdout.
func cortexOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	p, code := cortex(t, env, args...)
	if code != 0 {
		t.Fatalf("cortex %s exited %d, want 0\nstdout:\n%sstderr:\n%s",
			strings.Join(args, " "), code, p.Stdout(), p.Stderr())
	}
	return p.Stdout()
}

// cortexFails is cortex for a command that must fail: exit 1 with one line on
// stderr, "cortex: " and a message containing want. It returns the process.
func cortexFails(t *testing.T, env []string, want string, args ...string) *systest.Proc {
	t.Helper()
	p, code := cortex(t, env, args...)
	stderr := p.Stderr()
	if code != 1 {
		t.Fatalf("cortex %s exited %d, want 1\nstdout:\n%sstderr:\n%s",
			strings.Join(args, " "), code, p.Stdout(), stderr)
	}
	if !strings.HasPrefix(stderr, "cortex: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("cortex %s: stderr %q is not one line starting with %q", strings.Join(args, " "), stderr, "cortex: ")
	}
	if !strings.Contains(stderr, want) {
		t.Errorf("cortex %s: stderr %q does not say %q", strings.Join(args, " "), stderr, want)
	}
	return p
}

// jobView is the part of `cortex job get --json` the tests read.
type jobView struct {
	JobID          string `json:"job_id"`
	State          string `json:"state"`
	Attempts       int    `json:"attempts"`
	MaxAttempts    int    `json:"max_attempts"`
	FailedAttempts int    `json:"failed_attempts"`
	WorkerID       string `json:"worker_id"`
	ResultPtr      string `json:"result_ptr"`
	Error          string `json:"error"`
	PendingReason  string `json:"pending_reason"`
	Topic          string `json:"topic"`
	TraceID        string `json:"trace_id"`
	Created        string `json:"created"`
	Updated        string `json:"updated"`
	DeadLetter     bool   `json:"dead_letter"`
}

// requiredJobKeys are the keys every JSON job has (issue 4, item 8, and the
// rest of what `cortex job get --json` promises).
var requiredJobKeys = []string{"job_id", "state", "attempts", "worker_id", "result_ptr", "error",
	"pending_reason", "topic", "trace_id", "max_attempts", "failed_attempts", "created", "updated", "dead_letter"}

// decodeJob decodes one JSON job and checks that it has every required key,
// and RFC 3339 times.
func decodeJob(t *testing.T, data []byte) jobView {
	t.Helper()
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, data)
	}
	for _, k := range requiredJobKeys {
		if _, ok := keys[k]; !ok {
			t.Errorf("JSON job has no %q: %s", k, data)
		}
	}
	var v jobView
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("JSON job: %v\n%s", err, data)
	}
	for _, ts := range []string{v.Created, v.Updated} {
		if _, err := time.Parse(time.RFC3339, ts); err != nil {
			t.Errorf("JSON job time %q is not RFC 3339: %v", ts, err)
		}
	}
	return v
}

// getJob runs `cortex job get ID --json` against url.
func getJob(t *testing.T, url, id string) jobView {
	t.Helper()
	return decodeJob(t, []byte(cortexOK(t, nil, "job", "get", id, "--json", "--nats-url", url)))
}

// listJobs runs `cortex <args> --json` (job list, dlq list) against url.
func listJobs(t *testing.T, url string, args ...string) []jobView {
	t.Helper()
	return decodeJobs(t, cortexOK(t, nil, append(args, "--json", "--nats-url", url)...))
}

// decodeJobs reads the JSON array of jobs cortex job list --json prints.
func decodeJobs(t *testing.T, out string) []jobView {
	t.Helper()
	var raw []json.RawMessage
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("not a JSON array of jobs: %v\n%s", err, out)
	}
	jobs := make([]jobView, len(raw))
	for i, r := range raw {
		jobs[i] = decodeJob(t, r)
	}
	return jobs
}
