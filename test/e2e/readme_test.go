package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
)

// The README's commands, run as a new user would type them: each command
// line a test runs is taken from README.md itself (the test fails if the
// README no longer has it) and parsed: an optional ". FILE && " that loads a
// credentials file, then ./bin/<binary> or `go run
// ./tools/scripts/send_echo_job.go` (the binaries built once for the
// package), then its arguments. The only additions are the flags a shared
// test machine needs (a free port instead of 4222, no monitoring port, no
// sandboxed Python worker, no simulated work), each named where it is added.

var (
	readmeOnce sync.Once
	readmeText string
	readmeErr  error
)

// readme returns README.md.
func readme(t *testing.T) string {
	t.Helper()
	readmeOnce.Do(func() {
		var b []byte
		b, readmeErr = os.ReadFile(filepath.Join(systest.RepoRoot(t), "README.md"))
		readmeText = string(b)
	})
	if readmeErr != nil {
		t.Fatal(readmeErr)
	}
	return readmeText
}

// readmeCmd is a command of the README, to run in dir.
type readmeCmd struct {
	line string   // as the README has it
	env  []string // from a sourced credentials file, plus the test's
	bin  string   // the built binary
	args []string
}

// parseReadme finds line in the README and parses it; extra arguments (the
// test machine's) are appended.
func parseReadme(t *testing.T, dir, line string, env []string, extra ...string) readmeCmd {
	t.Helper()
	if !strings.Contains(readme(t), line) {
		t.Fatalf("README.md no longer has the command %q: update this test with the README", line)
	}
	c := readmeCmd{line: line, env: env}
	rest := line
	if file, after, ok := strings.Cut(rest, " && "); ok {
		file, ok = strings.CutPrefix(file, ". ")
		if !ok {
			t.Fatalf("README command %q: want \". FILE && command\"", line)
		}
		c.env = append(c.env, sourceEnv(t, filepath.Join(dir, file))...)
		rest = after
	}
	if i := strings.Index(rest, "#"); i >= 0 {
		rest = rest[:i]
	}
	fields := strings.Fields(rest)
	switch {
	case len(fields) >= 3 && fields[0] == "go" && fields[1] == "run" && fields[2] == "./tools/scripts/"+binSender+".go":
		c.bin, c.args = binSender, fields[3:]
	case len(fields) >= 1 && strings.HasPrefix(fields[0], "./bin/"):
		c.bin, c.args = strings.TrimPrefix(fields[0], "./bin/"), fields[1:]
	default:
		t.Fatalf("README command %q: not ./bin/<binary> nor go run ./tools/scripts/%s.go", line, binSender)
	}
	c.args = append(c.args, extra...)
	return c
}

// sourceEnv reads a dev-credentials*.env file ("export K=V K=V ...").
func sourceEnv(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("sourcing %s: %v", path, err)
	}
	var env []string
	for _, f := range strings.Fields(strings.TrimSpace(string(b))) {
		if f == "export" {
			continue
		}
		if !strings.Contains(f, "=") {
			t.Fatalf("%s: %q is not K=V", path, f)
		}
		env = append(env, f)
	}
	return env
}

// runReadme starts a README command in dir.
func runReadme(t *testing.T, dir, line string, env []string, extra ...string) *systest.Proc {
	t.Helper()
	c := parseReadme(t, dir, line, env, extra...)
	return systest.Start(t, systest.Process{Path: bins.Path(c.bin), Name: c.bin, Args: c.args, Env: c.env, Dir: dir})
}

// readmeOK runs a README command in dir to its end and requires exit 0.
func readmeOK(t *testing.T, dir, line string, env []string, extra ...string) *systest.Proc {
	t.Helper()
	p := runReadme(t, dir, line, env, extra...)
	if code := p.Wait(t, exitTimeout); code != 0 {
		t.Fatalf("%s exited %d, want 0\nstdout:\n%sstderr:\n%s", line, code, p.Stdout(), p.Stderr())
	}
	return p
}

// devFlags are the test machine's additions to cortex dev and cortex
// server: a free port, no monitoring port; for dev, a free port for the
// HTTP gateway (not 8080, which parallel tests would share), no sandboxed
// Python worker and no simulated work.
func devFlags(t *testing.T, dev bool) (url string, flags []string) {
	t.Helper()
	port := systest.FreePort(t)
	flags = []string{"--port", strconv.Itoa(port), "--http-port", "0"}
	if dev {
		flags = append(flags, "--api-addr", "127.0.0.1:0", "--code-python=false", "--work-time", "0")
	}
	return "nats://127.0.0.1:" + strconv.Itoa(port), flags
}

