// Package scheduler is the CortexOS control loop. It takes job submissions,
// admits them through a SafetyChecker, records each job in a JobStore (the one
// authority for its state, moved only by compare-and-set), places it with a
// SchedulingStrategy over the WorkerRegistry, hands it to a worker with a
// confirmed dispatch, watches the worker's lease, and applies results, with
// retries, timeouts, cancellation and dead letters. It sees NATS only through
// the Bus interface.
package scheduler

import (
	"context"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Bus moves packets. The NATS implementation is bus.NatsBus.
type Bus interface {
	// Publish sends a packet.
	Publish(subject string, packet *pb.BusPacket) error
	// Subscribe delivers packets; an empty queue means every subscriber sees
	// every packet, a queue group shares them. drain stops delivery and
	// waits for the handler.
	Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error)
	// PublishRequest sends a packet asking for answers on reply. Neither
	// Publish nor PublishRequest keeps its arguments once it returns: the
	// engine reuses the packet and the reply subject's bytes.
	PublishRequest(subject, reply string, packet *pb.BusPacket) error
	// SubscribeReplies delivers the answers arriving on subject (a wildcard
	// over reply subjects), with the subject each came on; a request that
	// reached no subscriber comes back as noResponders with a nil packet.
	SubscribeReplies(subject string, handler func(subject string, p *pb.BusPacket, noResponders bool)) (drain func() error, err error)
	// ServeTree answers requests on subject and below it (subject.>) with
	// the handler's non-nil return, published on the request's reply
	// subject: the handler gets the subject each came on, which may name its
	// client, and the reply subject, which it must check before it answers.
	// Bytes that did not decode come with a nil packet and the error.
	ServeTree(subject, queue string, handler func(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket) (drain func() error, err error)
	// Consume delivers each packet published on subject to one member of
	// the durable group, durably where the bus can; the handler's nil error
	// acknowledges, an error asks for redelivery. replyTo is where the sender
	// wants an answer. The packet is the handler's only until it returns (the
	// NATS bus reuses it): it may keep the JobRequest it carries, and
	// strings, nothing else.
	Consume(subject, durable string, handler func(p *pb.BusPacket, replyTo string) error) (stop func() error, err error)
	// SubscribeWithSubject is Subscribe handing the handler the subject each
	// packet came on: heartbeat subjects name their worker.
	SubscribeWithSubject(subject, queue string, handler func(subject string, p *pb.BusPacket)) (drain func() error, err error)
	// ConsumeTree is Consume of subject and of the subjects below it
	// (subject.>), handing the handler the subject each packet came on:
	// results arrive on sys.job.result and on sys.job.result.<worker_id>.
	// The packet is the handler's as with Consume.
	ConsumeTree(subject, durable string, handler func(subject string, p *pb.BusPacket, replyTo string) error) (stop func() error, err error)

	// What the bus can tell the engine besides moving packets. A bus that
	// cannot tell answers with the zero value.

	// InboxPrefix is the prefix of this connection's own inboxes
	// (_INBOX.<user>), where no request may ask to be answered; "" when it
	// has none of its own.
	InboxPrefix() string
	// Flush returns once the server has everything sent so far, the
	// subscriptions included (nil at once on a bus without a server).
	Flush(ctx context.Context) error
	// Backlog reports how many packets of a subject given to Consume or
	// ConsumeTree were received and not yet handled (0 when it cannot
	// tell): gets of jobs not recorded yet are answered "retry" meanwhile.
	Backlog(ctx context.Context, subject string) (int, error)
}

// SafetyDecision is the decision of a SafetyChecker.
type SafetyDecision = safety.Decision

// Safety decisions.
const (
	SafetyAllow    = safety.Allow
	SafetyDeny     = safety.Deny
	SafetyThrottle = safety.Throttle
)

// SafetyChecker admits or refuses a job before it is dispatched. A verdict
// other than allow carries a reason, and the rule that made it. An error
// means no decision could be made (a remote kernel did not answer): the
// engine then fails closed.
type SafetyChecker interface {
	Check(ctx context.Context, req *pb.JobRequest) (safety.Verdict, error)
}

// TraceBlind is the part of a SafetyChecker that says whether its decision
// reads no trace id from its context (safety.WithTraceID), as SafetyStub's:
// the engine then does not add one to a context for every job. A checker
// without it is given the trace id.
type TraceBlind interface {
	TraceBlind() bool
}

// TracedChecker is the part of a SafetyChecker that takes a job's trace id
// and the time of the decision as arguments (safety.Kernel's CheckTraced):
// the engine then admits a job without building a context to carry its
// trace id and without a second clock read, both once per job. It must
// decide as Check does with the trace id in its context (safety.WithTraceID).
type TracedChecker interface {
	CheckTraced(ctx context.Context, req *pb.JobRequest, traceID string, now time.Time) (safety.Verdict, error)
}

// DecisionLogger is the part of a SafetyChecker that says whether it logs
// every decision it makes itself, in this process, as safety.Kernel does (a
// denial at info). The engine then logs its own refusal of a denied job at
// debug, so a denial is one info line, not two. A checker without it (the
// design document's stub, a remote kernel whose lines are in another
// process) gets the engine's refusal line at info.
type DecisionLogger interface {
	LogsDecisions() bool
}

// WorkerRegistry keeps the last heartbeat of every live worker: the design
// document's seam, implemented by placement.Registry (MemoryRegistry is one
// that only lists workers).
type WorkerRegistry interface {
	UpdateHeartbeat(hb *pb.Heartbeat)
	// Snapshot returns the live workers by id. The heartbeats are shared:
	// do not modify them.
	Snapshot() map[string]*pb.Heartbeat
	// Workers lists the live workers with when each last heartbeated, for
	// `cortex workers`. The heartbeats are shared.
	Workers() []*pb.WorkerInfo
}

// SchedulingStrategy chooses the subject a job is dispatched on. It is pure
// decision logic over a snapshot of the registry: the design document's
// seam. Placement by what workers report (pools, least-loaded) is package
// placement's, configured with Config.Placement.
type SchedulingStrategy interface {
	PickSubject(req *pb.JobRequest, workers map[string]*pb.Heartbeat) (string, error)
	// WorkerBlind reports that the choice does not look at the workers, as
	// NaiveStrategy's (the subject is the topic): the engine then passes
	// PickSubject a nil map instead of copying the registry for every job.
	WorkerBlind() bool
}

// JobStore keeps job records; see package jobstore for the contract and the
// memory and JetStream key-value implementations.
type JobStore = jobstore.Store

// DeadLetters holds jobs that exhausted their attempts.
type DeadLetters = jobstore.DeadLetters

// WorkerBlind is the part of a SchedulingStrategy that says whether its
// choice looks at the workers.
type WorkerBlind interface {
	WorkerBlind() bool
}

// PlacingRegistry is the part of a WorkerRegistry that places jobs by what
// the workers report: PlacementRegistry returns the placement.Registry the
// engine places on and counts placements in (and whose pools it uses when
// Config.Placement names none), or nil when the registry only lists
// workers. The engine feeds heartbeats only to the WorkerRegistry: its
// UpdateHeartbeat must reach the registry returned. placement.Registry has
// it (nil when ListOnly, as MemoryRegistry is). With placement configured
// and no such registry, the engine keeps one of its own, fed the same
// heartbeats.
type PlacingRegistry interface {
	PlacementRegistry() *placement.Registry
}
