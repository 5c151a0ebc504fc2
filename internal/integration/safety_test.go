package integration_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The safety kernel in the scheduler, against a real NATS server: denials
// with their rule, throttles with a retry-after, a broken policy edit that
// changes nothing, audit records on the bus, and a remote kernel that fails
// closed when it is gone.

const testPolicy = `version: "v1"
default: allow
rules:
  - id: forbidden-topic
    match: {topics: ["sys.destroy"]}
    decision: deny
    reason: forbidden topic
  - id: no-secrets
    match: {env_vars: ["*_SECRET"]}
    decision: deny
    reason: pass secrets by reference
  - id: noisy-rate
    match: {tenants: ["noisy"]}
    decision: throttle
    reason: tenant over its rate
    throttle: {rate: 1, per: 1h, burst: 2, by: tenant}
`

type safetyRig struct {
	url    string
	kernel *safety.Kernel
	sched  *sched
	client *client.Client
	policy string
}

func newSafetyRig(t *testing.T) *safetyRig {
	t.Helper()
	url := natstest.URL(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	b := systest.Connect(t, url, "auditor")
	auditor, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: b, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	auditor.Start()
	t.Cleanup(auditor.Stop)
	k, err := safety.New(safety.Config{PolicyFile: path, Logger: discard, Audit: auditor.Record, WatchInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = k.Watch(ctx, "") })
	t.Cleanup(func() { cancel(); wg.Wait() })
	s := startScheduler(t, url, "sched-safety", "memory", func(c *scheduler.Config) { c.Safety = k })
	startWorker(t, url, time.Second, nil)
	return &safetyRig{url: url, kernel: k, sched: s, client: systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "test-client"}), policy: path}
}

func (r *safetyRig) submit(t *testing.T, req *pb.JobRequest) (*pb.JobInfo, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return submitted(r.client.Submit(ctx, req, client.WithTraceID("trace-"+req.JobId)))
}

func TestDeniedJobEndsDeniedWithItsRuleAndNeverReachesAWorker(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t)
	seen, nc := record(t, r.url, "job.>")
	defer nc.Close()
	audit, anc := record(t, r.url, safety.SubjectAudit)
	defer anc.Close()

	job, err := r.submit(t, &pb.JobRequest{JobId: "leaky", Topic: "job.echo", EnvVars: map[string]string{"DB_SECRET": "x"}})
	var re *client.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, client.ErrDenied) || re.RuleID != "no-secrets" || re.Retryable {
		t.Fatalf("submit: %v; want a refusal by rule no-secrets", err)
	}
	if job.GetState() != lifecycle.Denied || job.GetRuleId() != "no-secrets" || job.GetPolicyVersion() != "v1" ||
		!strings.Contains(job.GetError(), "pass secrets by reference") {
		t.Errorf("denied job: %v", job)
	}
	if got := r.sched.waitState(t, "leaky", lifecycle.Denied); got.GetRuleId() != "no-secrets" {
		t.Errorf("recorded job: rule %q", got.GetRuleId())
	}
	// An allowed job next to it runs; the denied one was never published.
	if _, err := r.submit(t, &pb.JobRequest{JobId: "clean", Topic: "job.echo"}); err != nil {
		t.Fatal(err)
	}
	r.sched.waitState(t, "clean", lifecycle.Completed)
	for _, m := range seen.all() {
		if decode(t, m).GetJobRequest().GetJobId() == "leaky" {
			t.Errorf("the denied job reached %s", m.Subject)
		}
	}
	// Both decisions are in the audit trail, with rule and version.
	systest.Eventually(t, waitFor, "two audit records", func() bool { return len(audit.all()) >= 2 })
	decisions := map[string]*pb.SafetyVerdict{}
	for _, m := range audit.all() {
		v := decode(t, m).GetSafetyVerdict()
		decisions[v.GetJobId()] = v
	}
	if v := decisions["leaky"]; v.GetDecision() != pb.PolicyDecision_POLICY_DECISION_DENY || v.GetRuleId() != "no-secrets" ||
		v.GetPolicyVersion() != "v1" || v.GetTopic() != "job.echo" {
		t.Errorf("audit of the denial: %v", v)
	}
	if v := decisions["clean"]; v.GetDecision() != pb.PolicyDecision_POLICY_DECISION_ALLOW {
		t.Errorf("audit of the admission: %v", v)
	}
}

