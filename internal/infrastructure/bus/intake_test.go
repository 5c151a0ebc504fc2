package bus_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// counts records how many times each job id was delivered.
type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[string]int)
	}
	c.n[id]++
}

func (c *counts) get(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// An intake stream keeps the messages its consumer acknowledged (no
// removal, no tombstone), bounded by age and size; its durable consumer's
// acknowledgements survive a restart of the consumer and of NATS, so that
// only the message never acknowledged is delivered again.
func TestIntakeRedeliversOnlyWhatWasNotAcknowledged(t *testing.T) {
	t.Parallel()
	srv := natstest.RunRestartable(t)
	b := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	b.SetDurable(true)
	var first counts
	stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, _ string) error {
		id := p.GetJobResult().GetJobId()
		first.add(id)
		if id == "unhandled" {
			return errors.New("not now")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "unhandled"} {
		if err := b.Publish(wire.ResultSubject("w1"), resultPacket(id, "w1")); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, b)
	systest.Eventually(t, waitFor, "the three results", func() bool { return first.get("a") == 1 && first.get("b") == 1 && first.get("unhandled") >= 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	st, err := js.Stream(ctx, bus.StreamName(wire.SubjectResult))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c := info.Config; c.Retention != jetstream.LimitsPolicy || c.MaxAge != bus.IntakeMaxAge || c.MaxBytes != bus.IntakeMaxBytes || c.Discard != jetstream.DiscardOld {
		t.Errorf("stream config: retention %v, max age %v, max bytes %d, discard %v", c.Retention, c.MaxAge, c.MaxBytes, c.Discard)
	}
	if info.State.Msgs != 3 {
		t.Errorf("the stream holds %d messages, want 3 (acknowledged ones are kept)", info.State.Msgs)
	}

	// NATS restarts (same data directory); a new consumer connection gets
	// only the unacknowledged result.
	srv.Shutdown()
	srv.Start(t)
	b2 := systest.ConnectWith(t, bus.Config{URL: srv.URL()})
	b2.SetDurable(true)
	var second counts
	stop, err = b2.ConsumeTree(wire.SubjectResult, "results", func(_ string, p *pb.BusPacket, _ string) error {
		second.add(p.GetJobResult().GetJobId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	systest.Eventually(t, waitFor, "the unacknowledged result again", func() bool { return second.get("unhandled") == 1 })
	time.Sleep(500 * time.Millisecond)
	if second.get("a") != 0 || second.get("b") != 0 {
		t.Errorf("acknowledged results delivered again: a %d, b %d", second.get("a"), second.get("b"))
	}
	if err := b2.Publish(wire.ResultSubject("w1"), resultPacket("c", "w1")); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "a new result", func() bool { return second.get("c") == 1 })
}

// A stream that an earlier version made as a work queue stays one: its
// retention cannot change, and it still works.
func TestIntakeKeepsAWorkQueueStream(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	name := bus.StreamName(wire.SubjectSubmit)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{wire.SubjectSubmit}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	b.SetDurable(true)
	var got counts
	stop, err := b.ConsumeTree(wire.SubjectSubmit, "sched", func(_ string, p *pb.BusPacket, _ string) error {
		got.add(p.GetJobRequest().GetJobId())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	if err := b.Publish(wire.SubjectSubmit, wire.JobRequestPacket("t", "c", &pb.JobRequest{JobId: "j", Topic: "job.x"})); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the submission", func() bool { return got.get("j") == 1 })
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if r := st.CachedInfo().Config.Retention; r != jetstream.WorkQueuePolicy {
		t.Errorf("retention %v, want the work queue kept", r)
	}
	systest.Eventually(t, waitFor, "the work queue to remove the handled submission", func() bool {
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
}
