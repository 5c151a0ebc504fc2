package fault

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/systest"
)

// A server can close a connection for good: nats.go does not reconnect after
// a protocol error (a control line too long: issue 12, finding 2) or after
// its credentials are refused twice. A process whose connection is closed so
// must not run on alive and deaf: cortex-scheduler and cortex-worker-echo
// exit non-zero, saying why, so that a supervisor starts them again. Here the
// server revokes their credentials (a configuration reload changes the
// passwords); test/security closes a scheduler's connection with a control
// line too long.
func TestProcessesExitWhenTheServerClosesTheirConnection(t *testing.T) {
	requireBinaries(t)
	users := func(password string) []*server.User {
		return []*server.User{{Username: "scheduler", Password: password}, {Username: "echo-1", Password: password}}
	}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true, Users: users("before")}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS did not start")
	}
	url := srv.ClientURL()

	sched := start(t, binScheduler, "scheduler", "--nats-url", url, "--nats-user", "scheduler", "--nats-password", "before",
		"--store", "memory", "--log-level", "info")
	sched.WaitForLog(t, startTimeout, "job store", "store", "memory")
	worker := start(t, binWorker, "echo-1", "--nats-url", url, "--nats-user", "echo-1", "--nats-password", "before", "--log-level", "info")
	worker.WaitForLog(t, startTimeout, "running", "worker_id", "echo-1")

	revoked := opts.Clone()
	revoked.Port = srv.Addr().(*net.TCPAddr).Port
	revoked.Users = users("after")
	if err := srv.ReloadOptions(revoked); err != nil {
		t.Fatal(err)
	}

	for _, p := range []*systest.Proc{sched, worker} {
		if code := p.Wait(t, exitTimeout); code == 0 || code == -1 {
			t.Errorf("%s exited with code %d once the server closed its connection, want a non-zero exit", p.Name(), code)
		}
		out := p.Stdout() + p.Stderr()
		if !strings.Contains(out, "closed by the server") || !strings.Contains(strings.ToLower(out), "authorization violation") {
			t.Errorf("%s did not say the server closed its connection, and why", p.Name())
		}
	}
}
