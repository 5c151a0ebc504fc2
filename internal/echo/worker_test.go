package echo_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

const waitFor = 10 * time.Second

// TestHandlerHonoursDeadline: at a deadline the handler stops, with the
// context's error.
func TestHandlerHonoursDeadline(t *testing.T) {
	t.Parallel()
	h := echo.Handler(echo.WorkTime{Min: time.Hour, Max: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := h(ctx, worker.NewJob(&pb.JobRequest{JobId: "slow"}))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("handler past its deadline = %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(waitFor):
		t.Fatal("handler ignored its deadline")
	}
}

// The echo worker as cortex-worker-echo runs it: the echo handler in the
// worker runtime, on a real NATS server.
func TestEchoWorkerOverNATS(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	connect := func() *bus.NatsBus {
		b, err := bus.Connect(bus.Config{URL: url, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	client, workerBus := connect(), connect()

	var mu sync.Mutex
	results := map[string]*pb.JobResult{}
	if _, err := client.Subscribe(wire.SubjectResult, "", func(p *pb.BusPacket) {
		mu.Lock()
		results[p.GetJobResult().GetJobId()] = p.GetJobResult()
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var once sync.Once
	if _, err := client.Subscribe(wire.HeartbeatSubject(echo.Kind), "", func(*pb.BusPacket) { once.Do(func() { close(ready) }) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := client.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Jobs take an hour unless their timeout ends them; "quick" is marked
	// for no work by its own worker below.
	slow := echo.Handler(echo.WorkTime{Min: time.Hour, Max: time.Hour})
	quick := echo.Handler(echo.WorkTime{})
	w, err := worker.New(workerBus.Conn(), worker.Config{
		Kind: echo.Kind, Logger: slog.New(slog.DiscardHandler),
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			if job.ID() == "quick" {
				return quick(ctx, job)
			}
			return slow(ctx, job)
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-ran:
		case <-time.After(30 * time.Second):
			t.Error("worker did not stop")
		}
	})
	select {
	case <-ready:
	case <-time.After(waitFor):
		t.Fatal("no heartbeat from the echo worker")
	}

	publish := func(req *pb.JobRequest) {
		t.Helper()
		if err := client.Publish(wire.JobSubjectPrefix+echo.Kind, wire.JobRequestPacket("trace-"+req.GetJobId(), "test", req)); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(jobID string) *pb.JobResult {
		t.Helper()
		var r *pb.JobResult
		systest.Eventually(t, waitFor, "the result of "+jobID, func() bool {
			mu.Lock()
			defer mu.Unlock()
			r = results[jobID]
			return r != nil
		})
		return r
	}

	// The design document's sender: a job on job.echo, attempt 0.
	publish(&pb.JobRequest{JobId: "quick", Topic: "job.echo"})
	if r := wait("quick"); r.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || r.GetResultPtr() != "memory://echo/quick" || r.GetWorkerId() != w.ID() {
		t.Errorf("echo result = %v", r)
	}
	// A job past its timeout is stopped and reported TIMEOUT.
	publish(&pb.JobRequest{JobId: "overdue", Topic: "job.echo", Attempt: 1, TimeoutMs: 50})
	if r := wait("overdue"); r.GetStatus() != pb.JobStatus_JOB_STATUS_TIMEOUT || r.GetAttempt() != 1 || !strings.Contains(r.GetError(), "timed out") {
		t.Errorf("overdue echo result = %v", r)
	}
}
