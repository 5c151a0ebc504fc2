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
	"errors"
	"flag"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The binaries under test.
const (
	binScheduler = "cortex-scheduler"
	binWorker    = "cortex-worker-echo"
)

// Bounds that only keep a broken run from hanging; the recovery bounds the
// issue states are asserted in the tests themselves.
const (
	startTimeout = 30 * time.Second // a process logs that it is ready
	exitTimeout  = 20 * time.Second // a process exits once asked to
	killTimeout  = 15 * time.Second // after SIGINT in cleanup, before SIGKILL
	rpcTimeout   = 2 * time.Second  // one query to the scheduler
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// requireBinaries skips the test under -short (and where there are no POSIX
// signals), and otherwise builds the binaries once per test binary run.
func requireBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault: runs real processes and NATS servers; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("fault: kills and stops processes with POSIX signals")
	}
	buildOnce.Do(func() { binDir, buildErr = buildBinaries() })
	if buildErr != nil {
		t.Fatalf("fault: building the binaries: %v", buildErr)
	}
}

// buildBinaries builds the scheduler and the echo worker into a new temporary
// directory, with -race exactly when this test binary has it (as test/e2e
// does): the race-instrumented dependencies are then already in the build
// cache, and every process's stderr is searched for "DATA RACE".
func buildBinaries() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "cortex-fault-bin-")
	if err != nil {
		return "", err
	}
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "-o", dir+string(os.PathSeparator), "./cmd/"+binScheduler, "./cmd/"+binWorker)
	cmd := exec.Command(goBin, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return dir, nil
}

// repoRoot walks up from the working directory to the directory with go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// baseEnv is the test's environment without the variables CortexOS reads.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "CORTEX_LOG_LEVEL=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// ---- NATS ----

// natsServer is an in-process NATS server with JetStream on a fixed port and
// data directory, so that it can be restarted as the same server.
type natsServer struct {
	port int
	dir  string
	mu   sync.Mutex
	srv  *server.Server
}

// startNATS starts a server on a free loopback port with JetStream in a new
// temporary directory. Cleanup shuts it down after the processes (cleanups
// run last-in first-out, and the processes are started later).
func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{port: freePort(t), dir: t.TempDir()}
	n.start(t)
	t.Cleanup(n.shutdown)
	return n
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (n *natsServer) start(t *testing.T) {
	t.Helper()
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		var srv *server.Server
		srv, err = embeddednats.Start(embeddednats.Config{Port: n.port, JetStream: true, StoreDir: n.dir, ReadyTimeout: 5 * time.Second})
		if err == nil {
			n.mu.Lock()
			n.srv = srv
			n.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS on port %d: %v", n.port, err)
		}
		time.Sleep(100 * time.Millisecond) // the port may still be held by the old listener
	}
}

func (n *natsServer) shutdown() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// restart shuts the server down and starts it again on the same port and
// data directory, after down has passed.
func (n *natsServer) restart(t *testing.T, down time.Duration) {
	t.Helper()
	n.shutdown()
	time.Sleep(down) // the outage itself, not a synchronisation
	n.start(t)
}

func (n *natsServer) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// ---- processes ----

// lockedBuffer collects a process's output, written by the exec package's copy goroutine
// while the test reads it.
type lockedBuffer = logging.Buffer

// proc is a binary running as a child process.
type proc struct {
	name string
	args []string
	cmd  *exec.Cmd
	out  lockedBuffer // stdout and stderr: the logs go to stderr
	done chan struct{}
	code int // exit code once done is closed; -1 if killed by a signal
}

// start runs binary bin from binDir with args in an empty temporary working
// directory (so no config/local.yaml is found). label names it in failure
// output. Cleanup stops it (SIGCONT, SIGINT, then SIGKILL), fails the test if
// it reported a data race, and dumps its log when the test failed.
func start(t *testing.T, bin, label string, args ...string) *proc {
	t.Helper()
	p := &proc{name: label, args: args, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, bin), args...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = baseEnv()
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	p.cmd.WaitDelay = 5 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", label, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.done:
			case <-time.After(killTimeout):
				t.Errorf("%s did not exit within %s of SIGINT; killing it", label, killTimeout)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if strings.Contains(p.out.String(), "DATA RACE") {
			t.Errorf("%s reported a data race", label)
		}
		if t.Failed() {
			dumpLog(t, p)
		}
	})
	return p
}

// dumpLog writes the process's whole log to a file that outlives the test and
// shows its last lines.
func dumpLog(t *testing.T, p *proc) {
	const tail = 150
	out := p.out.String()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	path := ""
	if f, err := os.CreateTemp("", "cortex-fault-"+strings.ReplaceAll(t.Name(), "/", "_")+"-"+p.name+"-*.log"); err == nil {
		_, _ = f.WriteString(out)
		_ = f.Close()
		path = f.Name()
	}
	if len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	t.Logf("--- %s %s (exit %d), full log in %s; last %d lines:\n%s",
		p.name, strings.Join(p.args, " "), p.code, path, len(lines), strings.Join(lines, "\n"))
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s %s: %v", sig, p.name, err)
	}
}

// kill9 kills the process with SIGKILL and waits until it is gone.
func (p *proc) kill9(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	p.wait(t, exitTimeout)
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %s", p.name, timeout)
		return -1
	}
}

