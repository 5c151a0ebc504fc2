//go:build unix

package systest_test

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
)

// A process is started with the base environment and the test's, its log
// lines are found by message words and attributes, and each signal ends it
// as it should.
func TestProcess(t *testing.T) {
	bins.Require(t)
	t.Setenv("NATS_URL", "nats://inherited:4222")
	start := func(t *testing.T) *systest.Proc {
		p := systest.Start(t, systest.Process{Path: bins.Path("logproc"), Env: []string{"GREETING=hi there"}})
		p.WaitForLine(t, 10*time.Second, "ready", func(l string) bool { return l == "ready" })
		return p
	}

	t.Run("interrupt", func(t *testing.T) {
		p := start(t)
		a := p.WaitForLog(t, 10*time.Second, "started", "greeting", "hi there", "nats_url", "")
		if a["pid"] == "" || a["level"] != "INFO" {
			t.Errorf("started line %v", a)
		}
		if p.Name() != "logproc" || p.Stdout() != "ready\n" {
			t.Errorf("name %q, stdout %q", p.Name(), p.Stdout())
		}
		if code := p.Stop(t, 10*time.Second); code != 0 {
			t.Errorf("exit %d after SIGINT, want 0", code)
		}
		if _, ok := p.FindLog("stopped", "signal", "interrupt"); !ok {
			t.Errorf("no stopped signal=interrupt line in\n%s", p.Stderr())
		}
		if got := p.FindLogs(""); len(got) != 3 {
			t.Errorf("FindLogs(\"\"): %d lines, want 3 (stdout's ready too)", len(got))
		}
	})
	t.Run("terminate", func(t *testing.T) {
		p := start(t)
		p.Terminate(t)
		if code := p.Wait(t, 10*time.Second); code != 3 {
			t.Errorf("exit %d after SIGTERM, want 3", code)
		}
		p.WaitForLog(t, time.Second, "stopped", "signal", "terminated")
	})
	t.Run("kill", func(t *testing.T) {
		p := start(t)
		p.Kill(t)
		if !p.Exited() {
			t.Errorf("not exited after Kill")
		}
		if _, ok := p.FindLog("stopped"); ok {
			t.Errorf("logged stopped after kill -9")
		}
		// A log line that will never come: the wait fails at once, not at
		// its deadline.
		msg := failure(func(ft testing.TB) { p.WaitForLog(ft, time.Hour, "stopped") })
		if !strings.Contains(msg, "exited") {
			t.Errorf("WaitForLog on an exited process failed with %q", msg)
		}
		if msg := failure(func(ft testing.TB) { p.Signal(ft, syscall.SIGTERM) }); msg == "" {
			t.Errorf("Signal to an exited process did not fail")
		}
		p.Interrupt(t) // Ctrl-C to an exited process: no error
	})
	t.Run("stopped then cleaned up", func(t *testing.T) {
		// The cleanup resumes a stopped process before it interrupts it. (The
		// check is registered first, so it runs after Start's cleanup.)
		var p *systest.Proc
		t.Cleanup(func() {
			if !p.Exited() {
				t.Errorf("still running after Start's cleanup")
			}
			if _, ok := p.FindLog("stopped", "signal", "interrupt"); !ok {
				t.Errorf("no stopped signal=interrupt line after the cleanup's SIGCONT and SIGINT:\n%s", p.Stderr())
			}
		})
		p = start(t)
		p.Signal(t, syscall.SIGSTOP)
	})
	t.Run("deadline", func(t *testing.T) {
		p := start(t)
		msg := failure(func(ft testing.TB) { p.WaitForLog(ft, 50*time.Millisecond, "never") })
		if !strings.Contains(msg, "within 50ms") || !strings.Contains(msg, `"never"`) {
			t.Errorf("WaitForLog failed with %q", msg)
		}
	})
	t.Run("exit code and file target", func(t *testing.T) {
		p := systest.Start(t, systest.Process{Path: bins.Path("logproc"), Name: "quitter", Args: []string{"-exit", "7"}})
		if code := p.Wait(t, 10*time.Second); code != 7 {
			t.Errorf("%s: exit %d, want 7", p, code)
		}
		if p.String() != "quitter -exit 7" || !slices.Equal(p.Args(), []string{"-exit", "7"}) {
			t.Errorf("String %q, Args %q", p.String(), p.Args())
		}
		say := systest.Start(t, systest.Process{Path: bins.Path("say"), Args: []string{"hello", "world"}})
		if code := say.Wait(t, 10*time.Second); code != 0 || say.Stdout() != "hello world\n" {
			t.Errorf("say: exit %d, stdout %q", code, say.Stdout())
		}
	})
}
