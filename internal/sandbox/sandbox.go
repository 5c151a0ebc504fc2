// Package sandbox runs untrusted Python source in a bubblewrap (bwrap)
// sandbox: no network, no view of the host's files beyond a read-only
// Python runtime, a private size-capped /tmp, new PID/IPC/UTS/user/cgroup
// namespaces, no capabilities, a seccomp deny list, resource limits (CPU
// time, address space, processes, file size, open files), a wall-time bound
// that kills the whole sandbox, and capped output. docs/code-python.md says
// what it protects against and what it does not.
//
// Nothing here runs Python without the sandbox unless Config.Unsafe says so.
package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Limits bound one run. Zero fields take the defaults.
type Limits struct {
	// CPUTime is each process's CPU time (RLIMIT_CPU): SIGXCPU at the
	// limit, SIGKILL a second later. Default 30s.
	CPUTime time.Duration
	// Memory is each process's address space (RLIMIT_AS). Default 512 MiB.
	Memory int64
	// Processes is how many processes and threads the run may have at once
	// (RLIMIT_NPROC, counted in the sandbox's own user namespace). Default 32.
	Processes int
	// FileSize is the largest file the run may write (RLIMIT_FSIZE).
	// Default 16 MiB.
	FileSize int64
	// OpenFiles is RLIMIT_NOFILE. Default 256.
	OpenFiles int
	// TmpSize is the size of the private /tmp (a tmpfs). Default 64 MiB.
	TmpSize int64
	// Output is how much of stdout and of stderr is kept, each; the rest is
	// read and dropped, and the result says it was truncated. Default 64 KiB.
	Output int
	// Wall bounds a run whose context has no deadline. Default 5m.
	Wall time.Duration
}

func (l *Limits) setDefaults() {
	if l.CPUTime <= 0 {
		l.CPUTime = 30 * time.Second
	}
	if l.Memory <= 0 {
		l.Memory = 512 << 20
	}
	if l.Processes <= 0 {
		l.Processes = 32
	}
	if l.FileSize <= 0 {
		l.FileSize = 16 << 20
	}
	if l.OpenFiles <= 0 {
		l.OpenFiles = 256
	}
	if l.TmpSize <= 0 {
		l.TmpSize = 64 << 20
	}
	if l.Output <= 0 {
		l.Output = 64 << 10
	}
	if l.Wall <= 0 {
		l.Wall = 5 * time.Minute
	}
}

// Config configures a Sandbox.
type Config struct {
	// Bwrap is the bubblewrap binary. Default: bwrap on $PATH.
	Bwrap string
	// Python is the interpreter run inside, with the installation it comes
	// from mounted read-only. Default /usr/bin/python3 (Debian's: a Python
	// under a home directory, as pyenv's, would expose that directory).
	Python string
	// Limits of each run.
	Limits Limits
	// UID and GID the sandbox runs as on the host when this process is
	// root: a user that is not root, so that the process limit holds (the
	// kernel does not apply RLIMIT_NPROC to root). Default 65534 (nobody).
	UID, GID int
	// NoSeccomp leaves out the seccomp filter.
	NoSeccomp bool
	// Unsafe runs Python without bwrap: resource limits and a private
	// working directory only, no isolation at all. For machines where no
	// sandbox can run, knowingly.
	Unsafe bool
	// Logger. Default slog.Default().
	Logger *slog.Logger
}

// Errors of New and Probe.
var (
	ErrNoBwrap  = errors.New("sandbox: bubblewrap (bwrap) not found: apt-get install bubblewrap")
	ErrNoPython = errors.New("sandbox: python not found")
	ErrBroken   = errors.New("sandbox: does not work on this machine")
)

// Sandbox runs programs. It is safe for concurrent use.
type Sandbox struct {
	cfg              Config
	log              *slog.Logger
	python           string   // the interpreter's path inside the sandbox
	mounts           []string // bwrap arguments for the read-only runtime
	seccomp          []byte   // the filter, or nil
	hasDisableUserns bool
}

