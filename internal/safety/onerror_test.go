package safety_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// bulkyEnv is the environment of a job built to push a when expression over
// the cost limit: n variables of size bytes each.
func bulkyEnv(n, size int) map[string]string {
	env := make(map[string]string, n)
	for i := range n {
		env[fmt.Sprintf("V%03d", i)] = strings.Repeat("a", size)
	}
	return env
}

// The attack of a deny rule that failed open: a job whose own content (many
// large env values) pushes the rule's when expression over the cost limit
// used to be taken for "no match", so it ran. It is denied, by that rule,
// with a reason saying its evaluation failed; the failure is counted and
// logged.
func TestCELCostLimitDeniesByDefault(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	k, err := safety.New(safety.Config{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Policy: mustPolicy(t, `
version: v1
rules:
  - id: no-passwords
    when: job.env.exists(k, job.env[k].lowerAscii().contains("password"))
    decision: deny
    reason: no passwords in env_vars
`)})
	if err != nil {
		t.Fatal(err)
	}
	attack := &pb.JobRequest{JobId: "bulky", Topic: "job.echo", EnvVars: bulkyEnv(256, 4096)}
	v := check(t, k, attack)
	if v.Decision != safety.Deny || v.RuleID != "no-passwords" || v.PolicyVersion != "v1" {
		t.Fatalf("the bulky job: %+v; want denied by no-passwords", v)
	}
	for _, want := range []string{"no passwords in env_vars", "could not be evaluated", "cost limit exceeded", "on_error: deny"} {
		if !strings.Contains(v.Reason, want) {
			t.Errorf("reason %q does not say %q", v.Reason, want)
		}
	}
	// The rule still works for jobs it can evaluate.
	if v := check(t, k, &pb.JobRequest{Topic: "job.echo", EnvVars: map[string]string{"X": "my PASSWORD"}}); v.Decision != safety.Deny || v.RuleID != "no-passwords" || strings.Contains(v.Reason, "evaluated") {
		t.Errorf("a job with a password: %+v; want the rule's plain deny", v)
	}
	if v := check(t, k, &pb.JobRequest{Topic: "job.echo", EnvVars: bulkyEnv(4, 100)}); v.Decision != safety.Allow {
		t.Errorf("a clean job: %+v; want allow", v)
	}
	if s := k.Stats(); s.CELErrors != 1 || s.OnErrorVerdicts != 1 || s.Denied != 2 {
		t.Errorf("stats: %d CEL errors, %d on_error verdicts, %d denied; want 1, 1, 2", s.CELErrors, s.OnErrorVerdicts, s.Denied)
	}
	if out := logs.String(); !strings.Contains(out, "failed to evaluate") || !strings.Contains(out, "rule_id=no-passwords") || !strings.Contains(out, "on_error=deny") {
		t.Errorf("log:\n%s", out)
	}
}

// What a rule whose when fails decides, by its on_error and, without one,
// by its decision: deny rules deny, throttle rules refuse with a retry-after
// of one token, allow rules are skipped (the rules after them and the
// default decide); an explicit on_error overrides.
func TestOnError(t *testing.T) {
	t.Parallel()
	// job.env["K"] fails for a job without K.
	const fails = `job.env["K"] == "v"`
	for _, tc := range []struct {
		name     string
		policy   string
		decision safety.Decision
		rule     string
		retry    time.Duration
	}{
		{"deny rule: deny", `
default: allow
rules:
  - {id: r, when: '` + fails + `', decision: deny, reason: no}`, safety.Deny, "r", 0},
		{"throttle rule: throttle", `
default: allow
rules:
  - {id: r, when: '` + fails + `', decision: throttle, reason: slow, throttle: {rate: 4, per: 1s}}`, safety.Throttle, "r", 250 * time.Millisecond},
		{"allow rule: skipped, the default decides", `
default: deny
rules:
  - {id: r, when: '` + fails + `', decision: allow}`, safety.Deny, "", 0},
		{"allow rule: skipped, a later rule decides", `
default: allow
rules:
  - {id: r, when: '` + fails + `', decision: allow}
  - {id: later, match: {topics: [job.echo]}, decision: deny, reason: later}`, safety.Deny, "later", 0},
		{"deny rule with on_error skip", `
default: allow
rules:
  - {id: r, when: '` + fails + `', on_error: skip, decision: deny, reason: no}`, safety.Allow, "", 0},
		{"allow rule with on_error deny", `
default: allow
rules:
  - {id: r, when: '` + fails + `', on_error: deny, decision: allow}`, safety.Deny, "r", 0},
		{"throttle rule with on_error deny", `
default: allow
rules:
  - {id: r, when: '` + fails + `', on_error: deny, decision: throttle, reason: slow, throttle: {rate: 1, per: 1s}}`, safety.Deny, "r", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k := newKernel(t, "version: v1\n"+tc.policy)
			v := check(t, k, &pb.JobRequest{Topic: "job.echo"})
			if v.Decision != tc.decision || v.RuleID != tc.rule || v.RetryAfter != tc.retry {
				t.Fatalf("verdict %+v; want %s by %q, retry-after %s", v, tc.decision, tc.rule, tc.retry)
			}
			if tc.rule == "r" && !strings.Contains(v.Reason, "could not be evaluated (evaluation error") {
				t.Errorf("reason %q does not say the evaluation failed", v.Reason)
			}
			if s := k.Stats(); s.CELErrors != 1 {
				t.Errorf("CELErrors = %d; want 1", s.CELErrors)
			}
			// A job the expression can evaluate is decided as before.
			if v := check(t, k, &pb.JobRequest{Topic: "job.other", EnvVars: map[string]string{"K": "other"}}); v.Decision == safety.Deny && v.RuleID == "r" {
				t.Errorf("a job the rule does not match: %+v", v)
			}
		})
	}
}

