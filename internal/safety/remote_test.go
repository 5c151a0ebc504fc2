package safety_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// flush waits until the server has the subscriptions of b.
func flush(b *bus.NatsBus) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return b.Flush(ctx)
}

func newRemote(t testing.TB, b *bus.NatsBus, timeout time.Duration) *safety.Remote {
	t.Helper()
	r, err := safety.NewRemote(safety.RemoteConfig{Bus: b, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// startService runs a safety service with the kernel on its own connection
// until the returned stop is called.
func startService(t testing.TB, url string, k *safety.Kernel) (stop func()) {
	t.Helper()
	started := make(chan struct{})
	svc, err := safety.NewService(safety.ServiceConfig{Bus: systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), Kernel: k, Started: func() { close(started) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("service: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("service Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestRemoteRoundtrip: a Remote gets the service's kernel's verdicts, with
// rule, reason, version and retry-after.
func TestRemoteRoundtrip(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	k := newKernel(t, `
version: remote-1
rules:
  - id: no-destroy
    match: {topics: [sys.destroy]}
    decision: deny
    reason: forbidden topic
  - id: slow
    match: {tenants: [greedy]}
    decision: throttle
    reason: greedy tenant
    throttle: {rate: 1, per: 1h}
`)
	startService(t, url, k)
	r := newRemote(t, systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), 5*time.Second)
	ctx := context.Background()

	v, err := r.Check(ctx, &pb.JobRequest{JobId: "j1", Topic: "sys.destroy"})
	if err != nil || v.Decision != safety.Deny || v.RuleID != "no-destroy" || v.Reason != "forbidden topic" || v.PolicyVersion != "remote-1" {
		t.Fatalf("sys.destroy: %+v, %v", v, err)
	}
	if v, err := r.Check(ctx, &pb.JobRequest{JobId: "j2", Topic: "job.echo", Tenant: "greedy"}); err != nil || v.Decision != safety.Allow {
		t.Fatalf("greedy, first: %+v, %v", v, err)
	}
	v, err = r.Check(ctx, &pb.JobRequest{JobId: "j3", Topic: "job.echo", Tenant: "greedy"})
	if err != nil || v.Decision != safety.Throttle || v.RuleID != "slow" || v.RetryAfter <= 0 || v.RetryAfter > time.Hour {
		t.Fatalf("greedy, second: %+v, %v; want throttle with a retry-after", v, err)
	}
	if s := k.Stats(); s.Checks != 3 {
		t.Fatalf("the service's kernel made %d checks; want 3", s.Checks)
	}
}

// TestRemoteUnavailable: with no service, or a service stopped, a check
// fails with ErrUnavailable within the timeout; never with a verdict.
func TestRemoteUnavailable(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	stop := startService(t, url, newKernel(t, "version: v1\n"))
	r := newRemote(t, systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), 200*time.Millisecond)
	if _, err := r.Check(context.Background(), &pb.JobRequest{Topic: "x"}); err != nil {
		t.Fatalf("with the service: %v", err)
	}
	stop()
	v, err := r.Check(context.Background(), &pb.JobRequest{Topic: "x"})
	if !errors.Is(err, safety.ErrUnavailable) || !errors.Is(err, wire.ErrNoResponders) || v != (safety.Verdict{}) {
		t.Fatalf("with the service stopped: %+v, %v; want ErrUnavailable (no responders)", v, err)
	}

	// A service that is subscribed but does not answer: the timeout ends it.
	silent := systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second})
	drain, err := silent.Subscribe(safety.SubjectCheck, safety.QueueGroup, func(*pb.BusPacket) {})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	if err := flush(silent); err != nil {
		t.Fatal(err)
	}
	_, err = r.Check(context.Background(), &pb.JobRequest{Topic: "x"})
	if !errors.Is(err, safety.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with a silent service: %v; want ErrUnavailable (deadline)", err)
	}
	if s := r.Stats(); s.Checks != 3 || s.Unavailable != 2 {
		t.Fatalf("remote stats %+v", s)
	}
}

// TestServiceAnswersBadRequests: a check without a job_request gets a
// verdict without a decision, which a Remote reads as ErrUnavailable.
func TestServiceAnswersBadRequests(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	startService(t, url, newKernel(t, "version: v1\n"))
	b := systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second})
	p := wire.NewPacket("t", "test")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "x"}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	answer, err := b.Request(ctx, safety.SubjectCheck, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := safety.VerdictFromAnswer(answer); !errors.Is(err, safety.ErrUnavailable) {
		t.Fatalf("answer %v: %v; want ErrUnavailable", answer, err)
	}
	if answer.GetSafetyVerdict().GetReason() == "" {
		t.Fatalf("answer %v says nothing about what was wrong", answer)
	}
}

// TestAuditOnBus: a BusAuditor publishes every decision on sys.safety.audit.
func TestAuditOnBus(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	listener := systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second})
	var (
		mu  sync.Mutex
		got []*pb.SafetyVerdict
	)
	drain, err := listener.Subscribe(safety.SubjectAudit, "", func(p *pb.BusPacket) {
		mu.Lock()
		got = append(got, p.GetSafetyVerdict())
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	if err := flush(listener); err != nil {
		t.Fatal(err)
	}

	a, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	a.Start()
	k, err := safety.New(safety.Config{Policy: safety.DefaultPolicy(), Logger: quiet, Audit: a.Record, InstanceID: "sched-1"})
	if err != nil {
		t.Fatal(err)
	}
	check(t, k, &pb.JobRequest{JobId: "a1", Topic: "job.echo", Tenant: "acme"})
	check(t, k, &pb.JobRequest{JobId: "a2", Topic: "sys.destroy", Tenant: "acme"})
	a.Stop() // publishes what is buffered

	systest.Eventually(t, waitFor, "2 audit records", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
	defer mu.Unlock()
	byJob := map[string]*pb.SafetyVerdict{}
	for _, r := range got {
		byJob[r.GetJobId()] = r
	}
	if r := byJob["a1"]; r.GetDecision() != pb.PolicyDecision_POLICY_DECISION_ALLOW || r.GetTopic() != "job.echo" || r.GetTenant() != "acme" || r.GetDecidedBy() != "sched-1" || r.GetDecidedMs() == 0 || r.GetPolicyVersion() == "" {
		t.Errorf("a1: %v", r)
	}
	if r := byJob["a2"]; r.GetDecision() != pb.PolicyDecision_POLICY_DECISION_DENY || r.GetRuleId() != "forbidden-topic" || r.GetReason() != "forbidden topic" {
		t.Errorf("a2: %v", r)
	}
	if s := a.Stats(); s.Published != 2 || s.Dropped != 0 {
		t.Errorf("auditor stats %+v", s)
	}
}

// TestAuditorDropsWhenFull: Record never blocks; what does not fit is
// counted.
func TestAuditorDropsWhenFull(t *testing.T) {
	t.Parallel()
	a, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: discardPublisher{}, Buffer: 2, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		a.Record(&pb.SafetyVerdict{})
	}
	if s := a.Stats(); s.Dropped != 3 {
		t.Fatalf("stats %+v; want 3 dropped", s)
	}
	a.Start()
	a.Stop()
	if s := a.Stats(); s.Published != 2 {
		t.Fatalf("stats %+v; want the 2 buffered published at Stop", s)
	}
}

// TestRunService: the process of cortex safety: checks answered, audit
// published, policy reloaded when its file changes, a broken edit refused,
// and a clean stop.
func TestRunService(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, "version: s1\nrules:\n  - id: no-a\n    match: {topics: [a]}\n    decision: deny\n    reason: no a\n")

	audit := systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second})
	records := make(chan *pb.SafetyVerdict, 16)
	drain, err := audit.Subscribe(safety.SubjectAudit, "", func(p *pb.BusPacket) { records <- p.GetSafetyVerdict() })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = drain() }()
	if err := flush(audit); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- safety.RunService(ctx, safety.ServiceOptions{
			NatsURL: url, ID: "safety-test", PolicyFile: path, WatchInterval: 5 * time.Millisecond,
			Logger: quiet, Started: func() { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("RunService: %v", err)
	}
	r := newRemote(t, systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), 5*time.Second)
	decide := func(topic string) safety.Verdict {
		t.Helper()
		v, err := r.Check(context.Background(), &pb.JobRequest{JobId: "job-" + topic, Topic: topic})
		if err != nil {
			t.Fatalf("Check(%s): %v", topic, err)
		}
		return v
	}
	if v := decide("a"); v.Decision != safety.Deny || v.RuleID != "no-a" {
		t.Fatalf("topic a: %+v", v)
	}
	select {
	case rec := <-records:
		if rec.GetJobId() != "job-a" || rec.GetDecidedBy() != "safety-test" || rec.GetDecision() != pb.PolicyDecision_POLICY_DECISION_DENY {
			t.Fatalf("audit record %v", rec)
		}
	case <-time.After(waitFor):
		t.Fatal("no audit record")
	}

	writeAtomic(t, path, "version: s2\nrules: [\n") // broken
	writeAtomic(t, path, "version: s3\nrules:\n  - id: no-b\n    match: {topics: [b]}\n    decision: deny\n    reason: no b\n")
	systest.Eventually(t, waitFor, "the service to load s3", func() bool { return decide("b").Decision == safety.Deny })
	if v := decide("a"); v.Decision != safety.Allow || v.PolicyVersion != "s3" {
		t.Fatalf("s3, topic a: %+v", v)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunService: %v", err)
		}
	case <-time.After(waitFor):
		t.Fatal("RunService did not stop")
	}
	if _, err := r.Check(context.Background(), &pb.JobRequest{Topic: "a"}); !errors.Is(err, safety.ErrUnavailable) {
		t.Fatalf("after the service stopped: %v", err)
	}
}