// New checks cfg and returns a sandbox. It does not run anything: Probe does.
func New(cfg Config) (*Sandbox, error) {
	cfg.Limits.setDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Python == "" {
		cfg.Python = "/usr/bin/python3"
	}
	if cfg.UID == 0 {
		cfg.UID = 65534
	}
	if cfg.GID == 0 {
		cfg.GID = 65534
	}
	real, err := filepath.EvalSymlinks(cfg.Python)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNoPython, cfg.Python, err)
	}
	if st, err := os.Stat(real); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("%w: %s is not an executable file", ErrNoPython, cfg.Python)
	}
	s := &Sandbox{cfg: cfg, log: cfg.Logger, python: real}
	if cfg.Unsafe {
		return s, nil
	}
	if cfg.Bwrap == "" {
		if cfg.Bwrap, err = exec.LookPath("bwrap"); err != nil {
			return nil, ErrNoBwrap
		}
	}
	s.cfg.Bwrap = cfg.Bwrap
	s.mounts = runtimeMounts(real)
	if !cfg.NoSeccomp {
		s.seccomp = seccompProgram()
	}
	help, _ := exec.Command(cfg.Bwrap, "--help").CombinedOutput()
	s.hasDisableUserns = bytes.Contains(help, []byte("--disable-userns"))
	return s, nil
}

// runtimeMounts is what the sandbox sees of the host: /usr read-only, the
// top-level links into it (/bin, /lib, /lib64, /sbin on a merged-/usr
// system) or the directories themselves, the dynamic linker's cache, and
// the Python installation if it is not under /usr.
func runtimeMounts(python string) []string {
	args := []string{"--ro-bind", "/usr", "/usr"}
	for _, d := range []string{"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"} {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				args = append(args, "--symlink", target, d)
			}
		case fi.IsDir():
			args = append(args, "--ro-bind", d, d)
		}
	}
	args = append(args, "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache")
	if !strings.HasPrefix(python, "/usr/") {
		// <prefix>/bin/python3: the installation is <prefix>.
		prefix := filepath.Dir(filepath.Dir(python))
		args = append(args, "--ro-bind", prefix, prefix)
	}
	return args
}

// Program is one run.
type Program struct {
	// Source is the Python program, run as __main__ from /sandbox/main.py.
	Source []byte
	// Env is its environment, on top of PATH, HOME=/tmp and LANG=C.UTF-8.
	// Keys must be names ([A-Za-z_][A-Za-z0-9_]*); LD_* and PYTHON* are refused.
	Env map[string]string
	// Stdin is what the program reads on standard input.
	Stdin []byte
}

// Result is how a run ended.
type Result struct {
	ExitCode        int    // the program's exit code; 128+n when signal n ended it
	Signal          string // the signal that ended it, if one did ("SIGXCPU", "SIGKILL")
	Stdout, Stderr  []byte // at most Limits.Output each
	StdoutTruncated bool
	StderrTruncated bool
	Duration        time.Duration
	// TimedOut: the wall-time bound (the context's deadline or Limits.Wall)
	// ended it; Cancelled: the context was cancelled.
	TimedOut, Cancelled bool
}

// Truncated reports whether either stream was cut.
func (r *Result) Truncated() bool { return r.StdoutTruncated || r.StderrTruncated }

// Reason says in a few words why the run did not succeed; "" if it did.
func (r *Result) Reason(l Limits) string {
	switch {
	case r.TimedOut:
		return "wall time limit reached"
	case r.Cancelled:
		return "cancelled"
	case r.Signal == "SIGXCPU" || (r.Signal == "SIGKILL" && r.Duration >= l.CPUTime):
		return fmt.Sprintf("CPU time limit (%s) reached", l.CPUTime)
	case bytes.Contains(r.Stderr, []byte("MemoryError")):
		return fmt.Sprintf("memory limit (%d MiB) reached", l.Memory>>20)
	case r.Signal != "":
		return "killed by " + r.Signal
	case r.ExitCode != 0:
		return "exit code " + strconv.Itoa(r.ExitCode)
	}
	return ""
}

// Limits returns the limits runs get.
func (s *Sandbox) Limits() Limits { return s.cfg.Limits }

// Unsafe reports whether runs go without the sandbox.
func (s *Sandbox) Unsafe() bool { return s.cfg.Unsafe }

// Seccomp reports whether runs get the seccomp filter.
func (s *Sandbox) Seccomp() bool { return len(s.seccomp) > 0 }

// boot sets the resource limits from inside the sandbox, then runs the
// program. RLIMIT_NPROC is set here, in the sandbox's own user namespace,
// where the kernel counts only the sandbox's processes; set outside it
// would count every process of the host user.
const boot = `import resource, runpy, sys
cpu, mem, nproc, fsize, nofile = (int(a) for a in sys.argv[1:6])
for r, v in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
             (resource.RLIMIT_NPROC, (nproc, nproc)), (resource.RLIMIT_FSIZE, (fsize, fsize)),
             (resource.RLIMIT_NOFILE, (nofile, nofile)), (resource.RLIMIT_CORE, (0, 0))):
    if v[0] >= 0:
        resource.setrlimit(r, v)
del cpu, mem, nproc, fsize, nofile, r, v
sys.argv = ["main.py"]
try:
    runpy.run_path("/sandbox/main.py", run_name="__main__")
except SystemExit:
    raise
except BaseException as e:  # the program's traceback, without this file's frames
    import traceback
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "/sandbox/main.py":
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)
    sys.exit(1)
`

