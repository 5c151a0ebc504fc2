package main

import (
	"context"
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