// waitReady waits for a cortex dev or server to print "Ctrl-C stops".
func waitReady(t *testing.T, p *systest.Proc) {
	t.Helper()
	p.WaitForLine(t, startTimeout, `"Ctrl-C stops"`, func(line string) bool { return strings.Contains(line, "Ctrl-C stops") })
}

// The quick start: cortex dev, a job with `cortex submit --wait`, one
// without --wait (DISPATCHED at once) followed with `cortex job watch`, one
// with send_echo_job.go, `cortex job get`; the log lines the README shows
// for the echo job and for the refused sys.destroy job are the ones dev
// logs; a job nobody serves is recorded PENDING with its reason (placement,
// the default); it is still there when dev starts again, and gone after
// `cortex dev --reset`.
func TestREADMEQuickStart(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	url, flags := devFlags(t, true)
	env := []string{"NATS_URL=" + url}

	// This first run keeps the echo worker's simulated work (100-500 ms), so
	// that the jobs are confirmed (RUNNING) as in the README's log sample.
	i := slices.Index(flags, "--work-time")
	dev := runReadme(t, dir, "./bin/cortex dev", nil, slices.Delete(slices.Clone(flags), i, i+2)...)
	waitReady(t, dev)

	out := readmeOK(t, dir, "./bin/cortex submit --topic job.echo --wait", env).Stdout()
	cs := changes(out)
	if len(cs) == 0 || cs[len(cs)-1].State != "COMPLETED" {
		t.Fatalf("cortex submit --wait: changes %+v, want COMPLETED last\n%s", cs, out)
	}
	id := systest.ParseAttrs(systest.Lines(out)[0])["job_id"]
	if kv := keyValues(readmeOK(t, dir, "./bin/cortex job get ", env, id).Stdout()); kv["state"] != "COMPLETED" || kv["job_id"] != id {
		t.Errorf("cortex job get %s: state %q job_id %q, want COMPLETED", id, kv["state"], kv["job_id"])
	}
	// Without --wait, with the echo worker idle: recorded DISPATCHED at
	// once, as the README prints it; `job watch` follows it to COMPLETED.
	sub := systest.ParseAttrs(readmeOK(t, dir, "./bin/cortex submit --topic job.echo\n", env).Stdout())
	if sub["state"] != "DISPATCHED" || sub["job_id"] == "" {
		t.Errorf("cortex submit --topic job.echo: %v, want state=DISPATCHED", sub)
	}
	if cs := changes(readmeOK(t, dir, "./bin/cortex job watch ", env, sub["job_id"]).Stdout()); len(cs) == 0 || cs[len(cs)-1].State != "COMPLETED" {
		t.Errorf("cortex job watch %s: changes %+v, want COMPLETED last", sub["job_id"], cs)
	}
	echo, _ := checkCompleted(t, readmeOK(t, dir, "go run ./tools/scripts/send_echo_job.go", env))
	checkLogSample(t, dev, "Meanwhile `make dev-up` logs the job's way", echo.JobID, "DEBUG")

	// A refused job: the two info lines the README shows, and no others.
	destroy := runReadme(t, dir, "go run ./tools/scripts/send_echo_job.go --topic sys.destroy", env)
	if code := destroy.Wait(t, exitTimeout); code != 1 {
		t.Fatalf("send_echo_job --topic sys.destroy exited %d, want 1\n%s", code, destroy.Stderr())
	}
	checkLogSample(t, dev, "is refused before dispatch", sentLine(t, destroy).JobID, "INFO")

	// Placement (the default): no worker serves the topic, so the job is
	// recorded PENDING, says why, and is never dispatched.
	nobody := runReadme(t, dir, "./bin/cortex submit --topic job.nobody --wait", env)
	waitForText(t, nobody, "PENDING     attempt=0  worker=-  no live worker serves job.nobody")
	cs = changes(nobody.Stdout())
	if len(cs) == 0 || slices.ContainsFunc(cs, func(c change) bool { return c.State != "PENDING" || c.Attempt != "0" }) {
		t.Errorf("submit job.nobody: changes %+v, want PENDING at attempt 0 only", cs)
	}
	nobodyID := systest.ParseAttrs(systest.Lines(nobody.Stdout())[0])["job_id"]
	nobody.Interrupt(t)
	nobody.Wait(t, exitTimeout)
	dev.Interrupt(t)
	if code := dev.Wait(t, exitTimeout); code != 0 {
		t.Fatalf("cortex dev exited %d after SIGINT, want 0", code)
	}

	// Started again, it still has that job: PENDING.
	dev = runReadme(t, dir, "./bin/cortex dev", nil, append(flags, "--workers", "0")...)
	waitReady(t, dev)
	if kv := keyValues(readmeOK(t, dir, "./bin/cortex job get ", env, nobodyID).Stdout()); kv["state"] != "PENDING" {
		t.Errorf("after a restart, cortex job get %s: state %q, want PENDING (kept in .cortex/dev)", nobodyID, kv["state"])
	}
	dev.Interrupt(t)
	dev.Wait(t, exitTimeout)

	// --reset: gone.
	dev = runReadme(t, dir, "./bin/cortex dev --reset", nil, flags...)
	waitReady(t, dev)
	if !strings.Contains(dev.Stdout(), "--reset: removed "+filepath.Join(dir, ".cortex", "dev")) {
		t.Errorf("cortex dev --reset does not say what it removed:\n%s", dev.Stdout())
	}
	p := runReadme(t, dir, "./bin/cortex job get ", env, nobodyID)
	if code := p.Wait(t, exitTimeout); code != 1 || !strings.Contains(p.Stderr(), "not found") {
		t.Errorf("after --reset, cortex job get %s: exit %d, stderr %q; want 1 and not found", nobodyID, code, p.Stderr())
	}
}

