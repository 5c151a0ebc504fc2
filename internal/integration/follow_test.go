package integration_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// announce publishes that the connection follows jobID ("": every job),
// once, as a raw NATS client would.
func announce(t testing.TB, nc *nats.Conn, jobID string) {
	t.Helper()
	data, err := proto.Marshal(wire.FollowPacket("integration-follower", jobID))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(wire.SubjectJobFollow, data); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

// eventsOf are the states of jobID's events the recorder saw, in order.
func eventsOf(t testing.TB, r *recorder, jobID string) []pb.JobState {
	t.Helper()
	var states []pb.JobState
	for _, m := range r.all() {
		if jobs := decode(t, m).GetJobAnswer().GetJobs(); len(jobs) == 1 && jobs[0].GetJobId() == jobID {
			states = append(states, jobs[0].GetState())
		}
	}
	return states
}

func completedEvent(t testing.TB, r *recorder, jobID string) func() bool {
	return func() bool {
		states := eventsOf(t, r, jobID)
		return len(states) > 0 && states[len(states)-1] == lifecycle.Completed
	}
}

// run submits req and waits until the scheduler's store has it COMPLETED.
func run(t *testing.T, cl *client.Client, s *sched, id string) {
	t.Helper()
	if _, err := cl.Submit(ctxFor(t), &pb.JobRequest{JobId: id, Topic: "job.echo"}); err != nil {
		t.Fatal(err)
	}
	s.waitState(t, id, lifecycle.Completed)
}

// A job nobody follows publishes no event, while a followed job's events
// arrive: the followed job, run after the other has completed, is the
// barrier (the scheduler publishes on one connection, delivered in order).
// Following every job publishes every job's events.
func TestEventsOnlyWhileFollowed(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	events, nc := record(t, url, wire.SubjectJobEvents)
	s := startScheduler(t, url, "sched-follow", config.StoreMemory)
	w := startWorker(t, url, 20*time.Millisecond, nil)
	waitRegistered(t, s, w.w.ID())
	cl := systest.Client(t, systest.Connect(t, url, "client"), client.Options{})

	run(t, cl, s, "unfollowed")
	announce(t, nc, "followed")
	systest.Eventually(t, waitFor, "the announcement to be heard", func() bool { return s.engine.Stats().Follows == 1 })
	run(t, cl, s, "followed")
	systest.Eventually(t, waitFor, "followed's COMPLETED event", completedEvent(t, events, "followed"))
	if got := eventsOf(t, events, "unfollowed"); len(got) != 0 {
		t.Fatalf("a job nobody follows published events %v", got)
	}

	announce(t, nc, "")
	systest.Eventually(t, waitFor, "the announcement to be heard", func() bool { return s.engine.Stats().Follows == 2 })
	for i := range 3 {
		run(t, cl, s, fmt.Sprint("any-", i))
	}
	for i := range 3 {
		systest.Eventually(t, waitFor, fmt.Sprintf("any-%d's COMPLETED event", i), completedEvent(t, events, fmt.Sprint("any-", i)))
	}
}

// A follow lasts the scheduler's FollowTTL from its announcement: a job
// that changes after it publishes nothing.
func TestFollowExpires(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const ttl = time.Second
	url := natstest.URL(t)
	events, nc := record(t, url, wire.SubjectJobEvents)
	s := startScheduler(t, url, "sched-ttl", config.StoreMemory, func(c *scheduler.Config) { c.FollowTTL = ttl })
	w := startWorker(t, url, 20*time.Millisecond, nil)
	waitRegistered(t, s, w.w.ID())
	cl := systest.Client(t, systest.Connect(t, url, "client"), client.Options{})

	announce(t, nc, "")
	announced := time.Now()
	systest.Eventually(t, waitFor, "the announcement to be heard", func() bool { return s.engine.Stats().Follows == 1 })
	run(t, cl, s, "early")
	if time.Since(announced) < ttl {
		systest.Eventually(t, waitFor, "early's COMPLETED event", completedEvent(t, events, "early"))
	}
	// Waiting out the ttl is what is tested: there is nothing to poll.
	time.Sleep(time.Until(announced.Add(ttl + 50*time.Millisecond)))
	run(t, cl, s, "late")
	announce(t, nc, "barrier")
	systest.Eventually(t, waitFor, "the barrier's announcement to be heard", func() bool { return s.engine.Stats().Follows == 2 })
	run(t, cl, s, "barrier")
	systest.Eventually(t, waitFor, "barrier's COMPLETED event", completedEvent(t, events, "barrier"))
	if got := eventsOf(t, events, "late"); len(got) != 0 {
		t.Fatalf("a job changed after its follow expired published events %v", got)
	}
}

// Every replica hears every announcement (no queue group): whichever
// writes the job publishes its events.
func TestFollowReachesEveryReplica(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	events, nc := record(t, url, wire.SubjectJobEvents)
	a := startScheduler(t, url, "sched-follow-a", config.StoreJetStream)
	b := startScheduler(t, url, "sched-follow-b", config.StoreJetStream)
	w := startWorker(t, url, 20*time.Millisecond, nil)
	waitRegistered(t, a, w.w.ID())
	waitRegistered(t, b, w.w.ID())
	cl := systest.Client(t, systest.Connect(t, url, "client"), client.Options{})

	announce(t, nc, "replicated")
	systest.Eventually(t, waitFor, "both replicas to hear the announcement", func() bool {
		return a.engine.Stats().Follows == 1 && b.engine.Stats().Follows == 1
	})
	run(t, cl, a, "replicated")
	systest.Eventually(t, waitFor, "replicated's COMPLETED event", completedEvent(t, events, "replicated"))
}
