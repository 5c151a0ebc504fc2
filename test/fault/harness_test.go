// Package fault holds the fault tests of CortexOS (issue 4, item 10): real
// NATS servers run in this process (so a test can stop one and restart it on
// the same port and data directory), and the real binaries, cortex-scheduler
// and cortex-worker-echo, run as OS processes that the tests kill -9, stop,
// resume and terminate. A test asks the scheduler about its jobs through the
// client package, listens to sys.job.result itself, and reads the processes'
// logs.
//
//	go test -race -count=1 ./test/fault/
//
// The tests are skipped with -short. Synchronisation is by polling with a
// deadline; measured recovery times are logged with t.Logf.
package fault

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The binaries under test.
const (
	binScheduler = "cortex-scheduler"
	binWorker    = "cortex-worker-echo"
	binCortex    = "cortex" // its `server` command: NATS as a process, for kill -9
)

// Bounds that only keep a broken run from hanging; the recovery bounds the
// issue states are asserted in the tests themselves.
const (
	startTimeout = 30 * time.Second // a process logs that it is ready
	exitTimeout  = 20 * time.Second // a process exits once asked to
	killTimeout  = 15 * time.Second // an in-process worker stops once cancelled
	rpcTimeout   = 2 * time.Second  // one query to the scheduler
)

// bins are built once for the package, with -race when the tests are (see
// systest.Binaries).
var bins = systest.NewBinaries("./cmd/"+binScheduler, "./cmd/"+binWorker, "./cmd/"+binCortex)

func TestMain(m *testing.M) { os.Exit(bins.Run(m)) }

// requireBinaries skips the test under -short (and where there are no POSIX
// signals), and otherwise builds the binaries once per test binary run.
func requireBinaries(t *testing.T) {
	t.Helper()
	bins.Require(t)
}

// startNATS starts an in-process server with JetStream that a test can
// restart on the same port and data directory. Cleanup shuts it down after
// the processes (cleanups run last-in first-out, and the processes are
// started later).
func startNATS(t *testing.T) *natstest.Restartable {
	t.Helper()
	return natstest.RunRestartable(t)
}

// start runs binary bin with args; label names it in failure output. See
// systest.Start for how it is stopped and its log shown.
func start(t *testing.T, bin, label string, args ...string) *systest.Proc {
	t.Helper()
	return systest.Start(t, systest.Process{Path: bins.Path(bin), Name: label, Args: args})
}

// logTime is the time= attribute of a log line.
func logTime(t *testing.T, attrs systest.Attrs) time.Time {
	t.Helper()
	ts, err := attrs.Time()
	if err != nil {
		t.Fatalf("log line time %q: %v", attrs["time"], err)
	}
	return ts
}

// withAttr counts the log lines of found that have the attribute key: the
// lines about a result that carry its status, say, not the ones that fence
// it or failed to publish it.
func withAttr(found []systest.Attrs, key string) int {
	n := 0
	for _, a := range found {
		if a.Has(key) {
			n++
		}
	}
	return n
}

// ---- the scheduler and the workers ----

// fastTimers is a scheduler config with short timers, for the tests that do
// not measure the default recovery bound.
const fastTimers = `
scheduler:
  ack_timeout: 500ms
  lease_interval: 200ms
  lease_misses: 3
  max_attempts: 3
  timeout: 30s
  ttl: 2m
worker:
  heartbeat_interval: 1s
  lease_interval: 200ms
`

// writeConfig writes a config file for the processes and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cortex.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// startScheduler starts cortex-scheduler at debug on url, with the config
// file cfg ("" for none: every timer at its default), and waits until it is
// subscribed with the JetStream store.
func startScheduler(t *testing.T, label, url, cfg string) *systest.Proc {
	t.Helper()
	args := []string{"--nats-url", url, "--log-level", "debug", "--id", label}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	p := start(t, binScheduler, label, args...)
	p.WaitForLog(t, startTimeout, "job store", "store", "jetstream")
	return p
}

// startWorker starts cortex-worker-echo at debug with id and the extra
// flags, and waits until it runs.
func startWorker(t *testing.T, id, url, cfg string, flags ...string) *systest.Proc {
	t.Helper()
	args := []string{"--nats-url", url, "--log-level", "debug", "--id", id}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	p := start(t, binWorker, id, append(args, flags...)...)
	p.WaitForLog(t, startTimeout, "running", "worker_id", id)
	return p
}

// waitWorkerKnown waits until the scheduler has heard worker id heartbeat, so
// that a dispatch can find it.
func waitWorkerKnown(t *testing.T, sched *systest.Proc, id string) {
	t.Helper()
	sched.WaitForLog(t, startTimeout, "heartbeat", "worker_id", id)
}

// ---- the test's own view: client, results, store ----

// newClient returns a client on a new connection to url.
func newClient(t *testing.T, url string) (*client.Client, *bus.NatsBus) {
	t.Helper()
	b := systest.Connect(t, url, "fault-test")
	return systest.Client(t, b, client.Options{SenderID: "fault-test"}), b
}

// getJob asks the scheduler for a job; nil when it does not answer (say, it
// is restarting) or the job is not known yet.
func getJob(c *client.Client, id string) *pb.JobInfo {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	job, err := c.Get(ctx, id)
	if err != nil {
		return nil
	}
	return job
}

// submit submits req and waits for the scheduler's confirmation.
func submit(t *testing.T, c *client.Client, req *pb.JobRequest) *pb.JobInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	job, err := c.Submit(ctx, req)
	if err != nil {
		t.Fatalf("submit %s: %v", req.GetJobId(), err)
	}
	return job
}

