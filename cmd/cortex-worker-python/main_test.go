package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

func execute(args ...string) error {
	cmd := newCommand()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(context.Background())
}

// Without a working sandbox the worker does not start: it runs no code
// unsandboxed unless told to.
func TestRefusesToStartWithoutASandbox(t *testing.T) {
	t.Parallel()
	err := execute("--bwrap", "/nonexistent/bwrap", "--nats-url", "nats://127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "refusing to run code without it") {
		t.Fatalf("err = %v, want a refusal", err)
	}
	err = execute("--python", "/nonexistent/python3", "--nats-url", "nats://127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "python not found") {
		t.Fatalf("err = %v, want python not found", err)
	}
}

// With a working sandbox it gets as far as connecting (nobody listens here).
func TestStartsWithASandbox(t *testing.T) {
	t.Parallel()
	err := execute("--nats-url", "nats://127.0.0.1:1")
	if err == nil || strings.Contains(err.Error(), "sandbox") {
		t.Fatalf("err = %v, want a connection error", err)
	}
	if err := execute("--capacity", "0"); err == nil || !strings.Contains(err.Error(), "--capacity") {
		t.Fatalf("err = %v", err)
	}
}

// --unsafe-no-sandbox starts where the sandbox cannot (here: no bwrap),
// and says so at error level, three times, before anything else. Not
// parallel: it reads what the worker writes to os.Stderr.
func TestUnsafeStartsWithoutASandboxAndSaysSo(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = f
	err = execute("--unsafe-no-sandbox", "--bwrap", "/nonexistent/bwrap", "--nats-url", "nats://127.0.0.1:1", "--log-level", "info")
	os.Stderr = stderr
	if err == nil || strings.Contains(err.Error(), "sandbox") {
		t.Fatalf("err = %v, want a connection error (past the sandbox)", err)
	}
	out, rerr := os.ReadFile(f.Name())
	if rerr != nil {
		t.Fatal(rerr)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 3 {
		t.Fatalf("stderr:\n%s", out)
	}
	for _, l := range lines[:3] {
		if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "UNSAFE") || !strings.Contains(l, "WITHOUT a sandbox") {
			t.Errorf("the first lines do not all shout UNSAFE:\n%s", out)
			break
		}
	}
}
