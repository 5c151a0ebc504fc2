package client_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

const waitFor = 10 * time.Second

func connect(t testing.TB, url string) *bus.NatsBus {
	t.Helper()
	return systest.Connect(t, url, "")
}

func flush(t testing.TB, b *bus.NatsBus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// responder answers every submission on its own connection: first with the
// result of some other job, then with the submitted job's own result.
func responder(t *testing.T, url string) (seen func() []*pb.BusPacket) {
	t.Helper()
	b := connect(t, url)
	var mu sync.Mutex
	var subs []*pb.BusPacket
	_, err := b.Subscribe(wire.SubjectSubmit, "", func(p *pb.BusPacket) {
		mu.Lock()
		subs = append(subs, p)
		mu.Unlock()
		req := p.GetJobRequest()
		other := &pb.JobResult{JobId: "someone-else", Status: pb.JobStatus_JOB_STATUS_FAILED, WorkerId: "w"}
		mine := &pb.JobResult{JobId: req.GetJobId(), Status: pb.JobStatus_JOB_STATUS_COMPLETED, WorkerId: "w", ResultPtr: "memory://echo/" + req.GetJobId()}
		_ = b.Publish(wire.SubjectResult, wire.JobResultPacket("other-trace", "w", other))
		_ = b.Publish(wire.SubjectResult, wire.JobResultPacket(p.GetTraceId(), "w", mine))
	})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, b)
	return func() []*pb.BusPacket {
		mu.Lock()
		defer mu.Unlock()
		return append([]*pb.BusPacket(nil), subs...)
	}
}

func TestSubmitAndWaitGetsItsOwnResult(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	seen := responder(t, url)
	b := connect(t, url)

	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	req := &pb.JobRequest{JobId: "mine", Topic: "job.echo"}
	sub, p, err := client.SubmitAndWait(ctx, b, "client-1", "trace-mine", req)
	if err != nil {
		t.Fatal(err)
	}
	if sub.JobID != "mine" || sub.TraceID != "trace-mine" {
		t.Errorf("submission = %+v", sub)
	}
	res := p.GetJobResult()
	if res.GetJobId() != "mine" || res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || p.GetTraceId() != "trace-mine" {
		t.Errorf("result = %v, want the submitted job's", p)
	}
	got := seen()
	if len(got) != 1 || got[0].GetSenderId() != "client-1" || got[0].GetJobRequest().GetTopic() != "job.echo" {
		t.Errorf("submissions = %v", got)
	}
}

func TestSubmitAndWaitFillsIDs(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	responder(t, url)
	b := connect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sub, p, err := client.SubmitAndWait(ctx, b, "client-1", "", &pb.JobRequest{Topic: "job.echo"})
	if err != nil {
		t.Fatal(err)
	}
	if sub.JobID == "" || sub.TraceID == "" {
		t.Fatalf("submission = %+v, want generated ids", sub)
	}
	if p.GetJobResult().GetJobId() != sub.JobID || p.GetTraceId() != sub.TraceID {
		t.Errorf("result %v for submission %+v", p, sub)
	}
	// Concurrent waits on one connection each get their own result.
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			sub, p, err := client.SubmitAndWait(ctx, b, "client-1", "", &pb.JobRequest{Topic: "job.echo"})
			if err != nil {
				t.Error(err)
				return
			}
			if p.GetJobResult().GetJobId() != sub.JobID {
				t.Errorf("job %s got result of %s", sub.JobID, p.GetJobResult().GetJobId())
			}
		})
	}
	wg.Wait()
}

func TestSubmitAndWaitTimesOut(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := connect(t, url)
	// A result for another job arrives; still nothing for ours.
	other := connect(t, url)
	_, err := other.Subscribe(wire.SubjectSubmit, "", func(*pb.BusPacket) {
		_ = other.Publish(wire.SubjectResult, wire.JobResultPacket("x", "w", &pb.JobResult{JobId: "not-yours"}))
	})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, other)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	sub, p, err := client.SubmitAndWait(ctx, b, "c", "", &pb.JobRequest{JobId: "lonely", Topic: "job.echo"})
	if !errors.Is(err, client.ErrNoResult) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("SubmitAndWait = %v, want ErrNoResult wrapping the deadline", err)
	}
	if p != nil || sub.JobID != "lonely" {
		t.Errorf("submission %+v, packet %v", sub, p)
	}
}

func TestSubmit(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	b := connect(t, url)
	obs := connect(t, url)
	got := make(chan *pb.BusPacket, 1)
	if _, err := obs.Subscribe(wire.SubjectSubmit, "", func(p *pb.BusPacket) { got <- p }); err != nil {
		t.Fatal(err)
	}
	flush(t, obs)
	sub, err := client.Submit(b, "sender", "", &pb.JobRequest{Topic: "job.echo"})
	if err != nil || sub.JobID == "" || sub.TraceID == "" {
		t.Fatalf("Submit = %+v, %v", sub, err)
	}
	select {
	case p := <-got:
		if p.GetTraceId() != sub.TraceID || p.GetJobRequest().GetJobId() != sub.JobID || p.GetSenderId() != "sender" {
			t.Errorf("published %v for %+v", p, sub)
		}
	case <-time.After(waitFor):
		t.Fatal("nothing published on sys.job.submit")
	}
}

func TestSubmitPublishError(t *testing.T) {
	t.Parallel()
	b, err := bus.Connect(bus.Config{URL: natstest.URL(t), MaxPacketBytes: 64, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	big := &pb.JobRequest{Topic: "job.echo", ContextPtr: string(make([]byte, 200))}
	if _, err := client.Submit(b, "s", "", big); !errors.Is(err, bus.ErrTooLarge) {
		t.Fatalf("Submit(oversize) = %v, want ErrTooLarge", err)
	}
}