func TestRunServiceRefusesBrokenPolicyAtStart(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomic(t, path, "default: allow\n")
	err := safety.RunService(context.Background(), safety.ServiceOptions{NatsURL: natstest.URL(t), PolicyFile: path, Logger: quiet})
	if !errors.Is(err, safety.ErrInvalidPolicy) {
		t.Fatalf("RunService with a broken policy: %v", err)
	}
}

// FuzzRemoteAnswer: whatever bytes come back on sys.safety.check, decoding
// them and reading a verdict never panics, and yields either a verdict with
// a known decision or an error wrapping ErrUnavailable.
func FuzzRemoteAnswer(f *testing.F) {
	seed := func(sv *pb.SafetyVerdict) []byte {
		p := wire.NewPacket("t", "s")
		p.Payload = &pb.BusPacket_SafetyVerdict{SafetyVerdict: sv}
		data, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		return data
	}
	f.Add(seed(&pb.SafetyVerdict{Decision: pb.PolicyDecision_POLICY_DECISION_ALLOW, PolicyVersion: "v1"}))
	f.Add(seed(&pb.SafetyVerdict{Decision: pb.PolicyDecision_POLICY_DECISION_DENY, RuleId: "r", Reason: "no"}))
	f.Add(seed(&pb.SafetyVerdict{Decision: pb.PolicyDecision_POLICY_DECISION_THROTTLE, RetryAfterMs: -5}))
	f.Add(seed(&pb.SafetyVerdict{Decision: 42}))
	f.Add(seed(&pb.SafetyVerdict{}))
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := bus.Decode(data, bus.DefaultMaxPacketBytes)
		if err != nil {
			return
		}
		v, err := safety.VerdictFromAnswer(p)
		if err != nil {
			if !errors.Is(err, safety.ErrUnavailable) {
				t.Fatalf("error %v does not wrap ErrUnavailable", err)
			}
			return
		}
		switch v.Decision {
		case safety.Allow, safety.Deny:
			if v.RetryAfter != 0 {
				t.Fatalf("%+v: a retry-after without a throttle", v)
			}
		case safety.Throttle:
			if v.RetryAfter <= 0 || v.RetryAfter > 24*time.Hour {
				t.Fatalf("%+v: retry-after out of range", v)
			}
		default:
			t.Fatalf("unknown decision %+v", v)
		}
	})
}

