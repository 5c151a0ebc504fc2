// Package wire names the subjects of the CortexOS bus and builds the
// BusPacket envelope. Workers outside this repository import it together with
// the generated cortex.v1 types in pkg/pb/v1.
package wire

import (
	"errors"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// ProtocolVersion is the BusPacket.protocol_version this code speaks.
const ProtocolVersion = 1

// Subjects of the bus.
const (
	// SubjectSubmit takes JobRequests from clients.
	SubjectSubmit = "sys.job.submit"
	// SubjectResult takes JobResults from workers.
	SubjectResult = "sys.job.result"
	// SubjectHeartbeats matches every worker heartbeat (sys.heartbeat.<kind>).
	SubjectHeartbeats = "sys.heartbeat.>"
	// JobSubjectPrefix starts every subject a job can be dispatched on (job.<topic>).
	JobSubjectPrefix = "job."
)

// HeartbeatSubject is the subject a worker of the given kind heartbeats on.
func HeartbeatSubject(kind string) string { return "sys.heartbeat." + kind }

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
	p := NewPacket(traceID, senderID)
	p.Payload = &pb.BusPacket_JobRequest{JobRequest: req}
	return p
}

// JobResultPacket wraps res.
func JobResultPacket(traceID, senderID string, res *pb.JobResult) *pb.BusPacket {
	p := NewPacket(traceID, senderID)
	p.Payload = &pb.BusPacket_JobResult{JobResult: res}
	return p
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
	// SubjectEventPrefix starts the subjects a job's changes are published on:
	// sys.job.event.<job_id> carries a JobInfo after every transition.
	SubjectEventPrefix = "sys.job.event."
	// SubjectDeadLetterPrefix starts the dead-letter subjects, sys.job.dlq.<job_id>.
	SubjectDeadLetterPrefix = "sys.job.dlq."
)

// HeaderReplyTo, on a message published to sys.job.submit, names the subject
// the scheduler answers on with a JobAnswer (accepted, or why not). A NATS
// reply subject cannot serve: when a stream captures sys.job.submit, the
// server itself answers it with the stream's publish acknowledgement.
const HeaderReplyTo = "Cortex-Reply-To"

// EventSubject is the subject a job's changes are published on.
func EventSubject(jobID string) string { return SubjectEventPrefix + jobID }

// WorkerCancelSubject is where a worker hears cancellations of jobs it holds.
func WorkerCancelSubject(workerID string) string { return "sys.worker." + workerID + ".cancel" }

// ErrNoResponders is returned by a request that reached no subscriber.
var ErrNoResponders = errors.New("no responders")