// A priority this version does not know (99) reaches CEL as an error, never
// as "UNSPECIFIED" or another name: a deny rule reading job.priority denies
// it (on_error deny), an allow rule reading it grants nothing, and rules
// that do not read it decide as for any job.
func TestOutOfRangePriorityIsAnEvaluationError(t *testing.T) {
	t.Parallel()
	k := newKernel(t, `
version: v1
default: deny
rules:
  - id: only-critical-for-ops
    when: job.priority == "CRITICAL" && job.tenant != "ops"
    decision: deny
    reason: only ops submits CRITICAL jobs
  - id: batch-allowed
    when: job.priority == "BATCH" || job.priority == "UNSPECIFIED"
    decision: allow
  - id: echo-allowed
    when: job.topic == "job.echo"
    decision: allow
`)
	odd := pb.JobPriority(99)
	v := check(t, k, &pb.JobRequest{Topic: "job.train", Tenant: "acme", Priority: odd})
	if v.Decision != safety.Deny || v.RuleID != "only-critical-for-ops" || !strings.Contains(v.Reason, "a value this version does not know") {
		t.Fatalf("priority 99 against a deny rule on priority: %+v; want denied by only-critical-for-ops, evaluation failed", v)
	}
	// With the deny rule skipped on error, the allow rule on priority grants
	// nothing either: a rule that does not read the priority decides.
	k2 := newKernel(t, `
version: v1
default: deny
rules:
  - id: batch-allowed
    when: job.priority == "BATCH" || job.priority == "UNSPECIFIED"
    decision: allow
  - id: echo-allowed
    when: job.topic == "job.echo"
    decision: allow
`)
	if v := check(t, k2, &pb.JobRequest{Topic: "job.train", Priority: odd}); v.Decision != safety.Deny || v.RuleID != "" {
		t.Errorf("priority 99, topic job.train: %+v; want the default deny (the allow rule on priority is skipped)", v)
	}
	if v := check(t, k2, &pb.JobRequest{Topic: "job.echo", Priority: odd}); v.Decision != safety.Allow || v.RuleID != "echo-allowed" {
		t.Errorf("priority 99, topic job.echo: %+v; want allowed by echo-allowed (it does not read the priority)", v)
	}
	for _, p := range []pb.JobPriority{pb.JobPriority_JOB_PRIORITY_UNSPECIFIED, pb.JobPriority_JOB_PRIORITY_BATCH} {
		if v := check(t, k2, &pb.JobRequest{Topic: "job.train", Priority: p}); v.Decision != safety.Allow || v.RuleID != "batch-allowed" {
			t.Errorf("priority %v: %+v; want allowed by batch-allowed", p, v)
		}
	}
	if v := check(t, k, &pb.JobRequest{Topic: "job.train", Tenant: "acme", Priority: pb.JobPriority(-1)}); v.Decision != safety.Deny || v.RuleID != "only-critical-for-ops" {
		t.Errorf("priority -1: %+v; want denied by only-critical-for-ops", v)
	}
}
