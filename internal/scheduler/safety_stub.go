package scheduler

import (
	"context"

	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ForbiddenTopic is the topic the safety stub refuses, as in the design document.
const ForbiddenTopic = "sys.destroy"

// SafetyStub is the design document's safety check: it refuses ForbiddenTopic
// and admits everything else. The policy kernel (package safety) replaces it;
// its shipped default policy keeps this rule.
type SafetyStub struct{}

// NewSafetyStub returns the stub checker.
func NewSafetyStub() *SafetyStub { return &SafetyStub{} }

// Check implements SafetyChecker.
func (s *SafetyStub) Check(_ context.Context, req *pb.JobRequest) (safety.Verdict, error) {
	if req.GetTopic() == ForbiddenTopic {
		return safety.Verdict{Decision: safety.Deny, Reason: "forbidden topic", RuleID: "stub-forbidden-topic"}, nil
	}
	return safety.Verdict{}, nil
}

// TraceBlind implements TraceBlind: the stub reads no trace id.
func (s *SafetyStub) TraceBlind() bool { return true }
