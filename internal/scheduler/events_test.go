package scheduler

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// A job's event carries the job as written, without its inline payload,
// and leaves the written job as it was: with a payload the event encodes a
// copy, without one the written job itself.
func TestJobEventLeavesOutThePayloadOnly(t *testing.T) {
	t.Parallel()
	for _, payload := range [][]byte{nil, []byte("inline bytes")} {
		fb := &eventBus{}
		log := slog.New(slog.DiscardHandler)
		fl := newFollows(time.Minute, 10, log, &counters{})
		fl.follow("j1", time.Now())
		je := &jobEvents{bus: fb, id: "sched-1", log: log, follows: fl}
		next := &pb.JobInfo{
			JobId: "j1", State: lifecycle.Dispatched, Attempt: 1, WorkerId: "w1", TraceId: "t1",
			Request: &pb.JobRequest{JobId: "j1", Topic: "job.echo", Tenant: "acme", ContextPtr: "ctx", Payload: payload},
		}
		written := proto.CloneOf(next)
		je.publish(nil, next)
		je.publish(next, next) // nothing changed: no event

		if !proto.Equal(next, written) {
			t.Fatalf("payload %q: the written job was edited: %v", payload, next)
		}
		got := fb.published
		if len(got) != 1 {
			t.Fatalf("payload %q: %d events, want 1", payload, len(got))
		}
		if want, _ := wire.JobEventSubject("acme", "j1"); got[0].subject != want {
			t.Fatalf("subject %q, want %q", got[0].subject, want)
		}
		jobs := got[0].packet.GetJobAnswer().GetJobs()
		if len(jobs) != 1 {
			t.Fatalf("payload %q: event of %d jobs", payload, len(jobs))
		}
		want := proto.CloneOf(written)
		want.Request.Payload = nil
		if !proto.Equal(jobs[0], want) {
			t.Fatalf("payload %q: event job %v, want %v", payload, jobs[0], want)
		}
		if p := got[0].packet; p.GetSenderId() != "sched-1" || p.GetTraceId() != "t1" || !p.GetJobAnswer().GetOk() {
			t.Fatalf("payload %q: packet %v", payload, p)
		}
	}
}

// A job nobody follows publishes no event; a followed one does, until its
// follow ends; following every job publishes every job's.
func TestJobEventsOnlyWhileFollowed(t *testing.T) {
	t.Parallel()
	fb := &eventBus{}
	log := slog.New(slog.DiscardHandler)
	fl := newFollows(time.Hour, 10, log, &counters{})
	je := &jobEvents{bus: fb, id: "sched-1", log: log, follows: fl}
	job := func(id string, state pb.JobState) *pb.JobInfo {
		return &pb.JobInfo{JobId: id, State: state, Request: &pb.JobRequest{JobId: id, Topic: "job.echo"}}
	}
	events := func() []string {
		var ids []string
		for _, p := range fb.published {
			ids = append(ids, p.packet.GetJobAnswer().GetJobs()[0].GetJobId())
		}
		fb.published = nil
		return ids
	}
	je.publish(nil, job("a", lifecycle.Pending))
	if got := events(); len(got) != 0 {
		t.Fatalf("nobody follows: events of %v", got)
	}
	fl.handleFollow(wire.FollowPacket("c1", "a"))
	je.publish(nil, job("a", lifecycle.Pending))
	je.publish(nil, job("b", lifecycle.Pending))
	if got := events(); len(got) != 1 || got[0] != "a" {
		t.Fatalf("a followed: events of %v, want [a]", got)
	}
	fl.handleFollow(wire.FollowPacket("c1", ""))
	je.publish(nil, job("b", lifecycle.Pending))
	if got := events(); len(got) != 1 || got[0] != "b" {
		t.Fatalf("every job followed: events of %v, want [b]", got)
	}

	// Past the ttl, both follows end, and prune forgets them.
	later := time.Now().Add(2 * time.Hour)
	fl.prune(later)
	if fl.all.Load() != 0 || fl.count.Load() != 0 || len(fl.jobs) != 0 {
		t.Fatalf("pruned past the ttl: all %d, %d jobs", fl.all.Load(), len(fl.jobs))
	}
	je.publish(nil, job("a", lifecycle.Pending))
	if got := events(); len(got) != 0 {
		t.Fatalf("follows ended: events of %v", got)
	}
}

