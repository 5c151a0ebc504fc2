package safety_test

import (
	"context"
	"errors"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

var quiet = slog.New(slog.DiscardHandler)

func newKernel(t testing.TB, src string) *safety.Kernel {
	t.Helper()
	k, err := safety.New(safety.Config{Policy: mustPolicy(t, src), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func check(t testing.TB, k *safety.Kernel, req *pb.JobRequest) safety.Verdict {
	t.Helper()
	v, err := k.Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return v
}

const waitFor = 10 * time.Second

// TestMatchFields: each match field, alone, matches what it should and
// nothing else.
func TestMatchFields(t *testing.T) {
	t.Parallel()
	crit := pb.JobPriority_JOB_PRIORITY_CRITICAL
	for _, tc := range []struct {
		name  string
		match string
		job   *pb.JobRequest
		deny  bool
	}{
		{"empty match", "{}", &pb.JobRequest{}, true},
		{"topic literal", "{topics: [job.echo]}", &pb.JobRequest{Topic: "job.echo"}, true},
		{"topic literal other", "{topics: [job.echo]}", &pb.JobRequest{Topic: "job.echo2"}, false},
		{"topic *", "{topics: [job.*]}", &pb.JobRequest{Topic: "job.echo"}, true},
		{"topic * is one token", "{topics: [job.*]}", &pb.JobRequest{Topic: "job.echo.x"}, false},
		{"topic * needs a token", "{topics: [job.*]}", &pb.JobRequest{Topic: "job"}, false},
		{"topic * not empty", "{topics: [job.*]}", &pb.JobRequest{Topic: "job."}, false},
		{"topic >", "{topics: [job.>]}", &pb.JobRequest{Topic: "job.a.b.c"}, true},
		{"topic > needs a token", "{topics: [job.>]}", &pb.JobRequest{Topic: "job"}, false},
		{"topic > alone", "{topics: ['>']}", &pb.JobRequest{Topic: "anything.at.all"}, true},
		{"topic * in the middle", "{topics: [job.*.gpu]}", &pb.JobRequest{Topic: "job.x.gpu"}, true},
		{"topic * in the middle, other end", "{topics: [job.*.gpu]}", &pb.JobRequest{Topic: "job.x.cpu"}, false},
		{"topic in-token glob", "{topics: [job.gpu-*]}", &pb.JobRequest{Topic: "job.gpu-large"}, true},
		{"topic in-token glob stays in token", "{topics: [job.gpu-*]}", &pb.JobRequest{Topic: "job.gpu-large.x"}, false},
		{"topic any of", "{topics: [a, b]}", &pb.JobRequest{Topic: "b"}, true},
		{"tenant literal", "{tenants: [acme]}", &pb.JobRequest{Tenant: "acme"}, true},
		{"tenant other", "{tenants: [acme]}", &pb.JobRequest{Tenant: "acme2"}, false},
		{"tenant glob", "{tenants: ['acme-*']}", &pb.JobRequest{Tenant: "acme-prod"}, true},
		{"tenant *", "{tenants: ['*']}", &pb.JobRequest{Tenant: "x.y"}, true},
		{"tenant empty", "{tenants: ['']}", &pb.JobRequest{}, true},
		{"priority", "{priorities: [CRITICAL]}", &pb.JobRequest{Priority: crit}, true},
		{"priority other", "{priorities: [CRITICAL]}", &pb.JobRequest{Priority: pb.JobPriority_JOB_PRIORITY_BATCH}, false},
		{"priority unknown value", "{priorities: [CRITICAL]}", &pb.JobRequest{Priority: 99}, false},
		{"capabilities any of", "{capabilities: [gpu, tpu]}", &pb.JobRequest{RequiredCapabilities: []string{"cpu", "tpu"}}, true},
		{"capabilities none", "{capabilities: [gpu]}", &pb.JobRequest{RequiredCapabilities: []string{"cpu"}}, false},
		{"labels all", "{labels: {zone: eu, tier: a}}", &pb.JobRequest{RequiredLabels: map[string]string{"zone": "eu", "tier": "a", "x": "y"}}, true},
		{"labels one missing", "{labels: {zone: eu, tier: a}}", &pb.JobRequest{RequiredLabels: map[string]string{"zone": "eu"}}, false},
		{"labels other value", "{labels: {zone: eu}}", &pb.JobRequest{RequiredLabels: map[string]string{"zone": "us"}}, false},
		{"env literal", "{env_vars: [AWS_KEY]}", &pb.JobRequest{EnvVars: map[string]string{"AWS_KEY": ""}}, true},
		{"env glob", "{env_vars: ['*_SECRET']}", &pb.JobRequest{EnvVars: map[string]string{"A": "1", "DB_SECRET": "x"}}, true},
		{"env none", "{env_vars: ['*_SECRET']}", &pb.JobRequest{EnvVars: map[string]string{"A": "1"}}, false},
		{"payload over", "{payload_bytes_over: 3}", &pb.JobRequest{Payload: []byte("abcd")}, true},
		{"payload at", "{payload_bytes_over: 3}", &pb.JobRequest{Payload: []byte("abc")}, false},
		{"context over", "{context_bytes_over: 3}", &pb.JobRequest{ContextPtr: "abcd"}, true},
		{"context at", "{context_bytes_over: 3}", &pb.JobRequest{ContextPtr: "abc"}, false},
		{"fields AND", "{topics: [job.echo], tenants: [acme]}", &pb.JobRequest{Topic: "job.echo", Tenant: "other"}, false},
		{"fields AND both", "{topics: [job.echo], tenants: [acme]}", &pb.JobRequest{Topic: "job.echo", Tenant: "acme"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := newKernel(t, "version: v1\nrules:\n  - id: r\n    match: "+tc.match+"\n    decision: deny\n    reason: matched\n")
			v := check(t, k, tc.job)
			if got := v.Decision == safety.Deny; got != tc.deny {
				t.Fatalf("match %s, job %v: verdict %+v; want deny=%v", tc.match, tc.job, v, tc.deny)
			}
			if tc.deny && (v.RuleID != "r" || v.Reason != "matched" || v.PolicyVersion != "v1") {
				t.Fatalf("verdict %+v; want rule r, reason matched, version v1", v)
			}
		})
	}
}

func TestFirstMatchWinsAndDefault(t *testing.T) {
	t.Parallel()
	k := newKernel(t, `
version: v2
default: deny
default_reason: not on the list
rules:
  - id: ops-first
    match: {tenants: [ops]}
    decision: allow
  - id: no-destroy
    match: {topics: [sys.destroy]}
    decision: deny
    reason: forbidden topic
  - id: echo
    match: {topics: [job.echo]}
    decision: allow
    reason: echo is harmless
`)
	for _, tc := range []struct {
		job      *pb.JobRequest
		decision safety.Decision
		rule     string
		reason   string
	}{
		{&pb.JobRequest{Tenant: "ops", Topic: "sys.destroy"}, safety.Allow, "ops-first", ""},
		{&pb.JobRequest{Tenant: "acme", Topic: "sys.destroy"}, safety.Deny, "no-destroy", "forbidden topic"},
		{&pb.JobRequest{Tenant: "acme", Topic: "job.echo"}, safety.Allow, "echo", "echo is harmless"},
		{&pb.JobRequest{Tenant: "acme", Topic: "job.other"}, safety.Deny, "", "not on the list"},
	} {
		v := check(t, k, tc.job)
		if v.Decision != tc.decision || v.RuleID != tc.rule || v.Reason != tc.reason || v.PolicyVersion != "v2" {
			t.Errorf("job %v: %+v; want %s by %q (%q)", tc.job, v, tc.decision, tc.rule, tc.reason)
		}
	}
}

// TestDefaultPolicyKernel: with no policy, the kernel denies sys.destroy
// as the stub did and allows the rest.
func TestDefaultPolicyKernel(t *testing.T) {
	t.Parallel()
	k, err := safety.New(safety.Config{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if v := check(t, k, &pb.JobRequest{Topic: "sys.destroy"}); v.Decision != safety.Deny || v.Reason != "forbidden topic" || v.RuleID != "forbidden-topic" || v.PolicyVersion == "" {
		t.Fatalf("sys.destroy: %+v", v)
	}
	if v := check(t, k, &pb.JobRequest{Topic: "job.echo"}); v.Decision != safety.Allow {
		t.Fatalf("job.echo: %+v", v)
	}
	if v := check(t, k, nil); v.Decision != safety.Allow {
		t.Fatalf("a nil job: %+v", v)
	}
}

// TestThrottlePerTenant: a tenant over its rate is throttled with a
// retry-after while another proceeds; within the rate, the next rule decides.
func TestThrottlePerTenant(t *testing.T) {
	t.Parallel()
	k := newKernel(t, `
version: v1
rules:
  - id: per-tenant
    decision: throttle
    reason: tenant over its rate
    throttle: {rate: 2, per: 1h, by: tenant}
  - id: after
    match: {topics: [job.denied]}
    decision: deny
    reason: later rule
`)
	a := &pb.JobRequest{Tenant: "a", Topic: "job.echo"}
	for i := range 2 {
		if v := check(t, k, a); v.Decision != safety.Allow {
			t.Fatalf("tenant a, job %d: %+v; want allow (within the burst)", i, v)
		}
	}
	v := check(t, k, a)
	if v.Decision != safety.Throttle || v.RuleID != "per-tenant" || v.Reason != "tenant over its rate" {
		t.Fatalf("tenant a, job 3: %+v; want throttle", v)
	}
	// One token every 30 minutes: the next is at most that far.
	if v.RetryAfter <= 0 || v.RetryAfter > 30*time.Minute {
		t.Fatalf("retry after %s; want within (0, 30m]", v.RetryAfter)
	}
	if v := check(t, k, &pb.JobRequest{Tenant: "b", Topic: "job.echo"}); v.Decision != safety.Allow {
		t.Fatalf("tenant b: %+v; want allow", v)
	}
	if v := check(t, k, &pb.JobRequest{Tenant: "c", Topic: "job.denied"}); v.Decision != safety.Deny || v.RuleID != "after" {
		t.Fatalf("tenant c within its rate: %+v; want the next rule's deny", v)
	}
	if s := k.Stats(); s.Throttled != 1 || s.ThrottleKeys != 3 {
		t.Fatalf("stats %+v; want 1 throttled, 3 buckets", s)
	}
}

func TestThrottleByTopicAndBoth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		by          string
		second      *pb.JobRequest
		throttled   bool
		wantBuckets int
	}{
		{"topic", &pb.JobRequest{Tenant: "b", Topic: "x"}, true, 1},
		{"topic", &pb.JobRequest{Tenant: "a", Topic: "y"}, false, 2},
		{"tenant_topic", &pb.JobRequest{Tenant: "b", Topic: "x"}, false, 2},
		{"tenant_topic", &pb.JobRequest{Tenant: "a", Topic: "x"}, true, 1},
	} {
		k := newKernel(t, "version: v1\nrules:\n  - id: t\n    decision: throttle\n    reason: r\n    throttle: {rate: 1, per: 24h, by: "+tc.by+"}\n")
		check(t, k, &pb.JobRequest{Tenant: "a", Topic: "x"})
		v := check(t, k, tc.second)
		if (v.Decision == safety.Throttle) != tc.throttled || k.Stats().ThrottleKeys != tc.wantBuckets {
			t.Errorf("by %s, second job %v: %+v, %d buckets; want throttled=%v, %d buckets", tc.by, tc.second, v, k.Stats().ThrottleKeys, tc.throttled, tc.wantBuckets)
		}
	}
}

// TestThrottleBucketsBounded: hostile tenant names cost at most max_keys
// buckets.
func TestThrottleBucketsBounded(t *testing.T) {
	t.Parallel()
	k := newKernel(t, "version: v1\nrules:\n  - id: t\n    decision: throttle\n    reason: r\n    throttle: {rate: 1, per: 1h, max_keys: 5}\n")
	for i := range 1000 {
		check(t, k, &pb.JobRequest{Tenant: fmt.Sprint("hostile-", i)})
	}
	if s := k.Stats(); s.ThrottleKeys != 5 || s.ThrottleEvictions != 995 {
		t.Fatalf("stats %+v; want 5 buckets, 995 evictions", s)
	}
}

func TestCELRule(t *testing.T) {
	t.Parallel()
	k := newKernel(t, `
version: v1
rules:
  - id: broken-at-run-time
    when: job.env["MISSING"] == "x"
    on_error: skip
    decision: deny
    reason: never
  - id: big-critical
    match: {priorities: [CRITICAL]}
    when: >
      job.tenant != "ops" &&
      (job.payload_size > 3 || "gpu" in job.capabilities) &&
      job.labels.zone == "eu" && job.max_attempts > 1 && job.timeout_ms < 1000 &&
      job.job_id.startsWith("j-") && job.topic.endsWith(".run") && job.context_size == 0
    decision: deny
    reason: only ops runs big critical jobs
`)
	job := func(tenant string, payload string) *pb.JobRequest {
		return &pb.JobRequest{
			JobId: "j-1", Topic: "job.run", Tenant: tenant, Priority: pb.JobPriority_JOB_PRIORITY_CRITICAL,
			Payload: []byte(payload), RequiredLabels: map[string]string{"zone": "eu"}, MaxAttempts: 3, TimeoutMs: 500,
		}
	}
	if v := check(t, k, job("acme", "abcd")); v.Decision != safety.Deny || v.RuleID != "big-critical" {
		t.Fatalf("acme: %+v; want deny by big-critical", v)
	}
	if v := check(t, k, job("ops", "abcd")); v.Decision != safety.Allow {
		t.Fatalf("ops: %+v; want allow", v)
	}
	if v := check(t, k, job("acme", "ab")); v.Decision != safety.Allow {
		t.Fatalf("small payload: %+v; want allow", v)
	}
	if s := k.Stats(); s.CELErrors != 3 {
		t.Fatalf("CELErrors = %d; want 3 (the broken rule, once per check)", s.CELErrors)
	}
	if s := k.Stats(); s.OnErrorVerdicts != 0 {
		t.Fatalf("OnErrorVerdicts = %d; want 0 (on_error: skip decides nothing)", s.OnErrorVerdicts)
	}
}

// TestLoadRefusesBrokenPolicy: Load and Reload refuse a policy that does
// not validate; the running one goes on deciding.
func TestLoadRefusesBrokenPolicy(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeFile(t, path, "version: v1\nrules:\n  - id: no-a\n    match: {topics: [a]}\n    decision: deny\n    reason: no a\n")
	var logs syncBuffer
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, "version: v2\ndefault: nope\n")
	err = k.Reload()
	if !errors.Is(err, safety.ErrInvalidPolicy) || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("Reload of a broken file: %v", err)
	}
	if v := check(t, k, &pb.JobRequest{Topic: "a"}); v.Decision != safety.Deny || v.PolicyVersion != "v1" {
		t.Fatalf("after a refused reload: %+v; want v1's deny", v)
	}
	if s := k.Stats(); s.Refused != 1 || s.Loads != 1 || s.PolicyVersion != "v1" || s.PolicyFile != path {
		t.Fatalf("stats %+v", s)
	}
	if out := logs.String(); !strings.Contains(out, "policy refused") || !strings.Contains(out, "component=safety") || !strings.Contains(out, "line 2:10: default") || !strings.Contains(out, "running_version=v1") {
		t.Fatalf("log:\n%s", out)
	}
	if _, err := safety.New(safety.Config{PolicyFile: path, Logger: quiet}); !errors.Is(err, safety.ErrInvalidPolicy) {
		t.Fatalf("New with a broken file: %v", err)
	}
	if _, err := safety.New(safety.Config{PolicyFile: path, Policy: safety.DefaultPolicy()}); err == nil {
		t.Fatal("New with Policy and PolicyFile: no error")
	}
}

// TestWatch: an edit is picked up, including an editor's rename over the
// file; a broken edit is refused once and the old policy stays in force; a
// removed file leaves the policy in force.
func TestWatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, "version: v1\nrules:\n  - id: no-a\n    match: {topics: [a]}\n    decision: deny\n    reason: no a\n")
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: quiet, WatchInterval: 5 * time.Millisecond, SettleTime: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Watch(ctx, "") }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	}()

	// A broken edit: refused (once), v1 still decides. Edits are written
	// whole (write and rename), so that no look sees half a file.
	writeFile := writeAtomic
	writeFile(t, path, "version: v2\nrules:\n  - id: x\n    decision: deny\n")
	systest.Eventually(t, waitFor, "the broken edit to be refused", func() bool { return k.Stats().Refused >= 1 })
	if v := check(t, k, &pb.JobRequest{Topic: "a"}); v.Decision != safety.Deny || v.RuleID != "no-a" || v.PolicyVersion != "v1" {
		t.Fatalf("after a broken edit: %+v; want v1's rule no-a", v)
	}
	// Written as an editor does: a new file renamed over the old.
	tmp := filepath.Join(dir, ".policy.yaml.swp")
	writeAtomic(t, tmp, "version: v3\nrules:\n  - id: no-b\n    match: {topics: [b]}\n    decision: deny\n    reason: no b\n")
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "v3 to be loaded", func() bool { return k.Stats().PolicyVersion == "v3" })
	if v := check(t, k, &pb.JobRequest{Topic: "a"}); v.Decision != safety.Allow {
		t.Fatalf("v3, topic a: %+v; want allow", v)
	}
	if v := check(t, k, &pb.JobRequest{Topic: "b"}); v.Decision != safety.Deny || v.RuleID != "no-b" {
		t.Fatalf("v3, topic b: %+v; want deny by no-b", v)
	}
	if s := k.Stats(); s.Refused != 1 {
		t.Fatalf("Refused = %d; want 1: a broken file is refused once, not at every look", s.Refused)
	}
	// Removed: logged, v3 stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the missing file to be noticed", func() bool { return k.Stats().WatchErrors >= 1 })
	if v := check(t, k, &pb.JobRequest{Topic: "b"}); v.Decision != safety.Deny || v.PolicyVersion != "v3" {
		t.Fatalf("after removal: %+v; want v3 in force", v)
	}
	// Back with the same content: nothing to do; with new content: loaded.
	writeFile(t, path, "version: v4\n")
	systest.Eventually(t, waitFor, "v4 to be loaded", func() bool { return k.Stats().PolicyVersion == "v4" })
}

