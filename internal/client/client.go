// Package client submits jobs to CortexOS and waits for their results.
package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ErrNoResult is returned when no result arrived before the context ended.
var ErrNoResult = errors.New("no result")

// Bus is what the client needs of the bus; *bus.NatsBus has it.
type Bus interface {
	Publish(subject string, packet *pb.BusPacket) error
	Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error)
}

// Submission is a job sent: its ids.
type Submission struct {
	JobID, TraceID string
}

// Submit publishes req on sys.job.submit. An empty job_id or trace_id is
// filled with a new UUID.
func Submit(b Bus, senderID, traceID string, req *pb.JobRequest) (Submission, error) {
	if req.JobId == "" {
		req.JobId = uuid.NewString()
	}
	if traceID == "" {
		traceID = uuid.NewString()
	}
	if err := b.Publish(wire.SubjectSubmit, wire.JobRequestPacket(traceID, senderID, req)); err != nil {
		return Submission{}, err
	}
	return Submission{JobID: req.JobId, TraceID: traceID}, nil
}

// SubmitAndWait submits req, then waits for its JobResult on sys.job.result
// and sys.job.result.> until ctx ends. It listens before it submits, so a fast result is not missed.
func SubmitAndWait(ctx context.Context, b Bus, senderID, traceID string, req *pb.JobRequest) (Submission, *pb.BusPacket, error) {
	if req.JobId == "" {
		req.JobId = uuid.NewString()
	}
	results := make(chan *pb.BusPacket, 1)
	jobID := req.JobId
	// Workers publish on sys.job.result.<worker_id>; those built from the
	// design document on sys.job.result.
	for _, subject := range []string{wire.SubjectResult, wire.SubjectResults} {
		drain, err := b.Subscribe(subject, "", func(p *pb.BusPacket) {
			if p.GetJobResult().GetJobId() != jobID {
				return
			}
			select {
			case results <- p:
			default:
			}
		})
		if err != nil {
			return Submission{}, nil, err
		}
		defer func() { _ = drain() }()
	}
	if f, ok := b.(interface{ Flush(context.Context) error }); ok {
		// Make sure the server has our subscription before the job can finish.
		if err := f.Flush(ctx); err != nil {
			return Submission{}, nil, fmt.Errorf("flush: %w", err)
		}
	}
	sub, err := Submit(b, senderID, traceID, req)
	if err != nil {
		return sub, nil, err
	}
	select {
	case p := <-results:
		return sub, p, nil
	case <-ctx.Done():
		return sub, nil, fmt.Errorf("%w for job %s: %w", ErrNoResult, sub.JobID, context.Cause(ctx))
	}
}
