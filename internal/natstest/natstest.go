// Package natstest runs a real, in-process NATS server for tests: a random
// loopback port, JetStream in t.TempDir(), shut down by t.Cleanup; and
// opens plain connections to it ([Conn]).
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/embeddednats"
)

// RunServer starts a server for the test and returns it.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	return RunServerWithDir(t, t.TempDir())
}

// RunServerWithDir starts a server whose JetStream lives in dir, so that a
// test can restart a server on the same data.
func RunServerWithDir(t testing.TB, dir string) *server.Server {
	t.Helper()
	srv, err := embeddednats.Start(embeddednats.Config{Port: -1, JetStream: true, StoreDir: dir})
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// URL starts a server for the test and returns its client URL.
func URL(t testing.TB) string {
	t.Helper()
	return RunServer(t).ClientURL()
}

// RunServerWith starts a server for the test as RunServer does (a random
// loopback port, JetStream in t.TempDir()), with cfg's ConfigFile, Users and
// Configure: a configuration file with users and permissions, say.
func RunServerWith(t testing.TB, cfg embeddednats.Config) *server.Server {
	t.Helper()
	cfg.Host, cfg.Port, cfg.HTTPPort = "127.0.0.1", -1, 0
	cfg.JetStream, cfg.StoreDir = true, t.TempDir()
	srv, err := embeddednats.Start(cfg)
	if err != nil {
		t.Fatalf("natstest: %v", err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// Conn opens a plain NATS connection to url for the test (asynchronous
// errors go to the test log), closed when the
// test ends. A test that needs the repository's bus rather than a bare
// connection uses systest.Connect.
func Conn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		subj := ""
		if sub != nil {
			subj = sub.Subject
		}
		t.Logf("natstest: asynchronous error (subscription %q): %v", subj, err)
	}))
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}
