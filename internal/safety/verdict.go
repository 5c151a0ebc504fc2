// Package safety is the CortexOS safety kernel: it decides, before a job is
// dispatched, whether it may run (allow), may never run (deny) or may not run
// now (throttle), by a versioned policy of rules.
package safety

import (
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Decision is what the kernel decides about a job.
type Decision int

// Decisions.
const (
	Allow Decision = iota
	Deny
	Throttle
)

func (d Decision) String() string {
	switch d {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case Throttle:
		return "throttle"
	default:
		return "unknown"
	}
}

// Proto returns the wire form of d.
func (d Decision) Proto() pb.PolicyDecision {
	switch d {
	case Allow:
		return pb.PolicyDecision_POLICY_DECISION_ALLOW
	case Deny:
		return pb.PolicyDecision_POLICY_DECISION_DENY
	case Throttle:
		return pb.PolicyDecision_POLICY_DECISION_THROTTLE
	default:
		return pb.PolicyDecision_POLICY_DECISION_UNSPECIFIED
	}
}

// Verdict is a decision and why.
type Verdict struct {
	Decision Decision
	// Reason says why, for a person: it reaches the client and the job record.
	Reason string
	// RuleID is the rule that decided; empty when the default decision did.
	RuleID string
	// PolicyVersion is the version of the policy that decided.
	PolicyVersion string
	// RetryAfter is, for Throttle, how long until the job may be admitted.
	RetryAfter time.Duration
}
