package scheduler

import pb "github.com/cortex-os/core/pkg/pb/v1"

// ForbiddenTopic is the topic the safety stub refuses, as in the design document.
const ForbiddenTopic = "sys.destroy"

// SafetyStub is the design document's safety check: it refuses ForbiddenTopic
// and admits everything else. The real policy kernel replaces it.
type SafetyStub struct{}

// NewSafetyStub returns the stub checker.
func NewSafetyStub() *SafetyStub { return &SafetyStub{} }

// Check implements SafetyChecker.
func (s *SafetyStub) Check(req *pb.JobRequest) (SafetyDecision, string) {
	if req.GetTopic() == ForbiddenTopic {
		return SafetyDeny, "forbidden topic"
	}
	return SafetyAllow, ""
}
