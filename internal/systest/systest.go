// Package systest is the harness of CortexOS's system tests: the tests that
// run the real binaries as OS processes (test/e2e, test/fault) and the ones
// that wire the real parts together in one process (internal/integration,
// test/security, test/compat).
//
// It builds the repository's commands once per test binary ([Binaries]),
// starts them as processes with their output captured ([Start], [Proc]),
// signals them, waits for them with a deadline, finds their slog text log
// lines by message words and attributes ([Attrs], [Proc.WaitForLog]), and
// shows their logs when a test fails. [Eventually] and [Poll] wait for a
// condition with a deadline; [Connect] opens a bus for the test, [Client] a pkg/client
// client on it, and [PublishSubmit] sends a bare submission; [RepoRoot]
// and [FreePort] find the repository and an unused port.
//
// A NATS server for a test is internal/natstest's: natstest.URL for one that
// runs until the test ends, natstest.RunRestartable for one a test stops and
// restarts on the same port and JetStream directory; natstest.Conn for a
// plain NATS connection where a test needs no bus.
//
// Every function that takes a testing.TB reports through it and, like
// t.Fatal, must be called from the test's goroutine.
package systest

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// RepoRoot is the repository's root: the nearest directory holding go.mod at
// or above the working directory (a test runs in its package's directory).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := findRepoRoot()
	if err != nil {
		t.Fatalf("systest: %v", err)
	}
	return root
}

func findRepoRoot() (string, error) {
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
			return "", errors.New("no go.mod at or above the working directory")
		}
		dir = parent
	}
}

// FreePort is a loopback TCP port nothing listened on a moment ago: for a
// URL that must refuse connections, say. Another process may take it before
// the test uses it; a server the test starts itself should rather be given
// port -1 and asked which port it got.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("systest: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BaseEnv is the test's environment without the variables CortexOS reads
// (NATS_URL and CORTEX_*), so that only what a test sets reaches the
// processes it starts.
func BaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "CORTEX_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Poll calls cond every interval until it returns true, and returns how long
// that took. At the deadline it fails the test, naming what and cond's last
// description of the state.
func Poll(t testing.TB, timeout, interval time.Duration, what string, cond func() (ok bool, state string)) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			if state != "" {
				t.Fatalf("timed out after %s waiting for %s; last: %s", timeout, what, state)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// The pauses of Eventually: short at first, so that a condition about to hold
// costs little, then longer; and never shorter than the condition took, so
// that an expensive one (a command run as a process, say) keeps the machine
// at most half busy.
const (
	firstPause = time.Millisecond
	maxPause   = 10 * time.Millisecond
)

// Eventually waits until cond returns true, calling it again after a pause
// that grows from 1ms to 10ms, or as long as cond took if that is longer. At
// the deadline it fails the test, naming what.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := firstPause
	for {
		began := time.Now()
		if cond() {
			return
		}
		took := time.Since(began)
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(max(pause, took))
		pause = min(2*pause, maxPause)
	}
}

// Connect opens a bus connection named name to url that logs nowhere. It is
// closed when the test ends.
func Connect(t testing.TB, url, name string) *bus.NatsBus {
	t.Helper()
	return ConnectWith(t, bus.Config{URL: url, Name: name})
}

// ConnectWith opens a bus connection configured by cfg (whose Logger defaults
// to one that logs nowhere). It is closed when the test ends.
func ConnectWith(t testing.TB, cfg bus.Config) *bus.NatsBus {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	b, err := bus.Connect(cfg)
	if err != nil {
		t.Fatalf("systest: connect %s to %s: %v", cfg.Name, cfg.URL, err)
	}
	t.Cleanup(b.Close)
	return b
}

// Client returns a pkg/client Client on b's connection, which the test
// closes with b. An unset opts.RequestTimeout is a minute: the test's own
// contexts bound its requests. With opts.Identity, b must read its answers
// under client.InboxPrefix(opts.Identity).
func Client(t testing.TB, b *bus.NatsBus, opts client.Options) *client.Client {
	t.Helper()
	if opts.RequestTimeout == 0 {
		opts.RequestTimeout = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c, err := client.New(b.Conn(), opts)
	if err != nil {
		t.Fatalf("systest: client: %v", err)
	}
	return c
}

// PublishSubmit publishes req on sys.job.submit as a bare submission, with
// no reply asked for (as the design document's sender does), signed by
// sender, under traceID ("": a new one). It fills an empty job_id with a
// new one. Nothing answers it; the job is recorded when a scheduler takes it.
func PublishSubmit(b *bus.NatsBus, sender, traceID string, req *pb.JobRequest) error {
	if req.JobId == "" {
		req.JobId = uuid.NewString()
	}
	if traceID == "" {
		traceID = uuid.NewString()
	}
	return b.Publish(wire.SubjectSubmit, wire.JobRequestPacket(traceID, sender, req))
}