// Run runs p and returns how it ended. An error means the sandbox itself
// failed (it could not start); what the program did is in the Result.
func (s *Sandbox) Run(ctx context.Context, p Program) (*Result, error) {
	env, err := programEnv(p.Env)
	if err != nil {
		return nil, err
	}
	l := s.cfg.Limits
	ctx, cancel := context.WithTimeout(ctx, l.Wall)
	defer cancel()

	var files []*os.File // passed to the child as fds 3, 4, ...
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	// pass hands data to the child on a pipe (fd 3+i): bwrap copies it into
	// a read-only file. The writer runs concurrently: a pipe holds 64 KiB.
	var writers sync.WaitGroup
	pass := func(data []byte) (string, error) {
		r, w, err := os.Pipe()
		if err != nil {
			return "", err
		}
		files = append(files, r)
		writers.Go(func() {
			_, _ = w.Write(data)
			_ = w.Close()
		})
		return strconv.Itoa(2 + len(files)), nil
	}

	limitArgs := []string{
		strconv.FormatInt(int64((l.CPUTime+time.Second-1)/time.Second), 10),
		strconv.FormatInt(l.Memory, 10),
		strconv.Itoa(l.Processes),
		strconv.FormatInt(l.FileSize, 10),
		strconv.Itoa(l.OpenFiles),
	}
	var cmd *exec.Cmd
	var tmpDir string
	if s.cfg.Unsafe {
		tmpDir, err = os.MkdirTemp("", "cortex-unsafe-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmpDir)
		if err := os.MkdirAll(filepath.Join(tmpDir, "sandbox"), 0o700); err != nil {
			return nil, err
		}
		// Without bwrap there is no /sandbox: boot reads the program from
		// the working directory instead.
		if err := os.WriteFile(filepath.Join(tmpDir, "sandbox", "main.py"), p.Source, 0o600); err != nil {
			return nil, err
		}
		unsafeBoot := strings.ReplaceAll(boot, `"/sandbox/main.py"`, `"sandbox/main.py"`)
		// Outside a user namespace of its own the process limit would count
		// every process of the user (and not apply to root): left out.
		limitArgs[2] = "-1"
		if os.Geteuid() == 0 {
			for _, p := range []string{tmpDir, filepath.Join(tmpDir, "sandbox"), filepath.Join(tmpDir, "sandbox", "main.py")} {
				if err := os.Chown(p, s.cfg.UID, s.cfg.GID); err != nil {
					return nil, err
				}
			}
		}
		cmd = exec.Command(s.python, append([]string{"-I", "-B", "-c", unsafeBoot}, limitArgs...)...)
		cmd.Dir = tmpDir
		cmd.Env = append(env, "HOME="+tmpDir, "TMPDIR="+tmpDir)
	} else {
		args := []string{
			"--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
			"--hostname", "sandbox", "--uid", "65534", "--gid", "65534",
		}
		if s.hasDisableUserns {
			args = append(args, "--disable-userns")
		}
		args = append(args, s.mounts...)
		args = append(args, "--proc", "/proc", "--dev", "/dev",
			"--size", strconv.FormatInt(l.TmpSize, 10), "--tmpfs", "/tmp",
			"--dir", "/sandbox", "--chdir", "/tmp", "--clearenv")
		for _, kv := range append(env, "HOME=/tmp") {
			k, v, _ := strings.Cut(kv, "=")
			args = append(args, "--setenv", k, v)
		}
		fd, err := pass(p.Source)
		if err != nil {
			return nil, err
		}
		args = append(args, "--ro-bind-data", fd, "/sandbox/main.py")
		if fd, err = pass([]byte(boot)); err != nil {
			return nil, err
		}
		args = append(args, "--ro-bind-data", fd, "/sandbox/boot.py")
		if s.seccomp != nil {
			if fd, err = pass(s.seccomp); err != nil {
				return nil, err
			}
			args = append(args, "--seccomp", fd)
		}
		// The root and /dev are tmpfs the sandbox's user owns: read-only, so
		// that only /tmp takes writes.
		args = append(args, "--remount-ro", "/dev", "--remount-ro", "/")
		args = append(args, "--", s.python, "-I", "-B", "/sandbox/boot.py")
		cmd = exec.Command(s.cfg.Bwrap, append(args, limitArgs...)...)
		cmd.Dir = "/"
		cmd.Env = []string{}
	}
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.cfg.UID), Gid: uint32(s.cfg.GID), NoSetGroups: false}
	}
	cmd.Stdin = bytes.NewReader(p.Stdin)
	stdout, stderr := &capped{max: l.Output}, &capped{max: l.Output}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	start := time.Now()
	if err := cmd.Start(); err != nil {
		for _, f := range files {
			_ = f.Close() // the writers get EPIPE
		}
		files = nil
		writers.Wait()
		return nil, fmt.Errorf("sandbox: start: %w", err)
	}
	for _, f := range files {
		_ = f.Close() // the child has them
	}
	files = nil
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	res := &Result{}
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		// The whole process group: bwrap, and with it (--die-with-parent,
		// its PID namespace) everything inside.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		werr = <-done
		if errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			res.TimedOut = true
		} else {
			res.Cancelled = true
		}
	}
	writers.Wait()
	res.Duration = time.Since(start)
	res.Stdout, res.StdoutTruncated = stdout.buf.Bytes(), stdout.truncated
	res.Stderr, res.StderrTruncated = stderr.buf.Bytes(), stderr.truncated
	var exit *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &exit):
		ws, _ := exit.Sys().(syscall.WaitStatus)
		switch {
		case ws.Signaled():
			res.ExitCode = 128 + int(ws.Signal())
			res.Signal = signalName(ws.Signal())
		default:
			res.ExitCode = ws.ExitStatus()
			// bwrap reports a child killed by signal n as 128+n.
			if !s.cfg.Unsafe && res.ExitCode > 128 && res.ExitCode < 128+65 {
				res.Signal = signalName(syscall.Signal(res.ExitCode - 128))
			}
		}
	default:
		return nil, fmt.Errorf("sandbox: wait: %w", werr)
	}
	return res, nil
}

func signalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGXCPU:
		return "SIGXCPU"
	case syscall.SIGXFSZ:
		return "SIGXFSZ"
	case syscall.SIGSEGV:
		return "SIGSEGV"
	case syscall.SIGABRT:
		return "SIGABRT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGSYS:
		return "SIGSYS"
	}
	return "signal " + strconv.Itoa(int(s))
}

// programEnv checks a program's environment and adds the fixed part.
func programEnv(extra map[string]string) ([]string, error) {
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"}
	for k, v := range extra {
		if !validEnvName(k) {
			return nil, fmt.Errorf("sandbox: env %q: want a name of letters, digits and _", k)
		}
		switch {
		case strings.HasPrefix(k, "LD_"), strings.HasPrefix(k, "PYTHON"), k == "PATH", k == "HOME":
			return nil, fmt.Errorf("sandbox: env %s may not be set", k)
		case strings.ContainsRune(v, 0):
			return nil, fmt.Errorf("sandbox: env %s: NUL in the value", k)
		}
		env = append(env, k+"="+v)
	}
	return env, nil
}

func validEnvName(k string) bool {
	if k == "" {
		return false
	}
	for i, r := range k {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// capped keeps the first max bytes written and drops the rest.
type capped struct {
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.max - c.buf.Len(); n > room {
		c.truncated = true
		p = p[:max(room, 0)]
	}
	c.buf.Write(p)
	return n, nil
}

var _ io.Writer = (*capped)(nil)

// probeSource checks, from inside, what the sandbox promises.
const probeSource = `import os, socket
assert os.getuid() == 65534, os.getuid()
assert not os.path.exists("/etc/passwd"), "host /etc visible"
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", 1))
except OSError:
    pass
assert sorted(os.listdir("/proc/self/ns")), "no namespaces"
print("cortex-sandbox-ok")
`

// Probe runs a small program in the sandbox and checks that it ran as
// promised. A worker refuses to start when it fails (ErrBroken, with the
// reason).
func (s *Sandbox) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.cfg.Unsafe {
		return nil
	}
	res, err := s.Run(ctx, Program{Source: []byte(probeSource)})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBroken, err)
	}
	if res.ExitCode != 0 || !bytes.Contains(res.Stdout, []byte("cortex-sandbox-ok")) {
		msg := strings.TrimSpace(string(res.Stderr))
		if len(msg) > 500 {
			msg = msg[len(msg)-500:]
		}
		return fmt.Errorf("%w: the probe exited %d: %s", ErrBroken, res.ExitCode, msg)
	}
	return nil
}
