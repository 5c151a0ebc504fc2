// Package wire names the subjects of the CortexOS bus and builds the
// BusPacket envelope. Workers outside this repository import it together with
// the generated cortex.v1 types in pkg/pb/v1.
package wire

import (
	"errors"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ProtocolVersion is the BusPacket.protocol_version this code speaks.
const ProtocolVersion = 1

// Subjects of the bus.
const (
	// SubjectSubmit takes JobRequests from clients.
	SubjectSubmit = "sys.job.submit"
	// SubjectResult takes JobResults from workers built from the design
	// document; workers now publish on ResultSubject(id), below it.
	SubjectResult = "sys.job.result"
	// SubjectHeartbeats matches every worker heartbeat
	// (sys.heartbeat.<kind>.<worker_id>, and the bare sys.heartbeat.<kind>).
	SubjectHeartbeats = "sys.heartbeat.>"
	// JobSubjectPrefix starts every subject a job can be dispatched on (job.<topic>).
	JobSubjectPrefix = "job."
)

// HeartbeatSubject is the subject a worker of the given kind heartbeated on
// in the design document: the bare subject, which names no worker. Workers
// now heartbeat on WorkerHeartbeatSubject; schedulers still take both.
func HeartbeatSubject(kind string) string { return "sys.heartbeat." + kind }

// Worker identity is carried in the subject: core NATS does not tell a
// subscriber who published, but the server's permissions can let a worker's
// user publish only on the subjects that name it (docs/security.md), and the
// scheduler refuses a packet whose worker_id is not the one its subject
// names.

// WorkerHeartbeatSubject is where worker workerID, of the given kind,
// heartbeats: sys.heartbeat.<kind>.<worker_id>.
func WorkerHeartbeatSubject(kind, workerID string) string {
	return "sys.heartbeat." + kind + "." + workerID
}

// ResultSubject is where worker workerID publishes its results:
// sys.job.result.<worker_id>.
func ResultSubject(workerID string) string { return SubjectResult + "." + workerID }

// SubjectResults matches the results of every worker that names itself
// (sys.job.result.<worker_id>). It does not match the bare SubjectResult,
// where workers built from the design document publish: whoever wants every
// result subscribes to both.
const SubjectResults = SubjectResult + ".>"

// HeartbeatSubjectWorker returns the worker id a heartbeat subject names: the
// last token of sys.heartbeat.<kind>.<worker_id>. The bare
// sys.heartbeat.<kind> names none (named is false). A subject of four or
// more tokens is read as naming its worker, so a worker of a dotted kind must
// use WorkerHeartbeatSubject, not the bare subject.
func HeartbeatSubjectWorker(subject string) (workerID string, named bool) {
	rest, ok := strings.CutPrefix(subject, "sys.heartbeat.")
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", false // sys.heartbeat.<kind>
	}
	return rest[i+1:], true
}

// ResultSubjectWorker returns the worker id a result subject names:
// sys.job.result.<worker_id>. The bare sys.job.result names none.
func ResultSubjectWorker(subject string) (workerID string, named bool) {
	id, ok := strings.CutPrefix(subject, SubjectResult+".")
	if !ok {
		return "", false
	}
	return id, true
}

// NewPacket wraps a payload in a BusPacket stamped now.
func NewPacket(traceID, senderID string) *pb.BusPacket {
	return &pb.BusPacket{
		TraceId:         traceID,
		SenderId:        senderID,
		CreatedAt:       timestamppb.Now(),
		ProtocolVersion: ProtocolVersion,
	}
}

// JobRequestPacket wraps req.
func JobRequestPacket(traceID, senderID string, req *pb.JobRequest) *pb.BusPacket {
	// One allocation for the packet, its time stamp and its payload wrapper:
	// this runs for every job dispatched.
	a := &struct {
		packet  pb.BusPacket
		created timestamppb.Timestamp
		payload pb.BusPacket_JobRequest
	}{}
	a.payload.JobRequest = req
	Stamp(&a.packet, &a.created, traceID, senderID)
	a.packet.Payload = &a.payload
	return &a.packet
}

