package safety_test

import (
	"context"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// TestRunServiceDecided: ServiceOptions.Decided (cortex safety's metrics)
// hears every decision, with the audit records off too.
func TestRunServiceDecided(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	decided := make(chan *pb.SafetyVerdict, 16)
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- safety.RunService(ctx, safety.ServiceOptions{
			NatsURL: url, ID: "safety-decided", NoAudit: true, Logger: quiet,
			Started: func() { close(started) },
			Decided: func(v *pb.SafetyVerdict) { decided <- v },
		})
	}()
	defer func() { cancel(); <-done }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("RunService: %v", err)
	}
	r := newRemote(t, systest.ConnectWith(t, bus.Config{URL: url, DrainTimeout: 2 * time.Second}), 5*time.Second)
	if _, err := r.Check(context.Background(), &pb.JobRequest{JobId: "j1", Topic: "job.echo"}); err != nil {
		t.Fatal(err)
	}
	select {
	case v := <-decided:
		if v.GetJobId() != "j1" || v.GetDecision() != pb.PolicyDecision_POLICY_DECISION_ALLOW {
			t.Fatalf("decided %v", v)
		}
	case <-time.After(waitFor):
		t.Fatal("Decided was not called")
	}
}
