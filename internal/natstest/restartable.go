package natstest

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/embeddednats"
)

// Restartable is a server that a test shuts down and starts again as the
// same server: on the same loopback port, so that clients reconnect to it,
// and with the same JetStream directory, so that streams and buckets
// survive.
type Restartable struct {
	port int
	dir  string

	mu  sync.Mutex
	srv *server.Server
}

// restartWait bounds how long Start waits for the port to be free again (the
// listener of the server just shut down may still hold it).
const restartWait = 10 * time.Second

// RunRestartable starts a server on a free loopback port with JetStream in
// t.TempDir(). When the test ends, after the cleanups registered later (the
// processes and connections that use it), it shuts down whichever server is
// running then.
func RunRestartable(t testing.TB) *Restartable {
	t.Helper()
	r := &Restartable{dir: t.TempDir()}
	srv, err := embeddednats.Start(r.config(-1))
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	r.port = srv.Addr().(*net.TCPAddr).Port
	r.srv = srv
	t.Cleanup(r.Shutdown)
	return r
}

func (r *Restartable) config(port int) embeddednats.Config {
	return embeddednats.Config{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: r.dir, ReadyTimeout: 5 * time.Second}
}

// URL is the server's client URL, the same across restarts.
func (r *Restartable) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", r.port) }

// Shutdown shuts the server down, if it runs, and waits until it is down.
func (r *Restartable) Shutdown() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Start starts the server again after Shutdown, on the same port and data
// directory; it retries for up to 10 s while the port is still held.
func (r *Restartable) Start(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	running := r.srv != nil
	r.mu.Unlock()
	if running {
		t.Fatal("natstest: Start while the server runs")
	}
	deadline := time.Now().Add(restartWait)
	for {
		srv, err := embeddednats.Start(r.config(r.port))
		if err == nil {
			r.mu.Lock()
			r.srv = srv
			r.mu.Unlock()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("natstest: restarting the server on port %d: %v", r.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Restart shuts the server down and, after down has passed (the outage a
// test simulates), starts it again as Start does.
func (r *Restartable) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	r.Shutdown()
	time.Sleep(down)
	r.Start(t)
}