// A follow ends ttl after its announcement, even before it is pruned.
func TestFollowExpires(t *testing.T) {
	t.Parallel()
	fl := newFollows(time.Hour, 10, slog.New(slog.DiscardHandler), &counters{})
	fl.follow("a", time.Now().Add(-2*time.Hour))
	fl.follow("", time.Now().Add(-2*time.Hour))
	if fl.followed("a") {
		t.Fatal("a followed past its ttl")
	}
	fl.follow("a", time.Now())
	if !fl.followed("a") || fl.followed("b") {
		t.Fatalf("a followed %v, b followed %v: want true, false", fl.followed("a"), fl.followed("b"))
	}
}

// Beyond max jobs followed one by one, an announcement follows every job
// instead, counted; once the ttl ends, the jobs are pruned and the map
// takes new ones again.
func TestFollowsBounded(t *testing.T) {
	t.Parallel()
	stats := &counters{}
	fl := newFollows(time.Hour, 3, slog.New(slog.DiscardHandler), stats)
	now := time.Now()
	for _, id := range []string{"a", "b", "c", "a"} {
		fl.follow(id, now)
	}
	if fl.followed("z") || stats.followOverflows.Load() != 0 {
		t.Fatalf("3 jobs followed, max 3: z followed %v, overflows %d", fl.followed("z"), stats.followOverflows.Load())
	}
	fl.follow("d", now)
	if len(fl.jobs) != 3 || !fl.followed("z") || stats.followOverflows.Load() != 1 {
		t.Fatalf("a 4th job over max 3: %d jobs, z followed %v, overflows %d: want 3, true, 1",
			len(fl.jobs), fl.followed("z"), stats.followOverflows.Load())
	}
	// While full, an announcement does not scan the jobs again before half
	// a ttl has passed since the last scan.
	scanned := fl.nextPrune
	fl.follow("f", now.Add(time.Minute))
	if fl.nextPrune != scanned || stats.followOverflows.Load() != 2 {
		t.Fatalf("a 5th job a minute later: pruned again (next prune %d, was %d), overflows %d: want no scan, 2",
			fl.nextPrune, scanned, stats.followOverflows.Load())
	}
	later := now.Add(2 * time.Hour)
	fl.follow("e", later) // the expired are pruned to make room
	if len(fl.jobs) != 1 || stats.followOverflows.Load() != 2 {
		t.Fatalf("after the ttl: %d jobs, overflows %d: want 1, 2", len(fl.jobs), stats.followOverflows.Load())
	}
}

// Announcements that are not a job query, or name an invalid job id, are
// counted and follow nothing.
func TestFollowRefusesMalformed(t *testing.T) {
	t.Parallel()
	stats := &counters{}
	fl := newFollows(time.Hour, 10, slog.New(slog.DiscardHandler), stats)
	fl.handleFollow(&pb.BusPacket{})
	fl.handleFollow(wire.FollowPacket("c1", "bad id with spaces"))
	fl.handleFollow(wire.FollowPacket("c1", strings.Repeat("x", MaxJobIDLength+1)))
	if got := stats.invalidPackets.Load(); got != 3 {
		t.Fatalf("invalid packets %d, want 3", got)
	}
	if fl.all.Load() != 0 || len(fl.jobs) != 0 {
		t.Fatalf("malformed announcements followed: all %d, jobs %v", fl.all.Load(), fl.jobs)
	}
}

// No encoded announcement makes handleFollow panic, or follow an invalid
// job id.
func FuzzHandleFollow(f *testing.F) {
	for _, p := range []*pb.BusPacket{wire.FollowPacket("c", "j1"), wire.FollowPacket("c", ""), {}} {
		b, _ := proto.Marshal(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var p pb.BusPacket
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		fl := newFollows(time.Hour, 2, slog.New(slog.DiscardHandler), &counters{})
		fl.handleFollow(&p)
		for id := range fl.jobs {
			if err := validJobID("job_id", id); err != nil {
				t.Fatalf("followed an invalid job id: %v", err)
			}
		}
	})
}

// eventBus keeps what is published, encoded and decoded again as the bus
// would: the packet and the subject's bytes are reused once Publish returns.
type eventBus struct {
	Bus       // only Publish is called
	published []eventPublished
}

type eventPublished struct {
	subject string
	packet  *pb.BusPacket
}

func (b *eventBus) Publish(subject string, p *pb.BusPacket) error {
	data, err := proto.Marshal(p)
	if err != nil {
		return err
	}
	var got pb.BusPacket
	if err := proto.Unmarshal(data, &got); err != nil {
		return err
	}
	b.published = append(b.published, eventPublished{subject: strings.Clone(subject), packet: &got})
	return nil
}
