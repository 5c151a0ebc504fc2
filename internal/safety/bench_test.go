package safety_test

import (
	"context"
	"testing"

	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// benchPolicy has ten field rules that the bench job passes through, then
// the shipped rule; the job is allowed by default.
const benchPolicy = `
version: bench
rules:
  - {id: r1, match: {topics: [sys.destroy]}, decision: deny, reason: forbidden topic}
  - {id: r2, match: {topics: ["job.gpu.>"], tenants: [acme]}, decision: deny, reason: r}
  - {id: r3, match: {tenants: ["evil-*"]}, decision: deny, reason: r}
  - {id: r4, match: {priorities: [CRITICAL], tenants: [guest]}, decision: deny, reason: r}
  - {id: r5, match: {capabilities: [gpu, tpu]}, decision: deny, reason: r}
  - {id: r6, match: {labels: {zone: cn}}, decision: deny, reason: r}
  - {id: r7, match: {env_vars: ["*_SECRET", AWS_SECRET_ACCESS_KEY]}, decision: deny, reason: r}
  - {id: r8, match: {payload_bytes_over: 65536}, decision: deny, reason: r}
  - {id: r9, match: {context_bytes_over: 4096}, decision: deny, reason: r}
  - {id: r10, match: {topics: ["job.*.admin"]}, decision: deny, reason: r}
`

func benchJob() *pb.JobRequest {
	return &pb.JobRequest{
		JobId: "job-1", Topic: "job.echo", Tenant: "acme", Priority: pb.JobPriority_JOB_PRIORITY_BATCH,
		EnvVars: map[string]string{"MODEL": "small", "LANG": "en"}, RequiredCapabilities: []string{"cpu"},
		RequiredLabels: map[string]string{"zone": "eu"}, Payload: make([]byte, 512), ContextPtr: "redis://jobs/1/context",
	}
}

func benchCheck(b *testing.B, k *safety.Kernel, req *pb.JobRequest, want safety.Decision) {
	b.Helper()
	ctx := context.Background()
	if v, _ := k.Check(ctx, req); v.Decision != want {
		b.Fatalf("verdict %+v; want %s", v, want)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, _ = k.Check(ctx, req)
	}
}

// BenchmarkCheckAllowThroughTenRules: a job every rule looks at and none
// matches; the default allows it.
func BenchmarkCheckAllowThroughTenRules(b *testing.B) {
	benchCheck(b, newKernel(b, benchPolicy), benchJob(), safety.Allow)
}

// BenchmarkCheckDeny: the first rule denies.
func BenchmarkCheckDeny(b *testing.B) {
	req := benchJob()
	req.Topic = "sys.destroy"
	benchCheck(b, newKernel(b, benchPolicy), req, safety.Deny)
}

// BenchmarkCheckCEL: ten field rules pass, then a when expression decides.
func BenchmarkCheckCEL(b *testing.B) {
	src := benchPolicy + `  - id: cel
    when: job.tenant == "acme" && job.payload_size > 100 && "MODEL" in job.env && job.priority != "CRITICAL"
    decision: deny
    reason: cel
`
	benchCheck(b, newKernel(b, src), benchJob(), safety.Deny)
}

// BenchmarkCheckThrottleAdmit: a throttle rule with tokens to spare.
func BenchmarkCheckThrottleAdmit(b *testing.B) {
	src := "version: bench\nrules:\n  - {id: t, decision: throttle, reason: r, throttle: {rate: 1000000000, per: 1s, by: tenant}}\n"
	benchCheck(b, newKernel(b, src), benchJob(), safety.Allow)
}

// BenchmarkCheckWithAudit: the allow path with a BusAuditor's hook (the
// record is built; publishing is another goroutine's).
func BenchmarkCheckWithAudit(b *testing.B) {
	a, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: discardPublisher{}, Buffer: 1 << 16, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	a.Start()
	defer a.Stop()
	k, err := safety.New(safety.Config{Policy: mustPolicy(b, benchPolicy), Logger: quiet, Audit: a.Record})
	if err != nil {
		b.Fatal(err)
	}
	benchCheck(b, k, benchJob(), safety.Allow)
}

// BenchmarkCheckWithAuditor: the allow path with a BusAuditor as the
// kernel's Config.Auditor (no record built per decision).
func BenchmarkCheckWithAuditor(b *testing.B) {
	a, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: discardPublisher{}, Buffer: 1 << 16, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	a.Start()
	defer a.Stop()
	k, err := safety.New(safety.Config{Policy: mustPolicy(b, benchPolicy), Logger: quiet, Auditor: a})
	if err != nil {
		b.Fatal(err)
	}
	benchCheck(b, k, benchJob(), safety.Allow)
}

// BenchmarkCheckParallel: the allow path from every core.
func BenchmarkCheckParallel(b *testing.B) {
	k := newKernel(b, benchPolicy)
	req := benchJob()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			_, _ = k.Check(ctx, req)
		}
	})
}

type discardPublisher struct{}

func (discardPublisher) Publish(string, *pb.BusPacket) error { return nil }