// The per-binary way without a nats-server or Docker: cortex server, then
// the scheduler, an echo worker and send_echo_job.go, as the README lists
// them.
func TestREADMEPerBinary(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	url, flags := devFlags(t, false)
	env := []string{"NATS_URL=" + url}

	srv := runReadme(t, dir, "./bin/cortex server", nil, flags...)
	waitReady(t, srv)
	sched := runReadme(t, dir, "./bin/cortex-scheduler\n", env)
	sched.WaitForLog(t, startTimeout, "started")
	w := runReadme(t, dir, "./bin/cortex-worker-echo\n", env, "--work-time", "0")
	w.WaitForLog(t, startTimeout, "running")
	checkCompleted(t, readmeOK(t, dir, "go run ./tools/scripts/send_echo_job.go", env))
}

// cortex dev --auth: a worker started outside dev with the credentials of
// worker-1 runs the jobs, and send_echo_job.go submits with the client's
// credentials file. dev runs no echo worker of its own here (--workers 0),
// so the job can only have run on worker-1.
func TestREADMEDevAuthOutsideWorker(t *testing.T) {
	requireBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	_, flags := devFlags(t, true)

	dev := runReadme(t, dir, "./bin/cortex dev --auth", nil, append(flags, "--workers", "0")...)
	waitReady(t, dev)
	for _, u := range []string{"worker-1", "worker-2"} {
		if !strings.Contains(dev.Stdout(), "    "+u+" ") {
			t.Errorf("cortex dev --auth prints no credentials for %s:\n%s", u, dev.Stdout())
		}
		fi, err := os.Stat(filepath.Join(dir, ".cortex", "dev", "dev-credentials-"+u+".env"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("dev-credentials-%s.env: %v, mode %v; want it, 0600", u, err, fi)
		}
	}
	w := runReadme(t, dir, ". .cortex/dev/dev-credentials-worker-1.env && ./bin/cortex-worker-echo", nil, "--work-time", "0")
	if running := w.WaitForLog(t, startTimeout, "running"); running["worker_id"] != "worker-1" {
		t.Fatalf("outside worker running as %q, want worker-1", running["worker_id"])
	}
	_, r := checkCompleted(t, readmeOK(t, dir, ". .cortex/dev/dev-credentials.env && go run ./tools/scripts/send_echo_job.go", nil))
	if r.WorkerID != "worker-1" {
		t.Errorf("the job ran on %q, want worker-1 (the only worker)", r.WorkerID)
	}
	// Without credentials the server refuses the sender.
	p := runReadme(t, dir, "go run ./tools/scripts/send_echo_job.go", []string{"NATS_URL=" + sourceURL(t, dir)})
	if code := p.Wait(t, exitTimeout); code == 0 {
		t.Errorf("send_echo_job without credentials exited 0 against dev --auth")
	}

	// Over HTTP, with the API key dev wrote beside the credentials; without
	// it, 401.
	if _, err := exec.LookPath("curl"); err != nil && os.Getenv("CI") == "" {
		return // TestREADMEHTTP says why
	}
	const curl = `. .cortex/dev/dev-credentials.env && curl -X POST -H "Authorization: Bearer $CORTEX_API_KEY" $CORTEX_API_URL/v1/jobs -d '{"topic":"job.echo"}'`
	if !strings.Contains(readme(t), curl) {
		t.Fatalf("README.md no longer has the command %q: update this test with the README", curl)
	}
	if out := shell(t, dir, curl); !strings.Contains(out, `"job_id":`) || !strings.Contains(out, `"topic":"job.echo"`) {
		t.Errorf("%s: %s, want the job", curl, out)
	}
	noKey := strings.Replace(curl, ` -H "Authorization: Bearer $CORTEX_API_KEY"`, "", 1)
	if out := shell(t, dir, noKey); !strings.Contains(out, `"unauthenticated"`) {
		t.Errorf("without the key: %s, want unauthenticated (401)", out)
	}
}

// sourceURL is the NATS_URL of dev's credentials files in dir.
func sourceURL(t *testing.T, dir string) string {
	t.Helper()
	for _, kv := range sourceEnv(t, filepath.Join(dir, ".cortex", "dev", "dev-credentials.env")) {
		if v, ok := strings.CutPrefix(kv, "NATS_URL="); ok {
			return v
		}
	}
	t.Fatal("dev-credentials.env has no NATS_URL")
	return ""
}

// make dev-up builds every binary the README runs next to it, and make test
// ends with the line the README quotes.
func TestREADMEMakeTargets(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(filepath.Join(systest.RepoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	mk := string(b)
	if !strings.Contains(mk, "\ndev-up: build\n") {
		t.Error("Makefile: dev-up must depend on build (the README runs ./bin/cortex-worker-echo next to it)")
	}
	const summary = "make test: all checks passed (proto, fmt, vet, go test -race, python)"
	if !strings.Contains(mk, "@echo \""+summary+"\"") {
		t.Errorf("Makefile: make test does not end with %q", summary)
	}
	if !strings.Contains(readme(t), summary) {
		t.Errorf("README.md does not quote make test's last line %q", summary)
	}
}

// readmeBlock returns the lines of the README's first fenced block after the
// text marker.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	_, after, ok := strings.Cut(readme(t), marker)
	if !ok {
		t.Fatalf("README.md no longer has %q: update this test with the README", marker)
	}
	_, after, ok = strings.Cut(after, "\n```\n")
	block, _, closed := strings.Cut(after, "\n```")
	if !ok || !closed {
		t.Fatalf("README.md has no code block after %q", marker)
	}
	return strings.Split(block, "\n")
}

// sampleRunValues are the attributes whose values differ from run to run:
// a log line of the README matches one of the run whatever they are.
var sampleRunValues = map[string]bool{"time": true, "job_id": true, "trace_id": true, "worker_id": true,
	"subject": true, "context_ptr": true, "execution_ms": true}

// checkLogSample checks the log lines the README shows after marker against
// cortex dev's: the lines dev logged about job at level or above are, in
// some order, those of the README: the same message (with cortex dev's
// prefix), the same attributes, the same values but for those of the run
// (ids, times).
func checkLogSample(t *testing.T, dev *systest.Proc, marker, job, level string) {
	t.Helper()
	var want []systest.Attrs
	for _, l := range readmeBlock(t, marker) {
		want = append(want, systest.ParseAttrs(l))
	}
	levels := []string{"DEBUG", "INFO", "WARN", "ERROR"}
	lowest := slices.Index(levels, level)
	same := func(a, b systest.Attrs) bool {
		if len(a) != len(b)+1 { // the run's line has a time, the README's not
			return false
		}
		for k, v := range b {
			if w, ok := a[k]; !ok || (!sampleRunValues[k] && w != v) {
				return false
			}
		}
		return true
	}
	systest.Poll(t, logTimeout, 50*time.Millisecond, "cortex dev's log lines of job "+job+" to be the README's after "+strconv.Quote(marker), func() (bool, string) {
		var got []systest.Attrs
		for _, a := range systest.FindLogs(dev.Stderr(), "", "job_id", job) {
			if slices.Index(levels, a["level"]) >= lowest {
				got = append(got, a)
			}
		}
		left := slices.Clone(got)
		var missing []string
		for _, w := range want {
			i := slices.IndexFunc(left, func(a systest.Attrs) bool { return same(a, w) })
			if i < 0 {
				missing = append(missing, w["msg"])
				continue
			}
			left = slices.Delete(left, i, i+1)
		}
		if len(missing) == 0 && len(left) == 0 {
			return true, ""
		}
		var extra []string
		for _, a := range left {
			extra = append(extra, fmt.Sprint(a))
		}
		return false, fmt.Sprintf("README lines not logged (or with other attributes): %q; logged lines the README does not show: %s", missing, strings.Join(extra, "; "))
	})
}
