package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// jobEvents publishes job events. Each change the engine writes to a job is
// published, best effort, on wire.JobEventSubject(tenant, job_id) =
// sys.job.event.<tenant or "_">.<job_id>, as a JobAnswer{ok, jobs: [job]}
// packet (no new wire message), so that a client can follow a job without
// polling (pkg/client's Watch, the HTTP gateway's event stream). The job's
// inline payload is left out. The tenant token lets the server's permissions
// give each tenant's client its own tenant's events only (docs/security.md):
// a job whose tenant is not one subject token (a dot, a wildcard, a blank,
// or "_" itself) publishes no event, since its subject could fall under
// another tenant's; its followers poll.
//
// It owns no job state, only a pool of reusable event packets (eventPool):
// it is called by the job cache after every write (recorder.recorded)
// and publishes on the bus as the replica id. It publishes only the
// events of jobs someone follows (follows: a follower announces itself on
// wire.SubjectJobFollow), so that a job nobody watches costs no event. It
// has nothing to start or stop; the follows' subscription is a part of the
// engine.
type jobEvents struct {
	bus     Bus
	id      string // the sender id of the packets
	log     *slog.Logger
	follows *follows // whose events to publish (follows.go)
}

// publish publishes next's event if it is followed and a follower would
// see a change from prev.
func (je *jobEvents) publish(prev, next *pb.JobInfo) {
	if next == nil || (prev != nil && prev.GetState() == next.GetState() && prev.GetAttempt() == next.GetAttempt() &&
		prev.GetPendingReason() == next.GetPendingReason() && prev.GetError() == next.GetError()) {
		return // nothing a follower reports changed
	}
	if !je.follows.followed(next.GetJobId()) {
		return // nobody listens
	}
	ev := eventPool.Get().(*jobEvent)
	subj, ok := wire.AppendJobEventSubject(ev.subject[:0], next.GetRequest().GetTenant(), next.GetJobId())
	if !ok {
		eventPool.Put(ev)
		return
	}
	ev.subject = subj
	subject := unsafe.String(unsafe.SliceData(subj), len(subj)) // Publish keeps none of its arguments (Bus)
	// A written job is never edited (Store), and encoding only reads it.
	job := next
	if r := next.GetRequest(); r != nil && len(r.Payload) > 0 {
		job = &ev.job
		copyInfo(job, next)
		copyRequest(&ev.req, r)
		ev.req.Payload = nil
		job.Request = &ev.req
	}
	ev.jobs[0] = job
	ev.answer = pb.JobAnswer{Ok: true, Jobs: ev.jobs[:]}
	ev.payload.JobAnswer = &ev.answer
	ev.packet = pb.BusPacket{Payload: &ev.payload}
	wire.Stamp(&ev.packet, &ev.created, next.GetTraceId(), je.id)
	if err := je.bus.Publish(subject, &ev.packet); err != nil && je.log.Enabled(context.Background(), slog.LevelDebug) { // Publish keeps nothing of it (Bus)
		je.log.Debug("job event not published", "job_id", next.GetJobId(), "err", err.Error())
	}
	*ev = jobEvent{subject: subj[:0]} // no job kept alive by the pool; the subject's bytes reused
	eventPool.Put(ev)
}

// jobEvent is an event's packet in one piece, reused: an event is published
// for most changes of every job, and Publish keeps nothing once it returns.
// A job without an inline payload is encoded as written, not copied.
type jobEvent struct {
	packet  pb.BusPacket
	created timestamppb.Timestamp
	payload pb.BusPacket_JobAnswer
	answer  pb.JobAnswer
	jobs    [1]*pb.JobInfo
	job     pb.JobInfo    // next without its payload, when it has one
	req     pb.JobRequest // job's request, without the payload
	subject []byte
}

var eventPool = sync.Pool{New: func() any { return new(jobEvent) }}
