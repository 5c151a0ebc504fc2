package safety_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// A kernel decides by the first rule that matches; a throttle rule decides
// only for a job over its rate.
func ExampleKernel() {
	policy, err := safety.ParsePolicy([]byte(`
version: example-1
default: allow
rules:
  - id: forbidden-topic
    match: {topics: [sys.destroy]}
    decision: deny
    reason: forbidden topic
  - id: no-secrets
    match: {env_vars: ["*_SECRET"]}
    decision: deny
    reason: pass secrets by reference
  - id: per-tenant-rate
    decision: throttle
    reason: tenant over its rate
    throttle: {rate: 1, per: 1h, by: tenant}
  - id: guests-no-critical
    when: job.tenant.startsWith("guest-") && job.priority == "CRITICAL"
    decision: deny
    reason: guests cannot submit CRITICAL jobs
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	k, err := safety.New(safety.Config{Policy: policy, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, job := range []*pb.JobRequest{
		{Tenant: "acme", Topic: "sys.destroy"},
		{Tenant: "acme", Topic: "job.echo", EnvVars: map[string]string{"DB_SECRET": "x"}},
		{Tenant: "acme", Topic: "job.echo"},
		{Tenant: "acme", Topic: "job.echo"},
		{Tenant: "guest-1", Topic: "job.echo", Priority: pb.JobPriority_JOB_PRIORITY_CRITICAL},
	} {
		v, _ := k.Check(context.Background(), job)
		fmt.Printf("%-8s %-12s %-8s rule=%q reason=%q", job.Tenant, job.Topic, v.Decision, v.RuleID, v.Reason)
		if v.Decision == safety.Throttle {
			fmt.Printf(" retry_after=%s", v.RetryAfter.Round(time.Minute))
		}
		fmt.Println()
	}
	// Output:
	// acme     sys.destroy  deny     rule="forbidden-topic" reason="forbidden topic"
	// acme     job.echo     deny     rule="no-secrets" reason="pass secrets by reference"
	// acme     job.echo     allow    rule="" reason=""
	// acme     job.echo     throttle rule="per-tenant-rate" reason="tenant over its rate" retry_after=1h0m0s
	// guest-1  job.echo     deny     rule="guests-no-critical" reason="guests cannot submit CRITICAL jobs"
}

// A policy that does not validate is refused with every error at its line.
func ExampleParsePolicy_errors() {
	_, err := safety.ParsePolicy([]byte(`version: v1
default: maybe
rules:
  - id: a
    match: {topics: ["job..x"]}
    decision: deny
`))
	var pe *safety.PolicyError
	if errors.As(err, &pe) {
		for _, fe := range pe.Errors {
			fmt.Println(fe.Line, fe.Col, fe.Field, "-", fe.Msg)
		}
	}
	fmt.Println(errors.Is(err, safety.ErrInvalidPolicy))
	// Output:
	// 2 10 default - want allow or deny, got "maybe"
	// 4 5 rules[0].reason - a deny rule needs a reason: it reaches the client
	// 5 22 rules[0].match.topics[0] - bad topic "job..x": empty token (two dots, or a dot at an end)
	// true
}
