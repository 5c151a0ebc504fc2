package sandbox_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/sandbox"
)

// testLimits are small, so that what a hostile program can do ends soon.
var testLimits = sandbox.Limits{
	CPUTime:   5 * time.Second,
	Memory:    256 << 20,
	Processes: 16,
	FileSize:  1 << 20,
	TmpSize:   4 << 20,
	Output:    4 << 10,
	Wall:      30 * time.Second,
}

// newSandbox returns a working sandbox or fails the test: these tests prove
// the isolation, and a machine where it cannot run must not pass them
// (.ci/run installs bubblewrap and Debian's python3).
func newSandbox(t *testing.T, l sandbox.Limits) *sandbox.Sandbox {
	t.Helper()
	s, err := sandbox.New(sandbox.Config{Limits: l})
	if err != nil {
		t.Fatalf("the sandbox cannot be set up here: %v", err)
	}
	if err := s.Probe(context.Background()); err != nil {
		t.Fatalf("the sandbox does not work here: %v", err)
	}
	if !s.Seccomp() {
		t.Fatal("no seccomp filter on this architecture")
	}
	return s
}

func run(t *testing.T, s *sandbox.Sandbox, src string) *sandbox.Result {
	t.Helper()
	return runCtx(t, context.Background(), s, src)
}

func runCtx(t *testing.T, ctx context.Context, s *sandbox.Sandbox, src string) *sandbox.Result {
	t.Helper()
	res, err := s.Run(ctx, sandbox.Program{Source: []byte(src)})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return res
}

