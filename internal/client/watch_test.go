package client_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// A scheduler that takes a query and never answers it (it died holding it)
// must not stall a watch: each poll has its own bound, and the next one is
// answered.
func TestWatchOutlivesAnUnansweredQuery(t *testing.T) {
	defer client.SetWatchPollTimeout(200 * time.Millisecond)()
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var queries atomic.Int32
	_, err = nc.Subscribe(wire.SubjectQuery, func(m *nats.Msg) {
		if queries.Add(1) == 1 {
			return // swallowed
		}
		p := wire.NewPacket("", "fake-scheduler")
		p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{
			{JobId: "j", State: lifecycle.Completed, Attempt: 1},
		}}}
		data, err := proto.Marshal(p)
		if err != nil {
			t.Error(err)
			return
		}
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	c := client.New(connect(t, url), "watcher")
	// The watch's own context has no deadline to rescue it; the test's
	// bound only keeps a broken Watch from hanging the run.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	job, err := c.Watch(ctx, "j", 10*time.Millisecond, nil)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if job.GetState() != lifecycle.Completed {
		t.Fatalf("Watch ended %s, want COMPLETED", lifecycle.Name(job.GetState()))
	}
	if n := queries.Load(); n < 2 {
		t.Fatalf("%d queries, want a second after the unanswered one", n)
	}
}

// A watch that is cancelled while a query is in flight still returns the
// last state it saw.
func TestWatchCancelledKeepsLastState(t *testing.T) {
	url := natstest.URL(t)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var queries atomic.Int32
	_, err = nc.Subscribe(wire.SubjectQuery, func(m *nats.Msg) {
		if queries.Add(1) > 1 {
			return // later queries hang
		}
		p := wire.NewPacket("", "fake-scheduler")
		p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{
			{JobId: "j", State: lifecycle.Pending, PendingReason: "no worker"},
		}}}
		data, _ := proto.Marshal(p)
		_ = m.Respond(data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	c := client.New(connect(t, url), "watcher")
	ctx, cancel := context.WithCancel(context.Background())
	seen := make(chan struct{})
	go func() {
		<-seen
		time.Sleep(50 * time.Millisecond) // the next query is in flight
		cancel()
	}()
	job, err := c.Watch(ctx, "j", 10*time.Millisecond, func(*pb.JobInfo) { close(seen) })
	if err == nil {
		t.Fatal("Watch returned no error after its context was cancelled")
	}
	if job.GetState() != lifecycle.Pending || job.GetPendingReason() != "no worker" {
		t.Fatalf("Watch returned %v, want the PENDING job it saw", job)
	}
}
