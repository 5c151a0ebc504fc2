package client

import (
	"context"
	"fmt"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// allEventsBuffer is how many events an AllEvents subscription holds for a
// reader that is behind: it hears every job's changes, so more than one
// job's subscription.
const allEventsBuffer = 4096

// AllEvents subscribes to the events of every job the client may read:
// every tenant's (sys.job.event.>), or with Options.Tenant that tenant's
// only (sys.job.event.<tenant>.>). Each event is a job as the scheduler
// wrote it, without its inline payload. When Dropped reports true the
// reader fell behind and should list the jobs again rather than trust what
// it built from the events. The subscription is in place at the server
// when AllEvents returns, and it has announced that it follows every job
// (wire.SubjectJobFollow with no job id): schedulers publish every job's
// events while it runs, so a reader should Stop it once done.
func (c *Client) AllEvents(ctx context.Context) (*Events, error) {
	subject := wire.SubjectJobEvents
	if c.tenant != "" {
		if _, ok := wire.JobEventSubject(c.tenant, "x"); !ok {
			return nil, invalid("tenant %q has no event subject", c.tenant)
		}
		subject = wire.TenantJobEvents(c.tenant)
	}
	ch := make(chan *pb.JobInfo, allEventsBuffer)
	var dropped atomicBool
	stop, err := c.bus.Subscribe(subject, "", func(p *pb.BusPacket) {
		jobs := p.GetJobAnswer().GetJobs()
		if len(jobs) != 1 || jobs[0].GetJobId() == "" {
			return
		}
		select {
		case ch <- jobs[0]:
		default:
			dropped.set()
		}
	})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return c.follow(ctx, "", stop, ch, &dropped)
}
