package security

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// The safety kernel under the shipped permissions: every part connected as
// its own role (the scheduler with its kernel and audit records, the client
// submitting, an echo worker running the jobs, the cortex safety service),
// denials with their rule, throttles with a retry-after, a broken policy
// edit that changes nothing, and a remote kernel that fails closed while it
// is gone. No connection is refused anything by the server.
//
// The audit records are published by the scheduler (its role may publish
// sys.safety.audit) but no role of the shipped configuration may subscribe
// to sys.safety.audit, so the tests check that the auditor published them
// and that the server refused none, not that they arrived.

const safetyPolicy = `version: "v1"
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

// safetyRig is the system of one test under the shipped configuration.
type safetyRig struct {
	url     string
	logs    *logBuffer
	log     *slog.Logger
	sched   *bus.NatsBus       // the scheduler's connection
	kernel  *safety.Kernel     // a-c: the kernel in the scheduler
	auditor *safety.BusAuditor // a-c: its audit records, on the scheduler's connection
	policy  string
	client  *client.Client
	ctx     context.Context
}

// newSafetyRig starts a server with the shipped configuration, a scheduler
// engine connected as scheduler whose safety checker is made by checker
// (given the scheduler's connection), an echo worker as echo-1, and a
// client as client.
func newSafetyRig(t *testing.T, checker func(r *safetyRig) scheduler.SafetyChecker, configure func(*scheduler.Config)) *safetyRig {
	t.Helper()
	r := &safetyRig{url: startServer(t).ClientURL(), logs: captureLogs(t)}
	r.log = r.logs.logger()
	r.sched = connectAs(t, r.url, "scheduler", r.log)
	ctx := context.Background()
	store, dead, _, err := system.OpenStore(ctx, r.sched, config.StoreJetStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := scheduler.Config{
		Bus: r.sched, Safety: checker(r), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), Store: store, DeadLetters: dead, Logger: r.log,
		ID: "sched-" + strings.ReplaceAll(t.Name(), "/", "-"), RequireWorkerIdentity: true,
		NoWorkerRetry: 50 * time.Millisecond,
	}
	if configure != nil {
		configure(&cfg)
	}
	e, err := scheduler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(ctx) })
	runWorker(t, r.url, "echo-1", echo.WorkTime{}, r.log)
	r.client = newClient(t, r.url, "client", r.log)
	var cancel context.CancelFunc
	r.ctx, cancel = context.WithTimeout(context.Background(), 2*waitFor)
	t.Cleanup(cancel)
	return r
}

// inProcessKernel is the scheduler's own kernel with safetyPolicy in a file
// it watches, its decisions audited on sys.safety.audit over the
// scheduler's connection.
func inProcessKernel(t *testing.T) func(r *safetyRig) scheduler.SafetyChecker {
	return func(r *safetyRig) scheduler.SafetyChecker {
		r.policy = filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(r.policy, []byte(safetyPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		auditor, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: r.sched, SenderID: "scheduler", Logger: r.log})
		if err != nil {
			t.Fatal(err)
		}
		auditor.Start()
		t.Cleanup(auditor.Stop)
		k, err := safety.New(safety.Config{PolicyFile: r.policy, Logger: r.log, Audit: auditor.Record, InstanceID: "scheduler", WatchInterval: 20 * time.Millisecond})
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

// watchJobEcho subscribes as echo-2, a worker of the same topic, to job.echo:
// every dispatch of a job.echo job reaches it.
func watchJobEcho(t *testing.T, url string) *jobWitness {
	t.Helper()
	w := &jobWitness{conn: raw(t, url, "echo-2")}
	if _, err := w.conn.Subscribe("job.echo", func(m *nats.Msg) {
		p, err := bus.Decode(m.Data, 0)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.ids = append(w.ids, p.GetJobRequest().GetJobId())
		w.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := w.conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case err := <-w.conn.errs:
			t.Errorf("the witness (echo-2) was refused: %v", err)
		default:
		}
	})
	return w
}

type jobWitness struct {
	conn *rawConn
	mu   sync.Mutex
	ids  []string
}

func (w *jobWitness) saw(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.ids {
		if s == id {
			return true
		}
	}
	return false
}

// noRefusals flushes the scheduler's connection, so that the server's
// verdict on everything it published (audit records included) has reached
// it, and fails the test if any part was refused anything.
func (r *safetyRig) noRefusals(t *testing.T) {
	t.Helper()
	if err := r.sched.Flush(r.ctx); err != nil {
		t.Fatal(err)
	}
	r.logs.noViolations(t)
}

// audited waits for the auditor to have published n records without a failure.
func (r *safetyRig) audited(t *testing.T, n uint64) {
	t.Helper()
	systest.Eventually(t, waitFor, "audit records published", func() bool { return r.auditor.Stats().Published >= n })
	if st := r.auditor.Stats(); st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("audit: %+v", st)
	}
}

// (a) A denied job ends DENIED with its rule id, visible to the client,
// and never reaches a worker subject; its decision is audited.
func TestDeniedJobUnderShippedConfig(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t, inProcessKernel(t), nil)
	seen := watchJobEcho(t, r.url)
	// The auditor role captures the audit records.
	var (
		auditMu sync.Mutex
		audit   = map[string]*pb.SafetyVerdict{}
	)
	drain, err := connectAs(t, r.url, "auditor", r.log).Subscribe(safety.SubjectAudit, "", func(p *pb.BusPacket) {
		if v := p.GetSafetyVerdict(); v != nil {
			auditMu.Lock()
			audit[v.GetJobId()] = v
			auditMu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drain() })

	job, err := submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "leaky", Topic: "job.echo", EnvVars: map[string]string{"DB_SECRET": "x"}}))
	var re *client.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, client.ErrDenied) || re.RuleID != "no-secrets" || re.Retryable {
		t.Fatalf("submit: %v; want a refusal by rule no-secrets", err)
	}
	if job.GetState() != lifecycle.Denied || job.GetRuleId() != "no-secrets" || job.GetPolicyVersion() != "v1" ||
		!strings.Contains(job.GetError(), "pass secrets by reference") {
		t.Errorf("denied job: %v", job)
	}
	// As cortex job get shows it.
	got, err := r.client.Get(r.ctx, "leaky")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetState() != lifecycle.Denied || got.GetRuleId() != "no-secrets" || got.GetPolicyVersion() != "v1" {
		t.Errorf("job get: %s by rule %q (policy %q), want DENIED by no-secrets (v1)",
			lifecycle.Name(got.GetState()), got.GetRuleId(), got.GetPolicyVersion())
	}
	// The document's stub rule, on a topic no worker takes.
	denied(t, r.ctx, r.client, "destroy")

	// An allowed job next to them runs on the worker; the witness of the
	// worker subject saw it, and not the denied one.
	submit(t, r.ctx, r.client, &pb.JobRequest{JobId: "clean", Topic: "job.echo"})
	if j := watch(t, r.ctx, r.client, "clean", terminal); j.GetState() != lifecycle.Completed || j.GetWorkerId() != "echo-1" {
		t.Fatalf("clean job ended %s on %q, want COMPLETED on echo-1", lifecycle.Name(j.GetState()), j.GetWorkerId())
	}
	systest.Eventually(t, waitFor, "the witness to see the clean job", func() bool { return seen.saw("clean") })
	if seen.saw("leaky") {
		t.Error("the denied job reached job.echo")
	}
	if st := r.kernel.Stats(); st.Denied != 2 || st.Allowed != 1 {
		t.Errorf("kernel: %d denied, %d allowed; want 2 and 1", st.Denied, st.Allowed)
	}
	// Three decisions audited by the scheduler, none refused by the server,
	// and captured by the auditor.
	r.audited(t, 3)
	systest.Eventually(t, waitFor, "the auditor to capture the denial", func() bool {
		auditMu.Lock()
		defer auditMu.Unlock()
		v := audit["leaky"]
		return v.GetDecision() == pb.PolicyDecision_POLICY_DECISION_DENY && v.GetRuleId() == "no-secrets" && v.GetPolicyVersion() == "v1"
	})
	r.noRefusals(t)
}

// (b) A throttled tenant is refused with a retry-after while another
// proceeds.
func TestThrottledTenantUnderShippedConfig(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t, inProcessKernel(t), nil)
	for _, id := range []string{"noisy-1", "noisy-2"} { // the burst
		submit(t, r.ctx, r.client, &pb.JobRequest{JobId: id, Topic: "job.echo", Tenant: "noisy"})
	}
	_, err := r.client.Submit(r.ctx, &pb.JobRequest{JobId: "noisy-3", Topic: "job.echo", Tenant: "noisy"})
	var re *client.RefusedError
	if !errors.As(err, &re) || !errors.Is(err, client.ErrThrottled) || !re.Retryable || re.RetryAfter <= 0 || re.RuleID != "noisy-rate" {
		t.Fatalf("third job of the noisy tenant: %v; want a retryable refusal with a retry-after by noisy-rate", err)
	}
	if j, err := r.client.Get(r.ctx, "noisy-3"); err == nil {
		t.Errorf("a throttled submission was recorded: %v", j)
	}
	for _, id := range []string{"quiet-1", "quiet-2", "quiet-3"} {
		submit(t, r.ctx, r.client, &pb.JobRequest{JobId: id, Topic: "job.echo", Tenant: "quiet"})
		if j := watch(t, r.ctx, r.client, id, terminal); j.GetState() != lifecycle.Completed {
			t.Errorf("job %s of the quiet tenant ended %s, want COMPLETED", id, lifecycle.Name(j.GetState()))
		}
	}
	for _, id := range []string{"noisy-1", "noisy-2"} {
		if j := watch(t, r.ctx, r.client, id, terminal); j.GetState() != lifecycle.Completed {
			t.Errorf("job %s within the burst ended %s, want COMPLETED", id, lifecycle.Name(j.GetState()))
		}
	}
	if st := r.kernel.Stats(); st.Throttled != 1 {
		t.Errorf("kernel: %d throttled, want 1", st.Throttled)
	}
	r.audited(t, 6)
	r.noRefusals(t)
}

// (c) A broken policy edit is refused and the old policy stays in force:
// neither deny-all nor allow-all. A good edit is then taken.
func TestBrokenPolicyEditUnderShippedConfig(t *testing.T) {
	t.Parallel()
	r := newSafetyRig(t, inProcessKernel(t), nil)
	refused := r.kernel.Stats().Refused
	broken := strings.Replace(safetyPolicy, "decision: deny", "decision: maybe", 1)
	if err := os.WriteFile(r.policy, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the broken edit to be refused", func() bool { return r.kernel.Stats().Refused > refused })
	// The kernel counts the refusal, then logs it.
	systest.Eventually(t, waitFor, "the refused edit to be logged", func() bool { return strings.Contains(r.logs.String(), "policy refused") })

	job, err := submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "still-denied", Topic: "job.echo", EnvVars: map[string]string{"X_SECRET": "1"}}))
	if !errors.Is(err, client.ErrRefused) || job.GetRuleId() != "no-secrets" || job.GetPolicyVersion() != "v1" {
		t.Errorf("after a broken edit: %v, %v; want DENIED by no-secrets of v1", job, err)
	}
	submit(t, r.ctx, r.client, &pb.JobRequest{JobId: "still-allowed", Topic: "job.echo"})
	if j := watch(t, r.ctx, r.client, "still-allowed", terminal); j.GetState() != lifecycle.Completed || j.GetPolicyVersion() != "v1" {
		t.Errorf("after a broken edit the allowed job ended %s under %q, want COMPLETED under v1",
			lifecycle.Name(j.GetState()), j.GetPolicyVersion())
	}

	fixed := strings.Replace(safetyPolicy, `version: "v1"`, `version: "v2"`, 1)
	if err := os.WriteFile(r.policy, []byte(fixed), 0o644); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "v2 in force", func() bool { return r.kernel.Policy().Version == "v2" })
	job, err = submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "denied-by-v2", Topic: "job.echo", EnvVars: map[string]string{"X_SECRET": "1"}}))
	if !errors.Is(err, client.ErrRefused) || job.GetRuleId() != "no-secrets" || job.GetPolicyVersion() != "v2" {
		t.Errorf("after a good edit: %v, %v; want DENIED by no-secrets of v2", job, err)
	}
	r.audited(t, 3)
	r.noRefusals(t)
}

// (d) With the remote kernel (cortex safety, as user safety) absent, the
// scheduler fails closed: the job stays PENDING, checked again and again
// and never dispatched, or is DENIED, as configured. Once the service
// starts, the pending job is admitted and completes, and new jobs run.
func TestRemoteKernelStoppedUnderShippedConfig(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{scheduler.SafetyUnavailablePending, scheduler.SafetyUnavailableDeny} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			var remote *safety.Remote
			r := newSafetyRig(t, func(r *safetyRig) scheduler.SafetyChecker {
				var err error
				remote, err = safety.NewRemote(safety.RemoteConfig{Bus: r.sched, Timeout: 2 * time.Second, SenderID: "scheduler"})
				if err != nil {
					t.Fatal(err)
				}
				return remote
			}, func(c *scheduler.Config) { c.SafetyUnavailable = mode })
			seen := watchJobEcho(t, r.url)

			job, err := submitted(r.client.Submit(r.ctx, &pb.JobRequest{JobId: "while-down", Topic: "job.echo"}))
			switch mode {
			case scheduler.SafetyUnavailableDeny:
				if !errors.Is(err, client.ErrRefused) || job.GetState() != lifecycle.Denied ||
					!strings.Contains(job.GetError(), scheduler.SafetyUnavailableReason) {
					t.Fatalf("deny mode: %v, %v; want DENIED: %s", job, err, scheduler.SafetyUnavailableReason)
				}
			default:
				if err != nil || job.GetState() != lifecycle.Pending || !strings.Contains(job.GetPendingReason(), scheduler.SafetyUnavailableReason) {
					t.Fatalf("pending mode: %v, %v; want PENDING: %s", job, err, scheduler.SafetyUnavailableReason)
				}
				// Checked again and again while the kernel is away: never dispatched.
				systest.Eventually(t, waitFor, "rechecks", func() bool { return remote.Stats().Unavailable >= 3 })
				j, err := r.client.Get(r.ctx, "while-down")
				if err != nil {
					t.Fatal(err)
				}
				if j.GetState() != lifecycle.Pending || !strings.Contains(j.GetPendingReason(), scheduler.SafetyUnavailableReason) {
					t.Fatalf("with no kernel the job is %s (%q), want PENDING", lifecycle.Name(j.GetState()), j.GetPendingReason())
				}
			}
			if seen.saw("while-down") {
				t.Fatal("with no kernel the job was dispatched")
			}

			// The service comes, as user safety: the pending job is
			// admitted and runs; the denied one stays denied.
			runSafetyService(t, r.url, r.log)
			final := watch(t, r.ctx, r.client, "while-down", terminal)
			switch mode {
			case scheduler.SafetyUnavailableDeny:
				if final.GetState() != lifecycle.Denied {
					t.Errorf("the job denied while the kernel was away is %s", lifecycle.Name(final.GetState()))
				}
			default:
				if final.GetState() != lifecycle.Completed || final.GetWorkerId() != "echo-1" || final.GetPolicyVersion() == "" {
					t.Errorf("the pending job ended %s on %q under policy %q, want COMPLETED on echo-1 under a version",
						lifecycle.Name(final.GetState()), final.GetWorkerId(), final.GetPolicyVersion())
				}
			}
			submit(t, r.ctx, r.client, &pb.JobRequest{JobId: "after", Topic: "job.echo"})
			if j := watch(t, r.ctx, r.client, "after", terminal); j.GetState() != lifecycle.Completed {
				t.Errorf("a job with the kernel back ended %s, want COMPLETED", lifecycle.Name(j.GetState()))
			}
			denied(t, r.ctx, r.client, "destroy")
			r.noRefusals(t)
		})
	}
}

// runSafetyService runs cortex safety (safety.RunService) as user safety,
// with the shipped default policy, until the test ends.
func runSafetyService(t *testing.T, url string, log *slog.Logger) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- safety.RunService(ctx, safety.ServiceOptions{
			NatsURL: url, NatsOptions: natsOptions(t, creds("safety")), ID: "safety-" + strings.ReplaceAll(t.Name(), "/", "-"),
			Logger: log, Started: func() { close(started) },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("safety service: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("safety service: %v", err)
	case <-time.After(waitFor):
		t.Fatal("the safety service did not start")
	}
}
