package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// SafetyDecisions counts the decisions of a safety kernel that is not the
// scheduler's (cortex safety): cortex_safety_decisions_total{decision,rule}.
// Record takes the kernel's audit records.
type SafetyDecisions struct{ c *prometheus.CounterVec }

// NewSafetyDecisions registers cortex_safety_decisions_total with reg.
func NewSafetyDecisions(reg prometheus.Registerer) *SafetyDecisions {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "safety_decisions_total",
		Help: "Safety decisions on jobs, by decision (allow, deny, throttle) and rule.",
	}, []string{"decision", "rule"})
	reg.MustRegister(c)
	return &SafetyDecisions{c: c}
}

// Record counts one decision (a kernel's audit record).
func (s *SafetyDecisions) Record(v *pb.SafetyVerdict) {
	var d string
	switch v.GetDecision() {
	case pb.PolicyDecision_POLICY_DECISION_ALLOW:
		d = "allow"
	case pb.PolicyDecision_POLICY_DECISION_DENY:
		d = "deny"
	case pb.PolicyDecision_POLICY_DECISION_THROTTLE:
		d = "throttle"
	default:
		d = "unknown"
	}
	s.c.WithLabelValues(d, ruleLabel(v.GetRuleId())).Inc()
}
