package systest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/logging"
)

// Bounds that only keep a broken process from hanging a run; none of them is
// a performance assertion.
const (
	// stopTimeout is how long a process has to exit after the SIGINT of the
	// test's cleanup, before it is killed.
	stopTimeout = 15 * time.Second
	// waitDelay bounds the copying of a process's output after it exits.
	waitDelay = 5 * time.Second
	// logTail is how many lines of each stream a failed test shows.
	logTail = 150
	// pollInterval is how often a wait reads a process's output again.
	pollInterval = 10 * time.Millisecond
)

// Process describes a process to start.
type Process struct {
	// Path is the binary (see [Binaries.Path]). Required.
	Path string
	// Name names the process in messages. Default: the binary's name.
	Name string
	// Args are its arguments.
	Args []string
	// Env is added to [BaseEnv].
	Env []string
	// Dir is its working directory. Default: a new empty temporary directory,
	// so that it finds no config/local.yaml.
	Dir string
}

// Proc is a process a test started, with its output captured.
type Proc struct {
	name           string
	args           []string
	cmd            *exec.Cmd
	stdout, stderr logging.Buffer
	done           chan struct{} // closed when the process has exited
	code           int           // exit code once done is closed; -1 if killed by a signal
}

// Start starts the process. When the test ends it stops it if it still runs
// (SIGCONT, in case the test stopped it, then SIGINT, then SIGKILL after 15
// s, which fails the test), fails the test if the process reported a data
// race, and, if the test failed, shows the last lines of its output and
// keeps the whole of it in a file.
func Start(t testing.TB, p Process) *Proc {
	t.Helper()
	if p.Name == "" {
		p.Name = filepath.Base(p.Path)
	}
	if p.Dir == "" {
		p.Dir = t.TempDir()
	}
	pr := &Proc{name: p.Name, args: p.Args, done: make(chan struct{})}
	pr.cmd = exec.Command(p.Path, p.Args...)
	pr.cmd.Dir = p.Dir
	pr.cmd.Env = append(BaseEnv(), p.Env...)
	pr.cmd.Stdout = &pr.stdout
	pr.cmd.Stderr = &pr.stderr
	pr.cmd.WaitDelay = waitDelay
	if err := pr.cmd.Start(); err != nil {
		t.Fatalf("systest: start %s: %v", pr, err)
	}
	go func() {
		_ = pr.cmd.Wait()
		pr.code = pr.cmd.ProcessState.ExitCode()
		close(pr.done)
	}()
	t.Cleanup(func() {
		if !pr.Exited() {
			resume(pr.cmd.Process)
			_ = pr.cmd.Process.Signal(os.Interrupt)
			select {
			case <-pr.done:
			case <-time.After(stopTimeout):
				t.Errorf("%s did not exit within %s of SIGINT; killing it", pr.name, stopTimeout)
				_ = pr.cmd.Process.Kill()
				<-pr.done
			}
		}
		if strings.Contains(pr.stderr.String(), "DATA RACE") || strings.Contains(pr.stdout.String(), "DATA RACE") {
			t.Errorf("%s reported a data race", pr.name)
		}
		if t.Failed() {
			pr.dump(t)
		}
	})
	return pr
}

// String is the process's name and arguments.
func (p *Proc) String() string {
	if len(p.args) == 0 {
		return p.name
	}
	return p.name + " " + strings.Join(p.args, " ")
}

// Name is the process's name in messages.
func (p *Proc) Name() string { return p.name }

// Args are the process's arguments.
func (p *Proc) Args() []string { return p.args }

// Stdout is what the process has written to stdout so far.
func (p *Proc) Stdout() string { return p.stdout.String() }

// Stderr is what the process has written to stderr so far: the binaries'
// logs.
func (p *Proc) Stderr() string { return p.stderr.String() }

// Lines are the complete lines the process has written, stdout's then
// stderr's.
func (p *Proc) Lines() []string {
	return append(Lines(p.stdout.String()), Lines(p.stderr.String())...)
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns its exit code (-1 if a
// signal killed it). At the deadline it kills the process and fails the test.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) int {
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

// Signal sends sig to the process, which must still run: a test that
// signals a process that has exited has lost track of it.
func (p *Proc) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s %s: %v", sig, p.name, err)
	}
}

