package e2e

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The binaries under test, by the name they are built to in binDir.
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
	killTimeout  = 10 * time.Second // after SIGINT in cleanup, before SIGKILL
	quickTimeout = 10 * time.Second // a binary refusing its config exits at once
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

// requireBinaries skips the test under -short (and on Windows, which has no
// SIGINT to send), and otherwise builds the binaries once for the package.
func requireBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: builds and runs the binaries; skipped with -short")
	}
	if runtime.GOOS == "windows" {
		t.Skip("e2e: stops processes with SIGINT, which Windows cannot send")
	}
	buildOnce.Do(func() { binDir, buildErr = buildBinaries() })
	if buildErr != nil {
		t.Fatalf("e2e: building the binaries: %v", buildErr)
	}
}

// buildBinaries builds the three commands and the sender script into a new
// temporary directory.
//
// The binaries are built with -race exactly when this test binary is (go test
// -race, as `make test` and CI run it). The race-instrumented dependencies are
// then already in the build cache from compiling this test, so it costs only
// the links, and the concurrency of the real wiring (cortex dev runs NATS, the
// scheduler and the workers in one process) is checked too: every process's
// stderr is searched for "DATA RACE" when it ends. Without -race they are
// plain builds, so `go test ./test/e2e/` stays fast.
func buildBinaries() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	dir, err := os.MkdirTemp("", "cortex-e2e-bin-")
	if err != nil {
		return "", err
	}
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	builds := [][]string{
		// -o dir/ with several main packages writes each under its own name.
		append(append([]string{"build"}, flags...), "-o", dir+string(os.PathSeparator),
			"./cmd/cortex-scheduler", "./cmd/cortex-worker-echo", "./cmd/cortex"),
		append(append([]string{"build"}, flags...), "-o", filepath.Join(dir, binSender),
			"./tools/scripts/send_echo_job.go"),
	}
	errs := make([]error, len(builds))
	var wg sync.WaitGroup
	for i, args := range builds {
		wg.Go(func() {
			cmd := exec.Command(goBin, args...)
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
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

// baseEnv is the test's environment without the variables CortexOS reads, so
// that only what a test sets reaches the processes.
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

// closedURL is a NATS URL on a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return "nats://" + addr
}

// lockedBuffer collects a process's output, written by the exec package's copy goroutine
// while the test reads it.
type lockedBuffer = logging.Buffer

// completeLines are the lines of s that end in a newline.
func completeLines(s string) []string {
	i := strings.LastIndexByte(s, '\n')
	if i < 0 {
		return nil
	}
	return strings.Split(s[:i], "\n")
}

// proc is a binary running as a child process.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan struct{} // closed when the process has exited
	code           int           // exit code, valid once done is closed; -1 if killed by a signal
}

// start runs the binary name from binDir with args, the environment of
// baseEnv plus env, and an empty temporary working directory (so no
// config/local.yaml is found). Cleanup stops it (SIGINT, then SIGKILL),
// fails the test if it reported a data race, and dumps its output when the
// test failed.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = append(baseEnv(), env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	p.cmd.WaitDelay = 5 * time.Second // bound the output copy after exit
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.done:
			case <-time.After(killTimeout):
				t.Errorf("%s did not exit within %s of SIGINT; killing it", name, killTimeout)
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
		if strings.Contains(p.stderr.String(), "DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s %s (exit %d)\n--- stdout:\n%s--- stderr:\n%s",
				name, strings.Join(args, " "), p.code, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit on its own and returns its exit code.
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

// interrupt sends SIGINT, as Ctrl-C would.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("SIGINT %s: %v", p.name, err)
	}
}

// stop sends SIGINT and returns the exit code.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.interrupt(t)
	return p.wait(t, exitTimeout)
}

// lines are the complete lines the process has written, stdout then stderr.
func (p *proc) lines() []string {
	return append(completeLines(p.stdout.String()), completeLines(p.stderr.String())...)
}