func TestRunsAProgram(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res, err := s.Run(context.Background(), sandbox.Program{
		Source: []byte("import os, sys\nprint(sys.stdin.read().upper(), os.environ['GREETING'], os.getcwd())\nsys.exit(3)"),
		Env:    map[string]string{"GREETING": "hi"},
		Stdin:  []byte("input"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Stdout); got != "INPUT hi /tmp\n" || res.ExitCode != 3 || res.Reason(s.Limits()) != "exit code 3" {
		t.Fatalf("stdout %q exit %d reason %q stderr %s", got, res.ExitCode, res.Reason(s.Limits()), res.Stderr)
	}
}

// A secret the test leaves under /tmp and under $HOME: the program sees
// neither file nor directory.
func TestHostFilesAreInvisible(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	tmpSecret := filepath.Join(t.TempDir(), "secret.txt")
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	homeDir, err := os.MkdirTemp(home, "cortex-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(homeDir) })
	homeSecret := filepath.Join(homeDir, "secret.txt")
	const secret = "s3cr3t-do-not-leak"
	for _, p := range []string{tmpSecret, homeSecret} {
		if err := os.WriteFile(p, []byte(secret), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(filepath.Dir(p), 0o755); err != nil { // readable to anyone who can see it
			t.Fatal(err)
		}
	}
	src := fmt.Sprintf(`import os
for p in (%q, %q, %q, "/etc/passwd", "/etc/hostname", "/etc/shadow"):
    try:
        print(p, "READ", open(p).read())
    except FileNotFoundError:
        print(p, "missing")
    except OSError as e:
        print(p, "refused", type(e).__name__)
print("tmp:", os.listdir("/tmp"), "root:", sorted(os.listdir("/")))
`, tmpSecret, homeSecret, home)
	res := run(t, s, src)
	out := string(res.Stdout)
	if res.ExitCode != 0 || strings.Contains(out, secret) || strings.Contains(out, "READ") {
		t.Fatalf("exit %d, stdout:\n%s\nstderr:\n%s", res.ExitCode, out, res.Stderr)
	}
	for _, p := range []string{tmpSecret, homeSecret, home} {
		if !strings.Contains(out, p+" missing") {
			t.Errorf("%s is visible in the sandbox:\n%s", p, out)
		}
	}
	if !strings.Contains(out, "tmp: []") {
		t.Errorf("the sandbox's /tmp is not empty and private:\n%s", out)
	}
}

// A listener on the host's loopback: the program cannot reach it (the
// sandbox has a network namespace of its own, with only its own loopback),
// and the listener sees nothing.
func TestNoNetwork(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	src := fmt.Sprintf(`import socket
try:
    socket.create_connection(("127.0.0.1", %d), timeout=3)
    print("CONNECTED")
except OSError as e:
    print("no connection:", type(e).__name__)
print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))
`, port)
	res := run(t, s, src)
	_ = ln.Close()
	out := string(res.Stdout)
	if res.ExitCode != 0 || strings.Contains(out, "CONNECTED") || !strings.Contains(out, "no connection") {
		t.Fatalf("exit %d stdout %q stderr %s", res.ExitCode, out, res.Stderr)
	}
	if !strings.Contains(out, "['lo']") {
		t.Errorf("interfaces other than lo in the sandbox: %s", out)
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("the host listener accepted %d connections from the sandbox", n)
	}
}

func TestEndlessLoopEndsAtTheTimeout(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res := runCtx(t, ctx, s, "while True:\n    pass\n")
	if !res.TimedOut || res.Signal != "SIGKILL" || res.Reason(s.Limits()) != "wall time limit reached" {
		t.Fatalf("timed out %v, signal %q, reason %q", res.TimedOut, res.Signal, res.Reason(s.Limits()))
	}
}

func TestCPUTimeLimit(t *testing.T) {
	t.Parallel()
	l := testLimits
	l.CPUTime = time.Second
	s := newSandbox(t, l)
	res := run(t, s, "while True:\n    pass\n")
	if res.TimedOut || res.Signal != "SIGXCPU" || !strings.Contains(res.Reason(l), "CPU time limit") {
		t.Fatalf("timed out %v, signal %q, reason %q", res.TimedOut, res.Signal, res.Reason(l))
	}
}

// A fork bomb stops at the process limit, and everything it started dies
// with the run.
func TestForkBombIsContained(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res := run(t, s, `import os, time
n = 0
while True:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print("forked", n)
`)
	var n int
	if _, err := fmt.Sscanf(string(res.Stdout), "forked %d", &n); err != nil || res.ExitCode != 0 {
		t.Fatalf("exit %d stdout %q stderr %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	if n >= testLimits.Processes {
		t.Fatalf("forked %d processes, limit %d", n, testLimits.Processes)
	}
	// The sandbox still works, and the sleepers are gone: a new run may
	// use the whole process budget again.
	again := run(t, s, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))")
	var procs int
	if _, err := fmt.Sscanf(string(again.Stdout), "%d", &procs); err != nil || again.ExitCode != 0 || procs > 3 {
		t.Fatalf("after the fork bomb: exit %d, processes seen %q", again.ExitCode, again.Stdout)
	}
}

func TestMemoryBombIsContained(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res := run(t, s, "x = bytearray(2 * 1024**3)\nprint('allocated')")
	if res.ExitCode == 0 || bytes.Contains(res.Stdout, []byte("allocated")) || !strings.Contains(res.Reason(s.Limits()), "memory limit") {
		t.Fatalf("exit %d reason %q stderr %s", res.ExitCode, res.Reason(s.Limits()), res.Stderr)
	}
	// Many smaller pieces, in several processes: each process is bounded.
	res = run(t, s, `import os
for _ in range(4):
    if os.fork() == 0:
        try:
            chunks = [bytearray(32 << 20) for _ in range(64)]
            os._exit(3)
        except MemoryError:
            os._exit(7)
codes = sorted(os.waitstatus_to_exitcode(os.wait()[1]) for _ in range(4))
print(codes)
`)
	if got := strings.TrimSpace(string(res.Stdout)); got != "[7, 7, 7, 7]" {
		t.Fatalf("children's exit codes %s (want MemoryError in each), stderr %s", got, res.Stderr)
	}
}

func TestOutputFloodIsCapped(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res := run(t, s, "import sys\nfor _ in range(1000):\n    sys.stdout.write('x' * 1000)\n    sys.stderr.write('y' * 1000)\nprint('end')")
	if res.ExitCode != 0 || !res.StdoutTruncated || !res.StderrTruncated || !res.Truncated() {
		t.Fatalf("exit %d truncated %v/%v", res.ExitCode, res.StdoutTruncated, res.StderrTruncated)
	}
	if len(res.Stdout) != testLimits.Output || len(res.Stderr) != testLimits.Output {
		t.Fatalf("kept %d and %d bytes, cap %d", len(res.Stdout), len(res.Stderr), testLimits.Output)
	}
	small := run(t, s, "print('x' * 10)")
	if small.Truncated() || string(small.Stdout) != strings.Repeat("x", 10)+"\n" {
		t.Fatalf("small output: %q truncated %v", small.Stdout, small.Truncated())
	}
}

// Writing anywhere but the private /tmp fails, and /tmp itself is bounded
// (file size and tmpfs size).
func TestWritesStayInThePrivateTmp(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res := run(t, s, `import errno
for p in ("/usr/evil", "/evil", "/sandbox/main.py", "/etc/evil", "/proc/evil", "/dev/evil", "/bin/evil"):
    try:
        open(p, "w").write("x")
        print(p, "WRITTEN")
    except OSError as e:
        print(p, "refused", errno.errorcode.get(e.errno))
open("/tmp/ok", "w").write("fine")
print("tmp ok", open("/tmp/ok").read())
try:
    open("/tmp/big", "wb").write(b"x" * (2 << 20))
    print("BIG WRITTEN")
except OSError as e:
    print("big refused", errno.errorcode.get(e.errno))
written = 0
try:
    for i in range(16):
        open(f"/tmp/f{i}", "wb").write(b"x" * ((1 << 20) - 1))
        written += 1
    print("FILLED")
except OSError as e:
    print("tmpfs full after", written, errno.errorcode.get(e.errno))
`)
	out := string(res.Stdout)
	if res.ExitCode != 0 || strings.Contains(out, "WRITTEN") || strings.Contains(out, "FILLED") {
		t.Fatalf("exit %d stdout:\n%s\nstderr:\n%s", res.ExitCode, out, res.Stderr)
	}
	for _, want := range []string{"tmp ok fine", "big refused EFBIG", "tmpfs full after"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	if _, err := os.Stat("/usr/evil"); err == nil {
		t.Fatal("/usr/evil exists on the host")
	}
}

// No capabilities, not root, and the seccomp filter refuses ptrace and new
// user namespaces.
func TestPrivilegesAreDropped(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	res := run(t, s, `import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("uid", os.getuid(), os.geteuid())
print([l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
print("ptrace", libc.ptrace(0, 0, 0, 0), ctypes.get_errno())
print("unshare", libc.unshare(0x10000000), ctypes.get_errno())
`)
	want := "uid 65534 65534\n0000000000000000\nptrace -1 1\nunshare -1 1\n"
	if got := string(res.Stdout); res.ExitCode != 0 || got != want {
		t.Fatalf("exit %d stdout %q, want %q; stderr %s", res.ExitCode, got, want, res.Stderr)
	}
}

func TestEnvIsChecked(t *testing.T) {
	t.Parallel()
	s := newSandbox(t, testLimits)
	for _, env := range []map[string]string{
		{"LD_PRELOAD": "/tmp/x.so"}, {"PYTHONPATH": "/tmp"}, {"PATH": "/tmp"}, {"1BAD": "x"}, {"A-B": "x"}, {"A": "nul\x00"},
	} {
		if _, err := s.Run(context.Background(), sandbox.Program{Source: []byte("pass"), Env: env}); err == nil {
			t.Errorf("env %v accepted", env)
		}
	}
}

func TestUnsafeModeRunsWithLimitsOnly(t *testing.T) {
	t.Parallel()
	s, err := sandbox.New(sandbox.Config{Unsafe: true, Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Unsafe() || s.Probe(context.Background()) != nil {
		t.Fatal("unsafe sandbox")
	}
	res := run(t, s, "import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0])")
	if res.ExitCode != 0 || strings.TrimSpace(string(res.Stdout)) != fmt.Sprint(testLimits.Memory) {
		t.Fatalf("exit %d stdout %q stderr %s", res.ExitCode, res.Stdout, res.Stderr)
	}
}

func TestNewChecksItsConfig(t *testing.T) {
	t.Parallel()
	if _, err := sandbox.New(sandbox.Config{Python: "/nonexistent/python3"}); err == nil {
		t.Error("a missing python accepted")
	}
	// A bwrap that is not there: the probe fails, so a worker does not start.
	s, err := sandbox.New(sandbox.Config{Bwrap: "/nonexistent/bwrap"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Probe(context.Background()); !errors.Is(err, sandbox.ErrBroken) {
		t.Errorf("probe with a missing bwrap: %v, want ErrBroken", err)
	}
}

// The filter is well formed: whole sock_filter entries, starting with the
// architecture check.
func TestSeccompProgramShape(t *testing.T) {
	t.Parallel()
	p := sandbox.SeccompProgramForTest()
	if len(p) == 0 || len(p)%8 != 0 {
		t.Fatalf("program of %d bytes", len(p))
	}
	if code, k := binary.NativeEndian.Uint16(p[0:]), binary.NativeEndian.Uint32(p[4:]); code != 0x20 || k != 4 {
		t.Fatalf("first instruction loads %#x at %d, want the arch", code, k)
	}
	if n := len(p) / 8; n > 255 {
		t.Fatalf("%d instructions: jumps do not reach", n)
	}
}
