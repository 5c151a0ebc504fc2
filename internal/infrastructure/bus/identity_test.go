package bus_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// arrivals records (subject, job id) pairs.
type arrivals struct {
	mu  sync.Mutex
	got map[string]string // job id -> subject
}

func (a *arrivals) add(subject string, p *pb.BusPacket) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.got == nil {
		a.got = make(map[string]string)
	}
	id := p.GetJobResult().GetJobId()
	if id == "" {
		id = p.GetJobRequest().GetJobId()
	}
	a.got[id] = subject
}

func (a *arrivals) subject(id string) (string, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.got[id]
	return s, ok
}

func resultPacket(id, worker string) *pb.BusPacket {
	return wire.JobResultPacket("t-"+id, worker, &pb.JobResult{JobId: id, WorkerId: worker})
}

// ConsumeTree takes the bare subject and the subjects below it, core or
// durable, and says which subject each packet came on.
func TestConsumeTreeDeliversBothWithTheirSubject(t *testing.T) {
	t.Parallel()
	for _, durable := range []bool{false, true} {
		url := natstest.URL(t)
		b := systest.ConnectWith(t, bus.Config{URL: url})
		b.SetDurable(durable)
		var a arrivals
		stop, err := b.ConsumeTree(wire.SubjectResult, "results", func(subject string, p *pb.BusPacket, _ string) error {
			a.add(subject, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = stop() })
		flush(t, b)
		pub := systest.ConnectWith(t, bus.Config{URL: url})
		for id, subject := range map[string]string{"bare": wire.SubjectResult, "named": wire.ResultSubject("w1")} {
			if err := pub.Publish(subject, resultPacket(id, "w1")); err != nil {
				t.Fatal(err)
			}
		}
		flush(t, pub)
		for id, want := range map[string]string{"bare": wire.SubjectResult, "named": "sys.job.result.w1"} {
			systest.Eventually(t, waitFor, fmt.Sprintf("%s result (durable %v)", id, durable), func() bool { _, ok := a.subject(id); return ok })
			if got, _ := a.subject(id); got != want {
				t.Errorf("durable %v: %s result came on %q, want %q", durable, id, got, want)
			}
		}
	}
}

// A results stream made by Consume of the bare subject (before workers
// named themselves) is widened, and what it held is still delivered.
func TestConsumeTreeWidensTheStreamOfConsume(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	b.SetDurable(true)
	stop, err := b.Consume(wire.SubjectResult, "results", func(*pb.BusPacket, string) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	// No consumer runs: the stream keeps it.
	if err := b.Publish(wire.SubjectResult, resultPacket("old", "w0")); err != nil {
		t.Fatal(err)
	}
	flush(t, b)

	var a arrivals
	stop, err = b.ConsumeTree(wire.SubjectResult, "results", func(subject string, p *pb.BusPacket, _ string) error {
		a.add(subject, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	if err := b.Publish(wire.ResultSubject("w1"), resultPacket("new", "w1")); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"old", "new"} {
		systest.Eventually(t, waitFor, fmt.Sprintf("the %s result", id), func() bool { _, ok := a.subject(id); return ok })
	}
	js, err := b.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), bus.StreamName(wire.SubjectResult))
	if err != nil {
		t.Fatal(err)
	}
	if subjects := st.CachedInfo().Config.Subjects; len(subjects) != 2 || subjects[1] != wire.SubjectResults {
		t.Errorf("stream subjects %v, want [%s %s]", subjects, wire.SubjectResult, wire.SubjectResults)
	}
}

func TestSubscribeWithSubject(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := systest.ConnectWith(t, bus.Config{URL: url})
	var a arrivals
	drain, err := b.SubscribeWithSubject("sys.heartbeat.>", "", a.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = drain() })
	flush(t, b)
	if err := b.Publish(wire.WorkerHeartbeatSubject("echo", "w1"), resultPacket("hb", "w1")); err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the packet", func() bool { _, ok := a.subject("hb"); return ok })
	if got, _ := a.subject("hb"); got != "sys.heartbeat.echo.w1" {
		t.Errorf("subject %q", got)
	}
	if _, err := b.SubscribeWithSubject("x", "", nil); err == nil {
		t.Error("nil handler accepted")
	}
	if _, err := b.ConsumeTree("x", "d", nil); err == nil {
		t.Error("nil handler accepted")
	}
}
