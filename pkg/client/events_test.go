package client_test

import (
	"slices"
	"testing"
	"time"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
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
