package client_test

import (
	"testing"
	"time"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// AllEvents delivers every job's changes; a tenant-bound client hears its
// tenant's only.
func TestAllEventsByTenant(t *testing.T) {
	t.Parallel()
	g := newGatedHandler()
	env := startSDK(t, g)
	ctx := testCtx(t)
	all, err := env.Client().AllEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer all.Stop()
	tenantA, err := client.New(env.Conn(), client.Options{Tenant: "a"})
	if err != nil {
		t.Fatal(err)
	}
	onlyA, err := tenantA.AllEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer onlyA.Stop()
	// b's job first: a's stream reaching a's COMPLETED without any of b's
	// events on the way shows it filters.
	for _, r := range []*pb.JobRequest{{JobId: "quick-all-b", Topic: "job.sdk", Tenant: "b"}, {JobId: "quick-all-a", Topic: "job.sdk", Tenant: "a"}} {
		if _, err := env.Client().Submit(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// The two jobs run at once, so either may complete first: what a
	// stream completed is remembered while waiting for another job.
	completed := map[*client.Events]map[string]bool{all: {}, onlyA: {}}
	until := func(evs *client.Events, id string, tenant string) {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for !completed[evs][id] {
			select {
			case j := <-evs.C:
				if tenant != "" && j.GetRequest().GetTenant() != tenant {
					t.Fatalf("event of job %s of tenant %q on tenant %s's subscription", j.GetJobId(), j.GetRequest().GetTenant(), tenant)
				}
				if j.GetState() == pb.JobState_JOB_STATE_COMPLETED {
					completed[evs][j.GetJobId()] = true
				}
			case <-timeout:
				t.Fatalf("no COMPLETED event of %s", id)
			}
		}
	}
	until(all, "quick-all-b", "")
	until(all, "quick-all-a", "")
	until(onlyA, "quick-all-a", "a")
	if all.Dropped() || onlyA.Dropped() {
		t.Error("events dropped")
	}
	dotted, err := client.New(env.Conn(), client.Options{Tenant: "a.b"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dotted.AllEvents(ctx); err == nil {
		t.Error("a tenant with a dot has no event subject: want an error")
	}
}