// capturePublisher keeps a copy of every packet published (the auditor
// reuses its packet).
type capturePublisher struct {
	mu  sync.Mutex
	got []*pb.BusPacket
}

func (c *capturePublisher) Publish(subject string, p *pb.BusPacket) error {
	c.mu.Lock()
	c.got = append(c.got, proto.CloneOf(p))
	c.mu.Unlock()
	return nil
}

// TestAuditorDecided: Decided publishes, in order with what Record queues,
// the record Record(Record(req, v, by, at)) would have published; and a
// kernel with the auditor as its Config.Auditor publishes every decision.
func TestAuditorDecided(t *testing.T) {
	t.Parallel()
	pub := &capturePublisher{}
	a, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: pub, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_456)
	req := &pb.JobRequest{JobId: "d1", Topic: "job.echo", Tenant: "acme"}
	verdicts := []safety.Verdict{
		{Decision: safety.Allow, PolicyVersion: "v1"},
		{Decision: safety.Deny, Reason: "no", RuleID: "r1", PolicyVersion: "v1"},
		{Decision: safety.Throttle, Reason: "slow", RuleID: "r2", PolicyVersion: "v1", RetryAfter: 1500 * time.Microsecond},
	}
	var want []*pb.SafetyVerdict
	for i, v := range verdicts {
		rec := safety.Record(req, v, "sched-1", at)
		want = append(want, rec)
		if i == 1 {
			a.Record(proto.CloneOf(rec)) // the two kinds of entry, in one queue
		} else {
			a.Decided(req, v, "sched-1", at)
		}
	}
	k, err := safety.New(safety.Config{Policy: safety.DefaultPolicy(), Logger: quiet, Auditor: a, InstanceID: "sched-2"})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixMilli()
	check(t, k, &pb.JobRequest{JobId: "k1", Topic: "sys.destroy", Tenant: "acme"})
	a.Start()
	a.Stop() // publishes what is buffered

	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.got) != 4 {
		t.Fatalf("%d packets published, want 4", len(pub.got))
	}
	for i, w := range want {
		if got := pub.got[i].GetSafetyVerdict(); !proto.Equal(got, w) {
			t.Errorf("record %d = %v, want %v", i, got, w)
		}
	}
	if r := pub.got[3].GetSafetyVerdict(); r.GetJobId() != "k1" || r.GetDecision() != pb.PolicyDecision_POLICY_DECISION_DENY ||
		r.GetRuleId() != "forbidden-topic" || r.GetDecidedBy() != "sched-2" || r.GetDecidedMs() < before || r.GetTenant() != "acme" {
		t.Errorf("the kernel's record = %v", r)
	}
	if s := a.Stats(); s.Published != 4 || s.Dropped != 0 {
		t.Errorf("auditor stats %+v", s)
	}
}
