package wire

import "testing"

func TestJobEventSubject(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		tenant, id, want string
		ok               bool
	}{
		{"", "j1", "sys.job.event._.j1", true},
		{"a", "j1", "sys.job.event.a.j1", true},
		{"a", "x.y", "sys.job.event.a.x.y", true},
		{"a.b", "j1", "", false}, // would fall under tenant a's events
		{"_", "j1", "", false},   // would read as no tenant
		{"a*", "j1", "", false},
		{"a b", "j1", "", false},
		{"a>", "j1", "", false},
		{"a", "", "", false},
		{"a", "x..y", "", false},
	} {
		got, ok := JobEventSubject(c.tenant, c.id)
		if got != c.want || ok != c.ok {
			t.Errorf("JobEventSubject(%q, %q) = %q, %v; want %q, %v", c.tenant, c.id, got, ok, c.want, c.ok)
		}
	}
	if got := TenantJobEvents(""); got != "sys.job.event._.>" {
		t.Errorf("TenantJobEvents(\"\") = %q", got)
	}
	if got := JobEventsOf("j1"); got != "sys.job.event.*.j1" {
		t.Errorf("JobEventsOf = %q", got)
	}
}

// A follow announcement is a JobQuery naming the job, or none for every
// job, signed by its sender.
func TestFollowPacket(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"j1", ""} {
		p := FollowPacket("c1", id)
		if q := p.GetJobQuery(); q == nil || q.GetJobId() != id || p.GetSenderId() != "c1" || p.GetProtocolVersion() != ProtocolVersion {
			t.Fatalf("FollowPacket(c1, %q) = %v", id, p)
		}
	}
	if FollowInterval*3 != FollowTTL {
		t.Fatalf("FollowInterval %v, FollowTTL %v: a follower announces three times a TTL", FollowInterval, FollowTTL)
	}
}
