// Package safety is the CortexOS safety kernel: it decides, before a job is
// dispatched, whether it may run (allow), may never run (deny) or may not run
// now (throttle), by a versioned policy of rules.
package safety

import (
	"errors"
	"fmt"
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

// Record is the audit record of v, a decision about req made by decidedBy
// at at: the SafetyVerdict published on SubjectAudit and answered on
// SubjectCheck.
func Record(req *pb.JobRequest, v Verdict, decidedBy string, at time.Time) *pb.SafetyVerdict {
	out := new(pb.SafetyVerdict)
	fillRecord(out, req.GetJobId(), req.GetTenant(), req.GetTopic(), v, decidedBy, at.UnixMilli())
	return out
}

// fillRecord sets out to the audit record of v, a decision about the job
// jobID (of tenant, on topic) made by decidedBy at decidedMs: Record's, and
// the bus auditor's for a decision it kept by value (Decided).
func fillRecord(out *pb.SafetyVerdict, jobID, tenant, topic string, v Verdict, decidedBy string, decidedMs int64) {
	*out = pb.SafetyVerdict{
		Decision:      v.Decision.Proto(),
		Reason:        v.Reason,
		RuleId:        v.RuleID,
		PolicyVersion: v.PolicyVersion,
		RetryAfterMs:  v.RetryAfterMs(),
		JobId:         jobID,
		Tenant:        tenant,
		Topic:         topic,
		DecidedMs:     decidedMs,
		DecidedBy:     decidedBy,
	}
}

// RetryAfterMs is v's retry-after in whole milliseconds, rounded up: at
// least 1 for a throttle, 0 for any other decision.
func (v Verdict) RetryAfterMs() int64 {
	if v.Decision != Throttle {
		return 0
	}
	return max(1, (v.RetryAfter + time.Millisecond - 1).Milliseconds())
}

// maxRetryAfter bounds a retry-after read from the wire.
const maxRetryAfter = 24 * time.Hour

// VerdictFromProto reads a verdict from its wire form. A verdict without a
// decision this version knows is an error: it decides nothing.
func VerdictFromProto(sv *pb.SafetyVerdict) (Verdict, error) {
	if sv == nil {
		return Verdict{}, errNoVerdict
	}
	v := Verdict{Reason: sv.GetReason(), RuleID: sv.GetRuleId(), PolicyVersion: sv.GetPolicyVersion()}
	switch sv.GetDecision() {
	case pb.PolicyDecision_POLICY_DECISION_ALLOW:
		v.Decision = Allow
	case pb.PolicyDecision_POLICY_DECISION_DENY:
		v.Decision = Deny
	case pb.PolicyDecision_POLICY_DECISION_THROTTLE:
		v.Decision = Throttle
		ms := min(max(sv.GetRetryAfterMs(), 1), maxRetryAfter.Milliseconds())
		v.RetryAfter = time.Duration(ms) * time.Millisecond
	default:
		if sv.GetReason() != "" {
			return Verdict{}, fmt.Errorf("%w: %s", errNoDecision, sv.GetReason())
		}
		return Verdict{}, fmt.Errorf("%w: %v", errNoDecision, sv.GetDecision())
	}
	return v, nil
}

var (
	errNoVerdict  = errors.New("no safety verdict")
	errNoDecision = errors.New("verdict without a decision")
)
