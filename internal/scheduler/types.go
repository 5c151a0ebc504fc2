// Package scheduler is the CortexOS control loop: it takes job submissions,
// asks a SafetyChecker, picks a subject with a SchedulingStrategy over the
// WorkerRegistry, and dispatches on a Bus. It depends only on these four
// interfaces; NATS lives behind Bus.
package scheduler

import pb "github.com/cortex-os/core/pkg/pb/v1"

// Bus moves packets. The NATS implementation is bus.NatsBus. An empty queue
// means every subscriber sees every packet; a queue group shares them. The
// drain function Subscribe returns stops delivery and waits for the handler.
type Bus interface {
	Publish(subject string, packet *pb.BusPacket) error
	Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error)
}

// SafetyDecision is the verdict of a SafetyChecker.
type SafetyDecision int

// Safety decisions.
const (
	SafetyAllow SafetyDecision = iota
	SafetyDeny
)

func (d SafetyDecision) String() string {
	switch d {
	case SafetyAllow:
		return "allow"
	case SafetyDeny:
		return "deny"
	default:
		return "unknown"
	}
}

// SafetyChecker admits or refuses a job before it is dispatched. A denial
// carries a reason.
type SafetyChecker interface {
	Check(req *pb.JobRequest) (SafetyDecision, string)
}

// WorkerRegistry keeps the last heartbeat of every worker.
type WorkerRegistry interface {
	UpdateHeartbeat(hb *pb.Heartbeat)
	Snapshot() map[string]*pb.Heartbeat
}

// SchedulingStrategy chooses the subject a job is dispatched on. It is pure
// decision logic over a snapshot of the registry.
type SchedulingStrategy interface {
	PickSubject(req *pb.JobRequest, workers map[string]*pb.Heartbeat) (string, error)
}

// WorkerBlind is implemented by a SchedulingStrategy whose choice does not
// look at the workers, such as NaiveStrategy (the subject is the topic). When
// WorkerBlind returns true the engine passes PickSubject a nil map instead of
// copying the registry for every job.
type WorkerBlind interface {
	WorkerBlind() bool
}
