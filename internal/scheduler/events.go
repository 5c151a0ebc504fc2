package scheduler

import (
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Job events: each change the engine writes to a job is published, best
// effort, on wire.JobEventSubject(tenant, job_id) =
// sys.job.event.<tenant or "_">.<job_id>, as a JobAnswer{ok, jobs: [job]}
// packet (no new wire message), so that a client can follow a job without
// polling (pkg/client's Watch, the HTTP gateway's event stream). The job's
// inline payload is left out. The tenant token lets the server's permissions
// give each tenant's client its own tenant's events only (docs/security.md):
// a job whose tenant is not one subject token (a dot, a wildcard, a blank,
// or "_" itself) publishes no event, since its subject could fall under
// another tenant's; its followers poll.
func (e *Engine) publishJobEvent(prev, next *pb.JobInfo) {
	if next == nil || (prev != nil && prev.GetState() == next.GetState() && prev.GetAttempt() == next.GetAttempt() &&
		prev.GetPendingReason() == next.GetPendingReason() && prev.GetError() == next.GetError()) {
		return // nothing a follower reports changed
	}
	subject, ok := wire.JobEventSubject(next.GetRequest().GetTenant(), next.GetJobId())
	if !ok {
		return
	}
	job := cloneInfo(next)
	if r := job.Request; r != nil && len(r.Payload) > 0 {
		job.Request = cloneRequest(r)
		job.Request.Payload = nil
	}
	p := wire.NewPacket(next.GetTraceId(), e.cfg.ID)
	p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{job}}}
	if err := e.cfg.Bus.Publish(subject, p); err != nil && e.debug() {
		e.log.Debug("job event not published", "job_id", next.GetJobId(), "err", err)
	}
}
