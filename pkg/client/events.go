package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// eventBuffer is how many events an Events subscription holds for a reader
// that is behind; more are dropped (the reader asks for the job instead).
const eventBuffer = 256

// followInterval is how often a follower announces itself again
// (wire.FollowInterval); a test shortens it.
var followInterval = wire.FollowInterval

// Events is a live subscription to the events of one job: the job as the
// scheduler wrote it, each time its state, attempt, pending reason or error
// changes (wire.JobEventSubject). A scheduler publishes a job's events only
// while someone follows it: the subscription announces itself on
// wire.SubjectJobFollow when it starts and every wire.FollowInterval until
// Stop. Schedulers from before job events publish none, and an
// announcement or an event may be lost: a reader that hears nothing should
// ask (Get).
type Events struct {
	// C delivers the events, in the order they arrived. It is never closed.
	C       <-chan *pb.JobInfo
	dropped func() bool
	stop    func() error
}

// Stop ends the subscription.
func (e *Events) Stop() { _ = e.stop() }

// Dropped reports whether an event was dropped because C was full: the
// reader should ask for the job rather than trust the last event it read.
func (e *Events) Dropped() bool { return e.dropped() }

// Events subscribes to the events of job jobID, then announces that it
// follows it. The subscription is in place at the server, and the
// announcement sent, when Events returns, so a reader that asks for the
// job afterwards misses no change after the one it reads, once a
// scheduler has heard the announcement (a change written meanwhile may
// publish no event: ask again when nothing comes). With
// Options.Tenant the client subscribes to its tenant's events only
// (sys.job.event.<tenant>.<job_id>), which is all the server lets a
// tenant's client read; without, to the job's events whatever its tenant.
func (c *Client) Events(ctx context.Context, jobID string) (*Events, error) {
	subject := wire.JobEventsOf(jobID)
	if c.tenant != "" {
		var ok bool
		if subject, ok = wire.JobEventSubject(c.tenant, jobID); !ok {
			return nil, invalid("job %q of tenant %q has no event subject", jobID, c.tenant)
		}
	} else if _, ok := wire.JobEventSubject("", jobID); !ok {
		return nil, invalid("job id %q has no event subject", jobID)
	}
	ch := make(chan *pb.JobInfo, eventBuffer)
	var dropped atomicBool
	stop, err := c.bus.Subscribe(subject, "", func(p *pb.BusPacket) {
		jobs := p.GetJobAnswer().GetJobs()
		if len(jobs) != 1 || jobs[0].GetJobId() != jobID {
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
	return c.follow(ctx, jobID, stop, ch, &dropped)
}

// follow flushes the subscription that stop ends, announces that the
// client follows jobID ("": every job), and returns the Events whose Stop
// ends the announcements, then the subscription. The subscription is in
// place before the announcement leaves: an event the announcement causes
// is heard.
func (c *Client) follow(ctx context.Context, jobID string, stop func() error, ch <-chan *pb.JobInfo, dropped *atomicBool) (*Events, error) {
	if err := c.bus.Flush(ctx); err != nil {
		_ = stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	announce := func() error { return c.bus.Publish(wire.SubjectJobFollow, wire.FollowPacket(c.senderID, jobID)) }
	if err := announce(); err != nil {
		_ = stop()
		return nil, fmt.Errorf("client: %w", err)
	}
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		t := time.NewTicker(followInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				// Lost or refused, the next one may pass; meanwhile the
				// reader asks (Get) when it hears nothing.
				_ = announce()
			}
		}
	}()
	var once sync.Once
	var err error
	return &Events{C: ch, dropped: dropped.get, stop: func() error {
		once.Do(func() {
			close(done)
			<-ended
			err = stop()
		})
		return err
	}}, nil
}

type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) set()      { b.v.Store(true) }
func (b *atomicBool) get() bool { return b.v.Load() }
