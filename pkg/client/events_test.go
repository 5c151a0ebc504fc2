package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Watch follows a job by its events: with polling all but off, it still
// sees the job run and complete. Not parallel: it sets Watch's timings.
func TestWatchFollowsEvents(t *testing.T) {
	defer client.SetWatchTimings(time.Hour, time.Hour)()
	g := newGatedHandler()
	env := startSDK(t, g)
	c, ctx := env.Client(), testCtx(t)
	if _, err := c.Submit(ctx, &pb.JobRequest{JobId: "evented", Topic: "job.sdk"}); err != nil {
		t.Fatal(err)
	}
	var states []string
	for j, err := range c.Watch(ctx, "evented") {
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, client.StateName(j.GetState()))
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			close(g.gate("evented"))
		}
	}
	if !slices.Contains(states, "RUNNING") || states[len(states)-1] != "COMPLETED" {
		t.Fatalf("Watch yielded %v, want RUNNING then COMPLETED last", states)
	}
}

// Events delivers the job's changes once subscribed; a tenant-bound client
// subscribes to its tenant's events only.
func TestEventsDeliversChanges(t *testing.T) {
	t.Parallel()
	g := newGatedHandler()
	env := startSDK(t, g)
	ctx := testCtx(t)
	tenantA, err := client.New(env.Conn(), client.Options{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	evA, err := tenantA.Events(ctx, "quick-a")
	if err != nil {
		t.Fatal(err)
	}
	defer evA.Stop()
	evB, err := tenantA.Events(ctx, "quick-b")
	if err != nil {
		t.Fatal(err)
	}
	defer evB.Stop()
	for _, r := range []*pb.JobRequest{{JobId: "quick-b", Topic: "job.sdk", Tenant: "b"}, {JobId: "quick-a", Topic: "job.sdk", Tenant: "a"}} {
		if _, err := env.Client().Submit(ctx, r); err != nil {
			t.Fatal(err)
		}
		if _, err := env.Client().Wait(ctx, r.GetJobId()); err != nil {
			t.Fatal(err)
		}
	}
	for {
		select {
		case j := <-evA.C:
			if j.GetState() == pb.JobState_JOB_STATE_COMPLETED {
				select {
				case j := <-evB.C:
					t.Fatalf("a client of tenant a heard tenant b's job: %v", j)
				default:
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no COMPLETED event for quick-a")
		}
	}
}

// Events announces that it follows the job when it starts, before it
// returns, and again every follow interval until Stop; none after. Not
// parallel: it sets the follow interval.
func TestEventsAnnounceWhileFollowing(t *testing.T) {
	defer client.SetFollowInterval(20 * time.Millisecond)()
	env := startSDK(t, newGatedHandler())
	ctx := testCtx(t)
	announced := make(chan string, 1024)
	rec := natstest.Conn(t, env.URL())
	if _, err := rec.Subscribe(wire.SubjectJobFollow, func(m *nats.Msg) {
		var p pb.BusPacket
		if err := proto.Unmarshal(m.Data, &p); err != nil || p.GetJobQuery() == nil {
			t.Errorf("announcement %q: %v", m.Data, err)
			return
		}
		announced <- p.GetJobQuery().GetJobId()
	}); err != nil {
		t.Fatal(err)
	}
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	c := env.Client()
	evs, err := c.Events(ctx, "announced")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for n < 3 {
		select {
		case id := <-announced:
			if id != "announced" {
				t.Fatalf("announced %q, want the job's id", id)
			}
			n++
		case <-ctx.Done():
			t.Fatalf("%d announcements, want 3 at least", n)
		}
	}
	evs.Stop()
	// Stop waits for the announcer: a marker sent after it on the same
	// connection arrives after every announcement it made.
	marker, err := proto.Marshal(wire.FollowPacket("test", "marker"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Conn().Publish(wire.SubjectJobFollow, marker); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case id := <-announced:
			if id == "marker" {
				select {
				case id := <-announced:
					t.Fatalf("announced %q after Stop", id)
				default:
				}
				return
			}
		case <-ctx.Done():
			t.Fatal("no marker")
		}
	}
}

// A watch asks again after a second of silence, every second, however long
// the silence lasts: a job RUNNING for an hour with no event is asked about
// once a second, not every 100ms (as a watch that had heard no event since
// its first answer did). It polls every 100ms only while it cannot hear
// events or has no answer yet.
func TestWatchAsksOnceASecondWhileSilent(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		answered, subscribed bool
		want                 time.Duration
	}{
		{true, true, time.Second},
		{false, true, 100 * time.Millisecond},
		{true, false, 100 * time.Millisecond},
		{false, false, 100 * time.Millisecond},
	} {
		if got := client.NextAsk(c.answered, c.subscribed); got != c.want {
			t.Errorf("NextAsk(answered %v, subscribed %v) = %s, want %s", c.answered, c.subscribed, got, c.want)
		}
	}
}

// A watch that hears no event still sees every change and the end: it
// asks after each silence. So does a client from before follow
// announcements next to a scheduler that publishes the events of followed
// jobs only, and a watch whose announcement was lost. Here the events go
// where the watcher does not listen (its tenant is not the job's). Not
// parallel: it sets Watch's timings.
func TestWatchWithoutEventsSeesTheEnd(t *testing.T) {
	defer client.SetWatchTimings(10*time.Millisecond, 50*time.Millisecond)()
	g := newGatedHandler()
	env := startSDK(t, g)
	ctx := testCtx(t)
	deaf, err := client.New(env.Conn(), client.Options{Tenant: "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client().Submit(ctx, &pb.JobRequest{JobId: "unheard", Topic: "job.sdk"}); err != nil {
		t.Fatal(err)
	}
	var states []string
	for j, err := range deaf.Watch(ctx, "unheard") {
		if err != nil {
			t.Fatal(err)
		}
		states = append(states, client.StateName(j.GetState()))
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			close(g.gate("unheard"))
		}
	}
	if !slices.Contains(states, "RUNNING") || states[len(states)-1] != "COMPLETED" {
		t.Fatalf("Watch yielded %v, want RUNNING then COMPLETED last", states)
	}
}
