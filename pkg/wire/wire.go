// Package wire names the subjects of the CortexOS bus and builds the
// BusPacket envelope. Workers outside this repository import it together with
// the generated cortex.v1 types in pkg/pb/v1.
package wire

import (
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
