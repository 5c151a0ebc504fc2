package jobstore

import (
	"context"
	"errors"
	"math/rand/v2"
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
	if m.index.n != 2 || len(m.ring) != 2 {
		t.Fatalf("index %d ring %d, want 2 and 2", m.index.n, len(m.ring))
	}
}

// idIndex against a Go map under random puts and deletes, with hashes
// crowded at both ends of the table so that runs are long and wrap around.
func TestIDIndexMatchesAMap(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	var x idIndex
	want := map[uint64]int{}
	hash := func() uint64 {
		if rng.IntN(2) == 0 {
			return rng.Uint64N(2048) // homes at the table's start
		}
		return ^uint64(0) - rng.Uint64N(2048) // homes at its end, for any size
	}
	const steps = 60_000
	for step := range steps {
		h := hash()
		switch pos := rng.IntN(1 << 20); rng.IntN(3) {
		case 0, 1:
			x.put(h, pos)
			want[h] = pos
		default:
			if p, ok := want[h]; ok {
				x.deleteIfAt(h, p+1) // not its place: kept
				x.deleteIfAt(h, p)
				delete(want, h)
			}
		}
		if step%5000 == 0 || step == steps-1 {
			if x.n != len(want) {
				t.Fatalf("step %d: %d entries, want %d", step, x.n, len(want))
			}
			for h, p := range want {
				if got, ok := x.get(h); !ok || got != p {
					t.Fatalf("step %d: get(%x) = %d, %v; want %d", step, h, got, ok, p)
				}
			}
		}
	}
	for range 10_000 {
		if h := hash(); want[h] == 0 {
			if _, in := want[h]; !in {
				if _, ok := x.get(h); ok {
					t.Fatalf("get(%x) found a hash deleted or never put", h)
				}
			}
		}
	}
}