// echoJob is a request for the echo worker.
func echoJob(id string) *pb.JobRequest {
	return &pb.JobRequest{JobId: id, Topic: "job.echo", ContextPtr: "memory://echo_ctx/" + id}
}

// waitState polls a job until want(job) holds and returns it.
func waitState(t *testing.T, c *client.Client, id string, timeout time.Duration, what string, want func(*pb.JobInfo) bool) *pb.JobInfo {
	t.Helper()
	var job *pb.JobInfo
	systest.Poll(t, timeout, 20*time.Millisecond, "job "+id+" "+what, func() (bool, string) {
		job = getJob(c, id)
		return job != nil && want(job), describe(job)
	})
	return job
}

// waitTerminal polls a job until it is in a terminal state.
func waitTerminal(t *testing.T, c *client.Client, id string, timeout time.Duration) *pb.JobInfo {
	t.Helper()
	return waitState(t, c, id, timeout, "terminal", func(j *pb.JobInfo) bool { return lifecycle.Terminal(j.GetState()) })
}

func describe(j *pb.JobInfo) string {
	if j == nil {
		return "no answer"
	}
	return fmt.Sprintf("state=%s attempt=%d failed_attempts=%d worker_id=%q pending_reason=%q error=%q",
		lifecycle.Name(j.GetState()), j.GetAttempt(), j.GetFailedAttempts(), j.GetWorkerId(), j.GetPendingReason(), j.GetError())
}

// seenResult is a JobResult the test saw on sys.job.result.
type seenResult struct {
	WorkerID string
	Attempt  int32
	Status   pb.JobStatus
	Error    string
	At       time.Time
}

// resultLog records every JobResult published on sys.job.result, by job.
type resultLog struct {
	mu    sync.Mutex
	byJob map[string][]seenResult
}

// recordResults subscribes to sys.job.result on its own connection (so it is
// flushed before the test goes on).
func recordResults(t *testing.T, url string) *resultLog {
	t.Helper()
	r := &resultLog{byJob: map[string][]seenResult{}}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.Subscribe(wire.SubjectResult, func(m *nats.Msg) {
		p, err := bus.Decode(m.Data, 0)
		if err != nil || p.GetJobResult() == nil {
			return
		}
		res := p.GetJobResult()
		r.mu.Lock()
		r.byJob[res.GetJobId()] = append(r.byJob[res.GetJobId()],
			seenResult{WorkerID: res.GetWorkerId(), Attempt: res.GetAttempt(), Status: res.GetStatus(), Error: res.GetError(), At: time.Now()})
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *resultLog) of(id string) []seenResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenResult(nil), r.byJob[id]...)
}

// completions watches the job store's bucket and records, per job, every
// distinct revision that shows it COMPLETED: the store's own evidence that a
// job completed once. (A terminal record never changes, and the watcher sees
// every revision the bucket keeps; with History 1 a lagging watcher may skip
// a superseded revision, but a COMPLETED one is never superseded.)
type completions struct {
	mu    sync.Mutex
	revs  map[string]map[uint64]string // job -> revision -> worker_id
	state map[string]pb.JobState       // latest state seen per job
}

func watchCompletions(t *testing.T, b *bus.NatsBus) *completions {
	t.Helper()
	c := &completions{revs: map[string]map[uint64]string{}, state: map[string]pb.JobState{}}
	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	kv, err := js.KeyValue(ctx, kvstore.DefaultBucket)
	if err != nil {
		cancel()
		t.Fatalf("job store bucket: %v", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var job pb.JobInfo
			if err := proto.Unmarshal(e.Value(), &job); err != nil {
				continue
			}
			c.mu.Lock()
			c.state[e.Key()] = job.GetState()
			if job.GetState() == lifecycle.Completed {
				if c.revs[e.Key()] == nil {
					c.revs[e.Key()] = map[uint64]string{}
				}
				c.revs[e.Key()][e.Revision()] = job.GetWorkerId()
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = w.Stop()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
	})
	return c
}

// count returns how many jobs were seen in a terminal COMPLETED revision, and
// the jobs seen COMPLETED at more than one revision.
func (c *completions) count() (completed int, twice []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, revs := range c.revs {
		completed++
		if len(revs) > 1 {
			twice = append(twice, fmt.Sprintf("%s %v", id, revs))
		}
	}
	return completed, twice
}

// stateCounts returns how many jobs the store holds and how many are in each
// state, as far as the watcher has seen.
func (c *completions) stateCounts() (int, map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	by := map[string]int{}
	for _, s := range c.state {
		by[lifecycle.Name(s)]++
	}
	return len(c.state), by
}

// countJobs returns how many jobs the scheduler lists in state (UNSPECIFIED:
// any), or -1 when it does not answer.
func countJobs(c *client.Client, state pb.JobState) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	jobs, err := c.ListAll(ctx, client.ListOptions{State: state, Limit: 100000})
	if err != nil {
		return -1
	}
	return len(jobs.Jobs)
}

// completedResults counts the COMPLETED results in rs.
func completedResults(rs []seenResult) int {
	n := 0
	for _, r := range rs {
		if r.Status == pb.JobStatus_JOB_STATUS_COMPLETED {
			n++
		}
	}
	return n
}

// unfinished describes the jobs of ids that are not COMPLETED (at most 5).
func unfinished(c *client.Client, ids []string) string {
	var out []string
	for _, id := range ids {
		if j := getJob(c, id); j == nil || j.GetState() != lifecycle.Completed {
			out = append(out, id+": "+describe(j))
			if len(out) == 5 {
				break
			}
		}
	}
	return strings.Join(out, "; ")
}