// Interrupt sends SIGINT, as Ctrl-C does. A process that has just exited
// by itself is not an error: its exit code tells.
func (p *Proc) Interrupt(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("%s %s: %v", os.Interrupt, p.name, err)
	}
}

// Terminate sends SIGTERM, as a service manager does.
func (p *Proc) Terminate(t testing.TB) {
	t.Helper()
	p.Signal(t, syscall.SIGTERM)
}

// Stop sends SIGINT and waits up to timeout for the exit code.
func (p *Proc) Stop(t testing.TB, timeout time.Duration) int {
	t.Helper()
	p.Interrupt(t)
	return p.Wait(t, timeout)
}

// Kill kills the process with SIGKILL (kill -9) and waits until it is gone.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	p.Signal(t, os.Kill)
	p.Wait(t, stopTimeout)
}

// WaitForLine waits until the process has written a line for which match
// holds, and returns it. It fails the test at the deadline, or as soon as
// the process has exited without writing one; what names the line.
func (p *Proc) WaitForLine(t testing.TB, timeout time.Duration, what string, match func(line string) bool) string {
	t.Helper()
	var found string
	p.waitFor(t, timeout, what, func(lines []string) bool {
		for _, line := range lines {
			if match(line) {
				found = line
				return true
			}
		}
		return false
	})
	return found
}

// WaitForLog waits until the process has logged a line that matches msg and
// kv as in [Attrs.Match], and returns its attributes. It fails the test at
// the deadline, or as soon as the process has exited without logging one.
func (p *Proc) WaitForLog(t testing.TB, timeout time.Duration, msg string, kv ...string) Attrs {
	t.Helper()
	var found Attrs
	p.waitFor(t, timeout, fmt.Sprintf("msg~%q %q", msg, kv), func(lines []string) bool {
		if all := findLogs(lines, msg, kv...); len(all) > 0 {
			found = all[0]
			return true
		}
		return false
	})
	return found
}

// FindLog returns the attributes of the first line logged so far that
// matches msg and kv as in [Attrs.Match].
func (p *Proc) FindLog(msg string, kv ...string) (Attrs, bool) {
	if all := p.FindLogs(msg, kv...); len(all) > 0 {
		return all[0], true
	}
	return nil, false
}

// FindLogs returns the attributes of every line logged so far that matches
// msg and kv as in [Attrs.Match], in order.
func (p *Proc) FindLogs(msg string, kv ...string) []Attrs {
	return findLogs(p.Lines(), msg, kv...)
}

func (p *Proc) waitFor(t testing.TB, timeout time.Duration, what string, found func(lines []string) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		exited := p.Exited() // read before the output, which is then complete
		if found(p.Lines()) {
			return
		}
		switch {
		case exited:
			t.Fatalf("%s exited (code %d) without writing %s", p.name, p.code, what)
		case time.Now().After(deadline):
			t.Fatalf("%s did not write %s within %s", p.name, what, timeout)
		}
		time.Sleep(pollInterval)
	}
}

// dump shows the last lines of the process's output in the test's log and
// keeps the whole of it in a file when that is longer.
func (p *Proc) dump(t testing.TB) {
	stdout, stderr := p.stdout.String(), p.stderr.String()
	path := ""
	if len(strings.Split(stdout, "\n")) > logTail || len(strings.Split(stderr, "\n")) > logTail {
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name() + "-" + p.name)
		if f, err := os.CreateTemp("", "cortex-systest-"+name+"-*.log"); err == nil {
			_, _ = fmt.Fprintf(f, "--- %s (exit %d)\n--- stdout:\n%s--- stderr:\n%s", p, p.code, stdout, stderr)
			_ = f.Close()
			path = f.Name()
		}
	}
	msg := fmt.Sprintf("--- %s (exit %d)", p, p.code) // it has exited: Start's cleanup stops it first
	if path != "" {
		msg += fmt.Sprintf("; the last %d lines of each stream, all in %s", logTail, path)
	}
	t.Logf("%s\n--- stdout:\n%s--- stderr:\n%s", msg, tail(stdout), tail(stderr))
}

// tail is the last logTail lines of s.
func tail(s string) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > logTail {
		lines = lines[len(lines)-logTail:]
	}
	out := strings.Join(lines, "")
	if out != "" && !strings.HasSuffix(out, "\n") {
		out += "\n"
	}
	return out
}
