package security

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// celPolicy denies credentials in env values with a when expression: its
// cost grows with the bytes of env values the job brings.
const celPolicy = `version: "cel-1"
default: allow
rules:
  - id: no-credentials
    when: job.env.exists(k, ["password", "secret", "token", "apikey"].exists(w, job.env[k].lowerAscii().contains(w)))
    decision: deny
    reason: no credentials in env_vars
  - id: critical-for-ops
    when: job.priority == "CRITICAL" && job.tenant != "ops"
    decision: deny
    reason: only ops submits CRITICAL jobs
`

// celKernel is the scheduler's own kernel with celPolicy.
func celKernel(t *testing.T) func(r *safetyRig) scheduler.SafetyChecker {
	return func(r *safetyRig) scheduler.SafetyChecker {
		r.policy = filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(r.policy, []byte(celPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		auditor, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: r.sched, SenderID: "scheduler", Logger: r.log})
		if err != nil {
			t.Fatal(err)
		}
		auditor.Start()
		t.Cleanup(auditor.Stop)
		k, err := safety.New(safety.Config{PolicyFile: r.policy, Logger: r.log, Audit: auditor.Record, InstanceID: "scheduler"})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() { _ = k.Watch(ctx, "") })
		t.Cleanup(func() { cancel(); wg.Wait() })
		r.kernel, r.auditor = k, auditor
		return k
	}
}

// The fail-open CEL attack, as a client under the shipped permissions: a
// job whose own env values push the deny rule's when expression over the
// cost limit used to be taken for "no match" and run. It ends DENIED by
// that rule, with a reason saying its evaluation failed, and never reaches
// a worker. A job with a priority this version does not know is denied by
// the rule that reads the priority, not taken for UNSPECIFIED. Clean jobs
// still run.
func TestCELDenyRuleFailsClosedUnderShippedConfig(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t, celKernel(t), nil)
	seen := watchJobEcho(t, r.url)

	// 64 values of 4 KiB: well within what admission takes, and over the
	// expression's cost limit (about 1.26 million, the limit 1 million).
	env := make(map[string]string, 64)
	for i := range 64 {
		env[fmt.Sprintf("V%02d", i)] = strings.Repeat("x", 4096)
	}
	job, err := submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "bulky", Topic: "job.echo", EnvVars: env}))
	var re *client.RefusedError
	if !errors.As(err, &re) || re.RuleID != "no-credentials" || re.Retryable {
		t.Fatalf("the bulky job: %v; want a refusal by rule no-credentials", err)
	}
	if job.GetState() != lifecycle.Denied || job.GetRuleId() != "no-credentials" || job.GetPolicyVersion() != "cel-1" ||
		!strings.Contains(job.GetError(), "could not be evaluated (cost limit exceeded") {
		t.Errorf("the bulky job: %s by %q: %q; want DENIED by no-credentials, evaluation failed",
			lifecycle.Name(job.GetState()), job.GetRuleId(), job.GetError())
	}
	if got, err := r.client.Get(r.ctx, "bulky"); err != nil || got.GetState() != lifecycle.Denied || got.GetRuleId() != "no-credentials" {
		t.Errorf("job get bulky: %v, %v; want DENIED by no-credentials", got, err)
	}

	odd, err := submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "odd-priority", Topic: "job.echo", Priority: pb.JobPriority(99)}))
	if err == nil {
		t.Fatalf("a job with priority 99 was admitted: %v", odd)
	}
	// Refused at admission (an enum this version does not know) or denied
	// by the rule reading it: either way it does not run.
	if errors.As(err, &re) && re.RuleID != "" && (re.RuleID != "critical-for-ops" || !strings.Contains(odd.GetError(), "could not be evaluated")) {
		t.Errorf("priority 99: %v; want denied by critical-for-ops, evaluation failed", err)
	}

	submit(t, r.ctx, r.client, &pb.JobRequest{JobId: "clean", Topic: "job.echo", EnvVars: map[string]string{"MODE": "fast"}})
	if j := watch(t, r.ctx, r.client, "clean", terminal); j.GetState() != lifecycle.Completed {
		t.Fatalf("the clean job ended %s, want COMPLETED", lifecycle.Name(j.GetState()))
	}
	systest.Eventually(t, waitFor, "the witness to see the clean job", func() bool { return seen.saw("clean") })
	if seen.saw("bulky") || seen.saw("odd-priority") {
		t.Error("a denied job reached job.echo")
	}
	if st := r.kernel.Stats(); st.OnErrorVerdicts < 1 || st.CELErrors < 1 {
		t.Errorf("kernel: %d CEL errors, %d on_error verdicts; want at least 1 each", st.CELErrors, st.OnErrorVerdicts)
	}
	systest.Eventually(t, waitFor, "the failure to be logged", func() bool {
		return strings.Contains(r.logs.String(), "failed to evaluate") && strings.Contains(r.logs.String(), "rule_id=no-credentials")
	})
	r.noRefusals(t)
}