// TestInstallKeepsBuckets: a reload that keeps a throttle rule keeps its
// buckets, so a reload is no way around a rate.
func TestInstallKeepsBuckets(t *testing.T) {
	t.Parallel()
	src := "version: %s\nrules:\n  - id: t\n    decision: throttle\n    reason: r\n    throttle: {rate: 1, per: %s}\n"
	k := newKernel(t, fmt.Sprintf(src, "v1", "24h"))
	check(t, k, &pb.JobRequest{Tenant: "a"})
	if err := k.Install(mustPolicy(t, fmt.Sprintf(src, "v2", "24h"))); err != nil {
		t.Fatal(err)
	}
	if v := check(t, k, &pb.JobRequest{Tenant: "a"}); v.Decision != safety.Throttle || v.PolicyVersion != "v2" {
		t.Fatalf("after a reload with the same throttle: %+v; want throttled by v2", v)
	}
	if err := k.Install(mustPolicy(t, fmt.Sprintf(src, "v3", "1h"))); err != nil {
		t.Fatal(err)
	}
	if v := check(t, k, &pb.JobRequest{Tenant: "a"}); v.Decision != safety.Allow {
		t.Fatalf("after a reload with a new throttle: %+v; want allow (new buckets)", v)
	}
}

// TestAuditAndLog: every decision reaches the audit hook; denials and
// throttles are logged at info, admissions only at debug.
func TestAuditAndLog(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		records []*pb.SafetyVerdict
		logs    syncBuffer
	)
	k, err := safety.New(safety.Config{
		Policy: mustPolicy(t, `
version: v9
rules:
  - id: no-x
    match: {topics: [x]}
    decision: deny
    reason: no x
  - id: slow
    match: {topics: [slow]}
    decision: throttle
    reason: too fast
    throttle: {rate: 1, per: 24h}
`),
		Logger:     slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		InstanceID: "kernel-1",
		Audit: func(r *pb.SafetyVerdict) {
			mu.Lock()
			records = append(records, r)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := safety.WithTraceID(context.Background(), "trace-1")
	before := time.Now().UnixMilli()
	for _, req := range []*pb.JobRequest{
		{JobId: "j1", Tenant: "t", Topic: "ok"},
		{JobId: "j2", Tenant: "t", Topic: "x"},
		{JobId: "j3", Tenant: "t", Topic: "slow"},
		{JobId: "j4", Tenant: "t", Topic: "slow"},
	} {
		if _, err := k.Check(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(records) != 4 {
		t.Fatalf("%d audit records; want 4", len(records))
	}
	want := []struct {
		job      string
		decision pb.PolicyDecision
		rule     string
	}{
		{"j1", pb.PolicyDecision_POLICY_DECISION_ALLOW, ""},
		{"j2", pb.PolicyDecision_POLICY_DECISION_DENY, "no-x"},
		{"j3", pb.PolicyDecision_POLICY_DECISION_ALLOW, ""},
		{"j4", pb.PolicyDecision_POLICY_DECISION_THROTTLE, "slow"},
	}
	for i, w := range want {
		r := records[i]
		if r.GetJobId() != w.job || r.GetDecision() != w.decision || r.GetRuleId() != w.rule || r.GetTenant() != "t" ||
			r.GetPolicyVersion() != "v9" || r.GetDecidedBy() != "kernel-1" || r.GetDecidedMs() < before {
			t.Errorf("record %d = %v; want job %s, %v, rule %q", i, r, w.job, w.decision, w.rule)
		}
	}
	if r := records[3]; r.GetRetryAfterMs() <= 0 || r.GetReason() != "too fast" || r.GetTopic() != "slow" {
		t.Errorf("throttle record %v", r)
	}
	out := logs.String()
	for _, s := range []string{`msg=denied component=safety job_id=j2 tenant=t topic=x decision=deny rule_id=no-x reason="no x" policy_version=v9 trace_id=trace-1`,
		`msg=throttled component=safety job_id=j4`} {
		if !strings.Contains(out, s) {
			t.Errorf("log lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "job_id=j1") || strings.Contains(out, "job_id=j3") {
		t.Errorf("admissions logged at info:\n%s", out)
	}
}

// CheckTraced decides, audits and logs as Check does with the trace id in
// the context, at the time it is given: the audit record is stamped with
// that time, the log line carries that trace id.
func TestCheckTraced(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		records []*pb.SafetyVerdict
		logs    syncBuffer
	)
	k, err := safety.New(safety.Config{
		Policy: mustPolicy(t, `
version: v9
rules:
  - id: no-x
    match: {topics: [x]}
    decision: deny
    reason: no x
`),
		Logger:     slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		InstanceID: "kernel-1",
		Audit: func(r *pb.SafetyVerdict) {
			mu.Lock()
			records = append(records, r)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_123)
	for _, c := range []struct {
		req  *pb.JobRequest
		want safety.Decision
	}{{&pb.JobRequest{JobId: "j1", Tenant: "t", Topic: "ok"}, safety.Allow}, {&pb.JobRequest{JobId: "j2", Tenant: "t", Topic: "x"}, safety.Deny}} {
		traced, err := k.CheckTraced(context.Background(), c.req, "trace-9", at)
		if err != nil {
			t.Fatal(err)
		}
		checked, _ := k.Check(safety.WithTraceID(context.Background(), "trace-9"), c.req)
		if traced != checked || traced.Decision != c.want {
			t.Errorf("%s: CheckTraced = %+v, Check = %+v; want %v from both", c.req.JobId, traced, checked, c.want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(records) != 4 {
		t.Fatalf("%d audit records; want 4", len(records))
	}
	for _, i := range []int{0, 2} {
		if r := records[i]; r.GetDecidedMs() != at.UnixMilli() || r.GetDecidedBy() != "kernel-1" {
			t.Errorf("record %d = %v; want decided_ms %d by kernel-1", i, r, at.UnixMilli())
		}
	}
	if r := records[2]; r.GetJobId() != "j2" || r.GetDecision() != pb.PolicyDecision_POLICY_DECISION_DENY || r.GetRuleId() != "no-x" {
		t.Errorf("record of j2 = %v", r)
	}
	if out, want := logs.String(), `msg=denied component=safety job_id=j2 tenant=t topic=x decision=deny rule_id=no-x reason="no x" policy_version=v9 trace_id=trace-9`; strings.Count(out, want) != 2 {
		t.Errorf("log has %d lines %q, want 2 (CheckTraced's and Check's):\n%s", strings.Count(out, want), want, out)
	}
}

// TestCheckZeroAllocs: a check through field rules allocates nothing.
func TestCheckZeroAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	k := newKernel(t, benchPolicy)
	req := benchJob()
	allocs := testing.AllocsPerRun(1000, func() { _, _ = k.Check(context.Background(), req) })
	if allocs != 0 {
		t.Fatalf("Check allocates %.1f times per job; want 0", allocs)
	}
}

// TestConcurrentChecksAndReloads runs checks while the policy changes
// (for the race detector).
func TestConcurrentChecksAndReloads(t *testing.T) {
	t.Parallel()
	k := newKernel(t, benchPolicy)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if v := check(t, k, &pb.JobRequest{Topic: "sys.destroy", Tenant: "a"}); v.Decision != safety.Deny {
					t.Errorf("verdict %+v", v)
					return
				}
			}
		})
	}
	for i := range 50 {
		src := strings.Replace(benchPolicy, "version: bench", fmt.Sprintf("version: v%d", i), 1)
		if err := k.Install(mustPolicy(t, src)); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic writes path whole: a temporary file renamed over it.
func writeAtomic(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer collects a logger's output while the test reads it.
type syncBuffer = logging.Buffer
