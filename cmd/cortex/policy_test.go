package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// runCortex runs the cortex command with args and returns its standard
// output and error.
func runCortex(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const shippedPolicy = "../../config/policy.yaml"

func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	out, err := runCortex(t, context.Background(), "policy", "check", "--policy", shippedPolicy)
	if err != nil || out != "ok: version default-1, 1 rule\n" {
		t.Fatalf("check of the shipped policy: %q, %v", out, err)
	}

	bad := writeTemp(t, "bad.yaml", "version: v1\ndefault: maybe\nrules:\n  - id: a\n    match: {topics: [\"a..b\"], colour: red}\n    when: job.tenent == \"x\"\n    decision: deny\n")
	out, err = runCortex(t, context.Background(), "policy", "check", "--policy", bad)
	if err == nil || !strings.Contains(err.Error(), "5 errors") {
		t.Fatalf("check of a broken policy: err %v", err)
	}
	for _, want := range []string{
		bad + ":2:10: default: want allow or deny",
		bad + ":4:5: rules[0].reason: a deny rule needs a reason",
		bad + ":5:22: rules[0].match.topics[0]: bad topic",
		bad + ":5:31: rules[0].match.colour: unknown key",
		bad + ":6:14: rules[0].when: undefined field 'tenent'",
	} {
		if !strings.Contains(out, want+"") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, err := runCortex(t, context.Background(), "policy", "check"); err == nil {
		t.Error("check without --policy: no error")
	}
	out, err = runCortex(t, context.Background(), "policy", "check", "--policy", filepath.Join(t.TempDir(), "none.yaml"))
	if err == nil || !strings.Contains(out, "none.yaml: cannot read the file: no such file or directory") {
		t.Errorf("check of a missing file: %q, %v", out, err)
	}
}

func TestPolicyEval(t *testing.T) {
	t.Parallel()
	policy := writeTemp(t, "policy.yaml", `
version: t1
rules:
  - id: per-tenant
    decision: throttle
    reason: tenant over its rate
    throttle: {rate: 1, per: 1h}
  - id: no-gpu-for-guests
    match: {tenants: [guest], capabilities: [gpu]}
    decision: deny
    reason: guests get no GPU
`)
	yamlJob := writeTemp(t, "job.yaml", "job_id: j1\ntopic: job.train\ntenant: guest\npriority: critical\nrequired_capabilities: [gpu]\n")
	out, err := runCortex(t, context.Background(), "policy", "eval", "--policy", policy, "--job", yamlJob)
	want := "decision:       deny\nrule:           no-gpu-for-guests\nreason:         guests get no GPU\npolicy_version: t1\n"
	if err != nil || out != want {
		t.Fatalf("eval:\n%s(err %v)\nwant:\n%s", out, err, want)
	}

	// A list of jobs, twice each: the same tenant's second job is throttled.
	jsonJobs := writeTemp(t, "jobs.json", `[{"jobId": "a1", "tenant": "a"}, {"job_id": "b1", "tenant": "b", "priority": "JOB_PRIORITY_BATCH"}]`)
	out, err = runCortex(t, context.Background(), "policy", "eval", "--policy", policy, "--job", jsonJobs, "--repeat", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatalf("--json output %q: %v", out, err)
	}
	if len(raw) != 4 {
		t.Fatalf("%d results; want 4:\n%s", len(raw), out)
	}
	for i, w := range []struct{ job, decision, rule string }{
		{"a1", "allow", ""}, {"a1", "throttle", "per-tenant"}, {"b1", "allow", ""}, {"b1", "throttle", "per-tenant"},
	} {
		r := raw[i]
		if r["job_id"] != w.job || r["decision"] != w.decision || r["rule_id"] != w.rule {
			t.Errorf("result %d = %v; want %s %s by %q", i, r, w.job, w.decision, w.rule)
		}
		if ms, _ := r["retry_after_ms"].(float64); (w.decision == "throttle") != (ms > 0) || ms > float64(time.Hour.Milliseconds()) {
			t.Errorf("result %d retry_after_ms = %v", i, r["retry_after_ms"])
		}
	}

	// The shipped default policy decides without --policy.
	destroy := writeTemp(t, "destroy.yaml", "topic: sys.destroy\n")
	out, err = runCortex(t, context.Background(), "policy", "eval", "--job", destroy)
	if err != nil || !strings.Contains(out, "rule:           forbidden-topic\nreason:         forbidden topic\n") {
		t.Fatalf("eval with the default policy: %q, %v", out, err)
	}

	for _, tc := range []struct{ name, content, want string }{
		{"unknown field", "topik: x\n", `unknown field "topik"`},
		{"bad priority", "priority: urgent\n", "priority"},
		{"empty", "", "empty"},
		{"scalar", "42\n", "want a job"},
	} {
		_, err := runCortex(t, context.Background(), "policy", "eval", "--job", writeTemp(t, "j.yaml", tc.content))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v; want one containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := runCortex(t, context.Background(), "policy", "eval", "--policy", writeTemp(t, "b.yaml", "rules: 1\n"), "--job", destroy); !errors.Is(err, safety.ErrInvalidPolicy) {
		t.Errorf("eval with a broken policy: %v", err)
	}
}

// TestSafetyCommand: cortex safety answers checks on the bus until its
// context ends, then stops cleanly.
func TestSafetyCommand(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	policy := writeTemp(t, "policy.yaml", "version: svc-1\nrules:\n  - id: no-x\n    match: {topics: [x]}\n    decision: deny\n    reason: no x\n")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := runCortex(t, ctx, "safety", "--nats-url", url, "--policy", policy, "--log-level", "error", "--id", "svc-test")
		done <- err
	}()

	b, err := bus.Connect(bus.Config{URL: url, DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	r, err := safety.NewRemote(safety.RemoteConfig{Bus: b, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var v safety.Verdict
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, err = r.Check(context.Background(), &pb.JobRequest{Topic: "x"})
		if err == nil || time.Now().After(deadline) {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("cortex safety ended: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err != nil || v.Decision != safety.Deny || v.RuleID != "no-x" || v.PolicyVersion != "svc-1" {
		t.Fatalf("check through cortex safety: %+v, %v", v, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("cortex safety: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("cortex safety did not stop")
	}
}
