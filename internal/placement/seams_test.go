package placement_test

import (
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// A ListOnly registry is offered to no engine for placement; both kinds
// leave stopped workers out of a snapshot.
func TestListOnlyRegistry(t *testing.T) {
	now := time.Unix(1000, 0)
	clock := func() time.Time { return now }
	plain := placement.NewRegistry(placement.RegistryOptions{Now: clock})
	listing := placement.NewRegistry(placement.RegistryOptions{Now: clock, ListOnly: true})
	if plain.PlacementRegistry() != plain || listing.PlacementRegistry() != nil {
		t.Fatalf("PlacementRegistry: plain %p (want itself %p), list-only %p (want nil)", plain.PlacementRegistry(), plain, listing.PlacementRegistry())
	}
	for _, r := range []*placement.Registry{plain, listing} {
		r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w-1", IntervalMs: 1000})
	}
	now = now.Add(10 * time.Second) // three intervals and more
	if len(plain.Snapshot()) != 0 || len(listing.Snapshot()) != 0 {
		t.Fatal("a stopped worker is still live")
	}
}

// Naive is the design document's SchedulingStrategy too: the topic, checked.
func TestNaivePickSubject(t *testing.T) {
	var n placement.Naive
	if s, err := n.PickSubject(&pb.JobRequest{Topic: "job.echo"}, nil); err != nil || s != "job.echo" {
		t.Fatalf("PickSubject(job.echo) = %q, %v", s, err)
	}
	for _, bad := range []string{"", "sys.job.submit", "job.*", "job..x"} {
		if _, err := n.PickSubject(&pb.JobRequest{Topic: bad}, nil); err == nil {
			t.Errorf("PickSubject(%q) accepted", bad)
		}
	}
	if !n.WorkerBlind() {
		t.Error("Naive is not WorkerBlind")
	}
}
