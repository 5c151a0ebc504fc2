package scheduler_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func TestValidateTopicAndNaiveStrategy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		topic string
		want  error
	}{
		{"job.echo", nil},
		{"job.code.python", nil},
		{"job.a-b_c", nil},
		{"", scheduler.ErrEmptyTopic},
		{"sys.job.submit", scheduler.ErrInvalidTopic},
		{"sys.job.result", scheduler.ErrInvalidTopic},
		{"sys.destroy", scheduler.ErrInvalidTopic},
		{"echo", scheduler.ErrInvalidTopic},
		{"job", scheduler.ErrInvalidTopic},
		{"job.", scheduler.ErrInvalidTopic},
		{"job.*", scheduler.ErrInvalidTopic},
		{"job.>", scheduler.ErrInvalidTopic},
		{"job.echo.>", scheduler.ErrInvalidTopic},
		{"job..x", scheduler.ErrInvalidTopic},
		{"job.a b", scheduler.ErrInvalidTopic},
		{"job.a\tb", scheduler.ErrInvalidTopic},
		{"job.a\nb", scheduler.ErrInvalidTopic},
	} {
		t.Run(fmt.Sprintf("%q", tc.topic), func(t *testing.T) {
			t.Parallel()
			err := scheduler.ValidateTopic(tc.topic)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ValidateTopic(%q) = %v, want %v", tc.topic, err, tc.want)
			}
			subject, err := scheduler.NewNaiveStrategy().PickSubject(&pb.JobRequest{JobId: "j", Topic: tc.topic}, nil)
			if tc.want == nil {
				if err != nil || subject != tc.topic {
					t.Fatalf("PickSubject = %q, %v; want the topic", subject, err)
				}
			} else if !errors.Is(err, tc.want) || subject != "" {
				t.Fatalf("PickSubject = %q, %v; want %v", subject, err, tc.want)
			}
		})
	}
}

func TestMemoryRegistry(t *testing.T) {
	t.Parallel()
	r := scheduler.NewMemoryRegistry()
	if r.Len() != 0 || len(r.Snapshot()) != 0 {
		t.Fatal("new registry not empty")
	}
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w1", ActiveJobs: 1})
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w2", ActiveJobs: 2})
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w1", ActiveJobs: 7}) // overwrites
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "", ActiveJobs: 9})   // ignored
	r.UpdateHeartbeat(nil)                                          // ignored

	snap := r.Snapshot()
	if r.Len() != 2 || len(snap) != 2 {
		t.Fatalf("Len %d, snapshot %v; want 2 workers", r.Len(), snap)
	}
	if snap["w1"].GetActiveJobs() != 7 || snap["w2"].GetActiveJobs() != 2 {
		t.Errorf("snapshot = %v", snap)
	}
	if _, ok := snap[""]; ok {
		t.Error("heartbeat without worker id stored")
	}

	// The snapshot is a copy: changing it does not change the registry.
	delete(snap, "w1")
	snap["intruder"] = &pb.Heartbeat{WorkerId: "intruder"}
	if again := r.Snapshot(); r.Len() != 2 || again["w1"] == nil || again["intruder"] != nil {
		t.Errorf("changing a snapshot changed the registry: %v", again)
	}
	// And a later update does not show up in an earlier snapshot.
	before := r.Snapshot()
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w3"})
	if len(before) != 2 {
		t.Errorf("an earlier snapshot grew to %v", before)
	}
}

func TestMemoryRegistryConcurrentUse(t *testing.T) {
	t.Parallel()
	r := scheduler.NewMemoryRegistry()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: fmt.Sprintf("w%d", (g*200+i)%50)})
				for range r.Snapshot() {
				}
				_ = r.Len()
			}
		})
	}
	wg.Wait()
	if r.Len() != 50 {
		t.Errorf("Len = %d, want 50", r.Len())
	}
}

// A worker that stops heartbeating leaves the registry after Misses of the
// intervals its heartbeats announce; without an announced interval, the
// design document's 5s is assumed.
func TestMemoryRegistryExpiry(t *testing.T) {
	t.Parallel()
	r := scheduler.NewMemoryRegistry()
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "fast", IntervalMs: 10})
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "doc"}) // no interval: 5s
	start := time.Now()
	systest.Eventually(t, waitLimit, "the silent fast worker to expire", func() bool { _, ok := r.Snapshot()["fast"]; return !ok })
	if gone := time.Since(start); gone < 3*10*time.Millisecond-time.Millisecond {
		t.Errorf("expired after %s, before 3 missed 10ms heartbeats", gone)
	}
	if _, ok := r.Snapshot()["doc"]; !ok || scheduler.DefaultHeartbeatInterval != 5*time.Second {
		t.Error("a worker without an interval expired early")
	}
	if r.Len() != 1 {
		t.Errorf("Len = %d, want 1", r.Len())
	}
	// A heartbeat brings it back.
	r.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "fast", IntervalMs: 10_000})
	if _, ok := r.Snapshot()["fast"]; !ok {
		t.Error("a heartbeat did not bring the worker back")
	}
}

// FuzzValidateTopic holds ValidateTopic's one-pass scan to the rule it
// implements, written the plain way: a job.-prefixed subject whose tokens
// (strings.Split on ".") are neither empty, nor a wildcard, nor hold blanks.
func FuzzValidateTopic(f *testing.F) {
	for _, s := range []string{"job.echo", "job..x", "job.*", "job.a*", "job.>", "job.a b", "job.", "sys.x", "", "job.a.b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		want := topic != "" && strings.HasPrefix(topic, "job.")
		for _, tok := range strings.Split(topic, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
				want = false
			}
		}
		if got := scheduler.ValidateTopic(topic) == nil; got != want {
			t.Fatalf("ValidateTopic(%q) valid = %v, want %v", topic, got, want)
		}
	})
}
