package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
	"github.com/nats-io/nats.go"
)

// --reset removes the data directory and says so; one not there yet is
// fine; the working directory and the root are refused, untouched.
func TestResetDataDir(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "dev")
	if err := os.MkdirAll(filepath.Join(dir, "jetstream"), 0o755); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := resetDataDir(&out, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("after --reset %s still exists (%v)", dir, err)
	}
	if !strings.Contains(out.String(), "--reset: removed "+dir) {
		t.Errorf("--reset said %q, want it to name %s", out.String(), dir)
	}
	out.Reset()
	if err := resetDataDir(&out, dir); err != nil || !strings.Contains(out.String(), "does not exist yet") {
		t.Errorf("--reset of a missing dir: %v, %q", err, out.String())
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{".", wd, "/"} {
		if err := resetDataDir(&out, bad); err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Errorf("--reset of %q: %v, want a refusal", bad, err)
		}
	}
	if _, err := os.Stat(wd); err != nil {
		t.Fatalf("the working directory is gone: %v", err)
	}
}

// cortex server runs NATS with JetStream and nothing else; with --auth it
// admits the users it prints (written to their files) and no one else.
func TestServerAuth(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "srv")
	ctx, cancel := context.WithCancel(context.Background())
	root := newRootCommand()
	var out syncBuffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs([]string{"server", "--auth", "--port", "-1", "--http-port", "0", "--data-dir", dataDir})
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("cortex server --auth: %v", err)
		}
	})
	systest.Poll(t, 15*time.Second, 10*time.Millisecond, "cortex server --auth to start", func() (bool, string) {
		return strings.Contains(out.String(), "Ctrl-C stops it."), "\n" + out.String()
	})
	env := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-credentials-worker-1.env"))
	if err != nil {
		t.Fatalf("worker-1's credentials: %v\n%s", err, out.String())
	}
	for _, kv := range strings.Fields(string(b)) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	if env["NATS_USER"] != "worker-1" || env["NATS_PASSWORD"] == "" || env["NATS_URL"] == "" {
		t.Fatalf("dev-credentials-worker-1.env: %q", b)
	}
	nc, err := nats.Connect(env["NATS_URL"], nats.UserInfo(env["NATS_USER"], env["NATS_PASSWORD"]))
	if err != nil {
		t.Fatalf("worker-1 with its printed credentials: %v", err)
	}
	nc.Close()
	if nc, err := nats.Connect(env["NATS_URL"]); err == nil {
		nc.Close()
		t.Error("cortex server --auth admitted a connection without credentials")
	}
	for _, u := range []string{"client", "scheduler", "echo-1", "worker-2"} {
		if !strings.Contains(out.String(), "    "+u+" ") {
			t.Errorf("cortex server --auth does not print %s:\n%s", u, out.String())
		}
	}
}