// lines are the complete lines the process has written.
func (p *proc) lines() []string {
	s := p.out.String()
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// findLogs returns the attributes of every log line so far whose msg
// contains msgHas and whose attributes have the values of the pairs kv.
func (p *proc) findLogs(msgHas string, kv ...string) []map[string]string {
	var found []map[string]string
	for _, line := range p.lines() {
		if !strings.Contains(line, msgHas) {
			continue
		}
		if a := parseAttrs(line); logMatches(a, msgHas, kv...) {
			found = append(found, a)
		}
	}
	return found
}

// waitForLog polls the log until a line matches as in findLogs and returns
// its attributes. It fails the test at the deadline, or as soon as the
// process has exited without writing such a line.
func (p *proc) waitForLog(t *testing.T, timeout time.Duration, msgHas string, kv ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.exited() // read before the output, which is then complete
		if found := p.findLogs(msgHas, kv...); len(found) > 0 {
			return found[0]
		}
		switch {
		case exited:
			t.Fatalf("%s exited (code %d) without logging msg~%q %v", p.name, p.code, msgHas, kv)
		case time.Now().After(deadline):
			t.Fatalf("%s did not log msg~%q %v within %s", p.name, msgHas, kv, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logMatches(attrs map[string]string, msgHas string, kv ...string) bool {
	if !strings.Contains(attrs["msg"], msgHas) {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if attrs[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// logTime is the time= attribute of a log line.
func logTime(t *testing.T, attrs map[string]string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, attrs["time"])
	if err != nil {
		t.Fatalf("log line time %q: %v", attrs["time"], err)
	}
	return ts
}

// parseAttrs parses the key=value pairs of a line as log/slog's text handler
// writes them (values with spaces or quotes are Go-quoted).
func parseAttrs(line string) map[string]string {
	attrs := map[string]string{}
	s := strings.TrimSpace(line)
	for s != "" {
		eq := strings.IndexByte(s, '=')
		sp := strings.IndexByte(s, ' ')
		if eq < 0 || (sp >= 0 && sp < eq) {
			if sp < 0 {
				break
			}
			s = strings.TrimLeft(s[sp:], " ")
			continue
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			i := 1
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i >= len(s) {
				val, s = s, ""
			} else {
				quoted := s[:i+1]
				s = s[i+1:]
				if u, err := strconv.Unquote(quoted); err == nil {
					val = u
				} else {
					val = quoted
				}
			}
		} else if end := strings.IndexByte(s, ' '); end >= 0 {
			val, s = s[:end], s[end:]
		} else {
			val, s = s, ""
		}
		attrs[key] = val
		s = strings.TrimLeft(s, " ")
	}
	return attrs
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
func startScheduler(t *testing.T, label, url, cfg string) *proc {
	t.Helper()
	args := []string{"--nats-url", url, "--log-level", "debug", "--id", label}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	p := start(t, binScheduler, label, args...)
	p.waitForLog(t, startTimeout, "[SCHEDULER] job store", "store", "jetstream")
	return p
}

// startWorker starts cortex-worker-echo at debug with id and the extra
// flags, and waits until it runs.
func startWorker(t *testing.T, id, url, cfg string, flags ...string) *proc {
	t.Helper()
	args := []string{"--nats-url", url, "--log-level", "debug", "--id", id}
	if cfg != "" {
		args = append(args, "--config", cfg)
	}
	p := start(t, binWorker, id, append(args, flags...)...)
	p.waitForLog(t, startTimeout, "[WORKER echo] running", "worker_id", id)
	return p
}

// waitWorkerKnown waits until the scheduler has heard worker id heartbeat, so
// that a dispatch can find it.
func waitWorkerKnown(t *testing.T, sched *proc, id string) {
	t.Helper()
	sched.waitForLog(t, startTimeout, "[SCHEDULER] 💓 heartbeat", "worker_id", id)
}

// ---- the test's own view: client, results, store ----

// connect opens a bus connection for the test (it reconnects by itself).
func connect(t *testing.T, url string) *bus.NatsBus {
	t.Helper()
	b, err := bus.Connect(bus.Config{URL: url, Name: "fault-test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// newClient returns a client on a new connection to url.
func newClient(t *testing.T, url string) (*client.Client, *bus.NatsBus) {
	t.Helper()
	b := connect(t, url)
	return client.New(b, "fault-test"), b
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
	job, err := c.Submit(ctx, req, "")
	if err != nil {
		t.Fatalf("submit %s: %v", req.GetJobId(), err)
	}
	return job
}

// echoJob is a request for the echo worker.
func echoJob(id string) *pb.JobRequest {
	return &pb.JobRequest{JobId: id, Topic: "job.echo", ContextPtr: "memory://echo_ctx/" + id}
}

// poll calls cond every interval until it returns true, and returns how long
// that took. At the deadline it fails the test with what and cond's last
// description of the state.
func poll(t *testing.T, timeout, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last: %s", what, timeout, state)
		}
		time.Sleep(interval)
	}
}

// waitState polls a job until want(job) holds and returns it.
func waitState(t *testing.T, c *client.Client, id string, timeout time.Duration, what string, want func(*pb.JobInfo) bool) *pb.JobInfo {
	t.Helper()
	var job *pb.JobInfo
	poll(t, timeout, 20*time.Millisecond, "job "+id+" "+what, func() (bool, string) {
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
	jobs, err := c.List(ctx, state, 100000)
	if err != nil {
		return -1
	}
	return len(jobs)
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
