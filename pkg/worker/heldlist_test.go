package worker

import "testing"

// TestHeldListAddRemove holds and releases jobs in every order, including
// one job held twice (two attempts) and a release of a job never held.
func TestHeldListAddRemove(t *testing.T) {
	t.Parallel()
	ids := func(l *heldList) []string {
		var out []string
		for h := l.head; h != nil; h = h.next {
			out = append(out, h.id)
		}
		if len(out) != l.n {
			t.Fatalf("list walks %d jobs, counts %d", len(out), l.n)
		}
		return out
	}
	var l heldList
	a, b, c, a2 := &heldJob{id: "a"}, &heldJob{id: "b"}, &heldJob{id: "c"}, &heldJob{id: "a", attempt: 2}
	for _, h := range []*heldJob{a, b, c, a2} {
		l.add(h)
	}
	if got := ids(&l); len(got) != 4 {
		t.Fatalf("held %v", got)
	}
	l.remove(b)  // middle
	l.remove(a2) // head
	l.remove(&heldJob{id: "never"})
	if got := ids(&l); len(got) != 2 || got[0] != "c" || got[1] != "a" {
		t.Fatalf("after releases held %v, want [c a]", got)
	}
	l.remove(a) // tail
	l.remove(c) // last
	if got := ids(&l); len(got) != 0 || l.head != nil {
		t.Fatalf("after releasing all held %v", got)
	}
}
