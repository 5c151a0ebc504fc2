package jobstore

import (
	"context"
	"errors"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Two finished jobs whose ids hash alike: the older is forgotten early (not
// found, its id free again), the newer is found, and retiring the older's
// place in the ring leaves the newer's index entry alone.
func TestMemoryIndexCollisionForgetsTheOlderJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m := NewMemoryRetaining(2)
	m.testHash = func(id string) uint64 {
		if id == "a" || id == "b" {
			return 1
		}
		return uint64(len(id)) + 100
	}
	finish := func(id string) {
		t.Helper()
		rec, err := m.Create(ctx, &pb.JobInfo{JobId: id, State: lifecycle.Dispatched})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Update(ctx, rec, &pb.JobInfo{JobId: id, State: lifecycle.Completed}); err != nil {
			t.Fatal(err)
		}
	}
	found := func(id string) bool {
		t.Helper()
		_, err := m.Get(ctx, id)
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	finish("a")
	finish("b") // takes a's hash
	if found("a") || !found("b") {
		t.Fatalf("after the collision: a found %v, b found %v; want a forgotten, b kept", found("a"), found("b"))
	}
	finish("ccc") // the ring (2) is full: a's place is retired
	if !found("b") || !found("ccc") {
		t.Fatalf("after retiring a's place: b found %v, ccc found %v; want both", found("b"), found("ccc"))
	}
	finish("dddd") // now b's place is retired
	if found("b") || !found("ccc") || !found("dddd") {
		t.Fatalf("after retiring b: b %v ccc %v dddd %v; want false true true", found("b"), found("ccc"), found("dddd"))
	}
	if len(m.index) != 2 || len(m.ring) != 2 {
		t.Fatalf("index %d ring %d, want 2 and 2", len(m.index), len(m.ring))
	}
}