// JobResultPacket wraps res.
func JobResultPacket(traceID, senderID string, res *pb.JobResult) *pb.BusPacket {
	// One allocation, as in JobRequestPacket: this runs for every result.
	a := &struct {
		packet  pb.BusPacket
		created timestamppb.Timestamp
		payload pb.BusPacket_JobResult
	}{}
	a.payload.JobResult = res
	Stamp(&a.packet, &a.created, traceID, senderID)
	a.packet.Payload = &a.payload
	return &a.packet
}

// JobAnswerPacket wraps answer.
func JobAnswerPacket(traceID, senderID string, answer *pb.JobAnswer) *pb.BusPacket {
	// One allocation, as in JobRequestPacket: a scheduler answers every
	// submission made for an answer.
	a := &struct {
		packet  pb.BusPacket
		created timestamppb.Timestamp
		payload pb.BusPacket_JobAnswer
	}{}
	a.payload.JobAnswer = answer
	Stamp(&a.packet, &a.created, traceID, senderID)
	a.packet.Payload = &a.payload
	return &a.packet
}

// Stamp fills in the envelope of p as NewPacket does (trace and sender ids,
// the time now, the protocol version), with created as its time stamp: for
// callers that build packets in memory they reuse.
func Stamp(p *pb.BusPacket, created *timestamppb.Timestamp, traceID, senderID string) {
	StampAt(p, created, traceID, senderID, time.Now())
}

// StampAt is Stamp with the time given: for a caller that has just read
// the clock.
func StampAt(p *pb.BusPacket, created *timestamppb.Timestamp, traceID, senderID string, now time.Time) {
	created.Seconds, created.Nanos = now.Unix(), int32(now.Nanosecond())
	p.TraceId, p.SenderId, p.CreatedAt, p.ProtocolVersion = traceID, senderID, created, ProtocolVersion
}

// HeartbeatPacket wraps hb.
func HeartbeatPacket(traceID, senderID string, hb *pb.Heartbeat) *pb.BusPacket {
	p := NewPacket(traceID, senderID)
	p.Payload = &pb.BusPacket_Heartbeat{Heartbeat: hb}
	return p
}

// More subjects of the job lifecycle.
const (
	// SubjectQuery takes JobQuery requests (status, list, dead letters) and
	// answers JobAnswer.
	SubjectQuery = "sys.job.query"
	// SubjectCancel takes JobCancel requests and answers JobAnswer.
	SubjectCancel = "sys.job.cancel"
	// SubjectDeadLetterPrefix starts the dead-letter subjects, sys.job.dlq.<job_id>.
	SubjectDeadLetterPrefix = "sys.job.dlq."
)

// HeaderReplyTo, on a message published to sys.job.submit, names the subject
// the scheduler answers on with a JobAnswer (accepted, or why not). A NATS
// reply subject cannot serve: when a stream captures sys.job.submit, the
// server itself answers it with the stream's publish acknowledgement.
const HeaderReplyTo = "Cortex-Reply-To"

// HeaderAnswerBatch, on a result published for a scheduler's answer (with
// HeaderReplyTo), names a second subject the sender reads answers on: there
// the scheduler may answer this result together with others, in one
// JobAnswer whose answered field lists, for each result, the number that
// ends its HeaderReplyTo subject. A scheduler that does not batch answers on
// HeaderReplyTo as before.
const HeaderAnswerBatch = "Cortex-Answer-Batch"

// WorkerCancelSubject is where a worker hears cancellations of jobs it holds.
func WorkerCancelSubject(workerID string) string { return "sys.worker." + workerID + ".cancel" }

// ErrNotAnswered is what a handler of packets published for an answer
// returns when it handled the packet but its sender is not to be answered
// where it asked: the reply subject it named is not its own. The bus then
// sends no answer, and takes the packet as handled.
var ErrNotAnswered = errors.New("handled, not answered: the reply subject is not the sender's")

// ErrNoResponders is returned by a request that reached no subscriber.
var ErrNoResponders = errors.New("no responders")

// ErrUnpublishable is wrapped by the error of a publish that can never
// succeed as asked, whenever it is tried again: a subject too long for the
// server's protocol line or not a valid subject, a packet larger than the
// bus or the server takes. Nothing was sent, and the connection is intact.
var ErrUnpublishable = errors.New("unpublishable")