// waitFor polls the output until a line satisfies match and returns it. It
// fails the test at the deadline, or as soon as the process has exited
// without printing such a line.
func (p *proc) waitFor(t *testing.T, timeout time.Duration, what string, match func(line string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.exited() // read before the output, which is then complete
		for _, line := range p.lines() {
			if match(line) {
				return line
			}
		}
		switch {
		case exited:
			t.Fatalf("%s exited (code %d) without logging %s", p.name, p.code, what)
		case time.Now().After(deadline):
			t.Fatalf("%s did not log %s within %s", p.name, what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitForLine waits for a line containing substr.
func (p *proc) waitForLine(t *testing.T, substr string, timeout time.Duration) string {
	t.Helper()
	return p.waitFor(t, timeout, strconv.Quote(substr), func(line string) bool {
		return strings.Contains(line, substr)
	})
}

// waitForLog waits for a log line whose msg contains msgHas and whose
// attributes have the values of the key, value pairs kv, and returns its
// attributes.
func (p *proc) waitForLog(t *testing.T, msgHas string, kv ...string) map[string]string {
	t.Helper()
	return p.waitForLogWithin(t, logTimeout, msgHas, kv...)
}

// waitForLogWithin is waitForLog with its own bound.
func (p *proc) waitForLogWithin(t *testing.T, timeout time.Duration, msgHas string, kv ...string) map[string]string {
	t.Helper()
	what := fmt.Sprintf("msg~%q %v", msgHas, kv)
	line := p.waitFor(t, timeout, what, func(line string) bool {
		return logMatches(parseAttrs(line), msgHas, kv...)
	})
	return parseAttrs(line)
}

// findLog returns the attributes of the first log line already written that
// matches as in waitForLog.
func (p *proc) findLog(msgHas string, kv ...string) (map[string]string, bool) {
	for _, line := range p.lines() {
		if a := parseAttrs(line); logMatches(a, msgHas, kv...) {
			return a, true
		}
	}
	return nil, false
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

// parseAttrs parses the key=value pairs of a line as log/slog's text handler
// writes them (values with spaces or quotes are Go-quoted). Words without an
// "=" are skipped, so it also reads the sender's "Sent job job_id=… …" lines.
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

// sent and result are what the sender printed.
type sent struct{ JobID, TraceID, Topic string }

type result struct{ JobID, Status, WorkerID, ResultPtr, TraceID, State, Attempts string }

var (
	sentRE   = regexp.MustCompile(`(?m)^Sent job job_id=\S+ trace_id=\S+ topic=\S+$`)
	resultRE = regexp.MustCompile(`(?m)^Result job_id=\S+ status=\S+ worker_id=\S* result_ptr=\S* execution_ms=\d+ trace_id=\S+ state=[A-Z]+ attempts=\d+$`)
)

// sentLine parses the sender's "Sent job" line.
func sentLine(t *testing.T, p *proc) sent {
	t.Helper()
	line := sentRE.FindString(p.stdout.String())
	if line == "" {
		t.Fatalf("%s: no %q line on stdout", p.name, "Sent job job_id=… trace_id=… topic=…")
	}
	a := parseAttrs(line)
	return sent{JobID: a["job_id"], TraceID: a["trace_id"], Topic: a["topic"]}
}

// resultLine parses the sender's "Result" line.
func resultLine(t *testing.T, p *proc) result {
	t.Helper()
	line := resultRE.FindString(p.stdout.String())
	if line == "" {
		t.Fatalf("%s: no %q line on stdout", p.name, "Result job_id=… status=… … trace_id=…")
	}
	a := parseAttrs(line)
	return result{JobID: a["job_id"], Status: a["status"], WorkerID: a["worker_id"], ResultPtr: a["result_ptr"],
		TraceID: a["trace_id"], State: a["state"], Attempts: a["attempts"]}
}

// sendJob runs the sender against url and waits for it to exit.
func sendJob(t *testing.T, url string, args ...string) (*proc, int) {
	t.Helper()
	p := start(t, binSender, nil, append([]string{"--nats-url", url}, args...)...)
	return p, p.wait(t, exitTimeout)
}

// sendEcho runs the sender against url and checks that its echo job
// completed: exit 0, a Sent and a Result line with the same ids.
func sendEcho(t *testing.T, url string) (sent, result) {
	t.Helper()
	p, code := sendJob(t, url, "--timeout", "20s")
	if code != 0 {
		t.Fatalf("send_echo_job exited %d, want 0\nstdout:\n%sstderr:\n%s", code, p.stdout.String(), p.stderr.String())
	}
	return checkCompleted(t, p)
}

func checkCompleted(t *testing.T, p *proc) (sent, result) {
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
func startScheduler(t *testing.T, url string, args ...string) *proc {
	t.Helper()
	p := start(t, binScheduler, []string{"NATS_URL=" + url}, append([]string{"--log-level", "debug"}, args...)...)
	p.waitForLogWithin(t, startTimeout, "[SCHEDULER] started")
	return p
}

// startWorker starts cortex-worker-echo on url (through NATS_URL) at debug
// with no simulated work, waits until it runs and returns its worker id.
func startWorker(t *testing.T, url string, args ...string) (*proc, string) {
	t.Helper()
	p := start(t, binWorker, []string{"NATS_URL=" + url},
		append([]string{"--log-level", "debug", "--work-time", "0"}, args...)...)
	id := p.waitForLogWithin(t, startTimeout, "[WORKER echo] running")["worker_id"]
	if id == "" {
		t.Fatalf("%s: running line without a worker_id", p.name)
	}
	return p, id
}

// cortex runs the cortex command with args and env (plus baseEnv), waits for
// it to exit and returns it with its exit code.
func cortex(t *testing.T, env []string, args ...string) (*proc, int) {
	t.Helper()
	p := start(t, binCortex, env, args...)
	return p, p.wait(t, exitTimeout)
}

// cortexOK is cortex for a command that must succeed: it fails the test on
// any other exit code and returns stdout.
func cortexOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	p, code := cortex(t, env, args...)
	if code != 0 {
		t.Fatalf("cortex %s exited %d, want 0\nstdout:\n%sstderr:\n%s",
			strings.Join(args, " "), code, p.stdout.String(), p.stderr.String())
	}
	return p.stdout.String()
}

// cortexFails is cortex for a command that must fail: exit 1 with one line on
// stderr, "cortex: " and a message containing want. It returns the process.
func cortexFails(t *testing.T, env []string, want string, args ...string) *proc {
	t.Helper()
	p, code := cortex(t, env, args...)
	stderr := p.stderr.String()
	if code != 1 {
		t.Fatalf("cortex %s exited %d, want 1\nstdout:\n%sstderr:\n%s",
			strings.Join(args, " "), code, p.stdout.String(), stderr)
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

// The log parser the assertions rely on; it needs no binaries.
func TestParseAttrs(t *testing.T) {
	cases := []struct {
		line string
		want map[string]string
	}{
		{`time=2026-01-01T00:00:00Z level=DEBUG msg="[SCHEDULER] 📥 submitted" job_id=a-b topic=job.echo trace_id=c`,
			map[string]string{"time": "2026-01-01T00:00:00Z", "level": "DEBUG", "msg": "[SCHEDULER] 📥 submitted",
				"job_id": "a-b", "topic": "job.echo", "trace_id": "c"}},
		{`level=WARN msg="bus dropped packet" err="proto: \"x\" = y" bytes=3`,
			map[string]string{"level": "WARN", "msg": "bus dropped packet", "err": `proto: "x" = y`, "bytes": "3"}},
		{`Sent job job_id=1 trace_id=2 topic=job.echo`,
			map[string]string{"job_id": "1", "trace_id": "2", "topic": "job.echo"}},
		{`msg="unterminated`, map[string]string{"msg": `"unterminated`}},
		{`no attributes here`, map[string]string{}},
	}
	for _, c := range cases {
		got := parseAttrs(c.line)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("parseAttrs(%q)\n got %q\nwant %q", c.line, got, c.want)
		}
	}
}