func TestThrottledTenantIsRefusedWithRetryAfterWhileAnotherProceeds(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t)
	for _, id := range []string{"noisy-1", "noisy-2"} { // the burst
		if _, err := r.submit(t, &pb.JobRequest{JobId: id, Topic: "job.echo", Tenant: "noisy"}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	_, err := r.submit(t, &pb.JobRequest{JobId: "noisy-3", Topic: "job.echo", Tenant: "noisy"})
	var re *client.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, client.ErrThrottled) || !re.Retryable || re.RetryAfter <= 0 || re.RuleID != "noisy-rate" {
		t.Fatalf("third job of the noisy tenant: %v; want a retryable refusal with retry-after by noisy-rate", err)
	}
	if j := r.sched.job(t, "noisy-3"); j != nil {
		t.Errorf("a throttled submission was recorded: %v", j)
	}
	for _, id := range []string{"quiet-1", "quiet-2", "quiet-3"} {
		if _, err := r.submit(t, &pb.JobRequest{JobId: id, Topic: "job.echo", Tenant: "quiet"}); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		r.sched.waitState(t, id, lifecycle.Completed)
	}
}

func TestBrokenPolicyEditLeavesTheOldPolicyInForce(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t)
	refused := r.kernel.Stats().Refused
	broken := strings.Replace(testPolicy, "decision: deny", "decision: maybe", 1)
	if err := os.WriteFile(r.policy, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the broken edit refused", func() bool { return r.kernel.Stats().Refused > refused })
	// Neither deny-all nor allow-all: the old rules still decide.
	job, err := r.submit(t, &pb.JobRequest{JobId: "still-denied", Topic: "job.echo", EnvVars: map[string]string{"X_SECRET": "1"}})
	if !errors.Is(err, client.ErrRefused) || job.GetRuleId() != "no-secrets" || job.GetPolicyVersion() != "v1" {
		t.Errorf("after a broken edit: %v, %v", job, err)
	}
	if _, err := r.submit(t, &pb.JobRequest{JobId: "still-allowed", Topic: "job.echo"}); err != nil {
		t.Fatal(err)
	}
	r.sched.waitState(t, "still-allowed", lifecycle.Completed)
	// A good edit is taken.
	fixed := strings.Replace(testPolicy, `version: "v1"`, `version: "v2"`, 1)
	if err := os.WriteFile(r.policy, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "v2 in force", func() bool { return r.kernel.Policy().Version == "v2" })
}

func TestRemoteKernelStoppedFailsClosed(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{scheduler.SafetyUnavailablePending, scheduler.SafetyUnavailableDeny} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			remote, err := safety.NewRemote(safety.RemoteConfig{Bus: systest.Connect(t, url, "remote"), Timeout: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			s := startScheduler(t, url, "sched-remote", "memory", func(c *scheduler.Config) {
				c.Safety, c.SafetyUnavailable = remote, mode
				c.NoWorkerRetry = 50 * time.Millisecond
			})
			startWorker(t, url, time.Second, nil)
			seen, nc := record(t, url, "job.>")
			defer nc.Close()
			cl := systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "test-client"})
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			job, err := submitted(cl.Submit(ctx, &pb.JobRequest{JobId: "while-down", Topic: "job.echo"}, client.WithTraceID("t")))
			switch mode {
			case scheduler.SafetyUnavailableDeny:
				if !errors.Is(err, client.ErrRefused) || job.GetState() != lifecycle.Denied || !strings.Contains(job.GetError(), "safety kernel unavailable") {
					t.Fatalf("deny mode: %v, %v", job, err)
				}
				return
			default:
				if err != nil || job.GetState() != lifecycle.Pending || !strings.Contains(job.GetPendingReason(), "safety kernel unavailable") {
					t.Fatalf("pending mode: %v, %v", job, err)
				}
			}
			// Checked again and again while the kernel is away: never dispatched.
			systest.Eventually(t, waitFor, "rechecks", func() bool { return remote.Stats().Unavailable >= 3 })
			if n := len(seen.all()); n != 0 || s.job(t, "while-down").GetState() != lifecycle.Pending {
				t.Fatalf("with no kernel the job was dispatched (%d messages) or left PENDING", n)
			}
			// The kernel comes (back): the job is admitted and runs.
			k, err := safety.New(safety.Config{Logger: discard})
			if err != nil {
				t.Fatal(err)
			}
			svc, err := safety.NewService(safety.ServiceConfig{Bus: systest.Connect(t, url, "safety-svc"), Kernel: k})
			if err != nil {
				t.Fatal(err)
			}
			sctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() { _ = svc.Run(sctx) })
			t.Cleanup(func() { stop(); wg.Wait() })
			if j := s.waitState(t, "while-down", lifecycle.Completed); j.GetPolicyVersion() == "" {
				t.Errorf("admitted without a policy version: %v", j)
			}
		})
	}
}
