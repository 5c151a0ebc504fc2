package workertest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// An Env runs a job end to end; a worker whose config is wrong is an error;
// Close stops everything, once.
func TestEnv(t *testing.T) {
	t.Parallel()
	env, err := workertest.New(workertest.WithMaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = env.Close()
		}
	})
	if !strings.HasPrefix(env.URL(), "nats://127.0.0.1:") || !env.Conn().IsConnected() {
		t.Fatalf("URL %s, connected %v", env.URL(), env.Conn().IsConnected())
	}
	if _, err := env.RunWorker(worker.Config{Kind: "t"}); err == nil || !strings.Contains(err.Error(), "Handler") {
		t.Fatalf("RunWorker without a handler: %v", err)
	}
	w, err := env.RunWorker(worker.Config{Kind: "t", Handler: worker.HandlerFunc(func(_ context.Context, job *worker.Job) (worker.Result, error) {
		return worker.Result{Ptr: "done:" + job.ID()}, nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := env.Client().Submit(ctx, &pb.JobRequest{JobId: "j1", Topic: "job.t"}); err != nil {
		t.Fatal(err)
	}
	job, err := env.Client().Wait(ctx, "j1")
	if err != nil || job.GetState() != pb.JobState_JOB_STATE_COMPLETED || job.GetResultPtr() != "done:j1" || job.GetWorkerId() != w.ID() || job.GetMaxAttempts() != 1 {
		t.Fatalf("job: %v, %v", job, err)
	}

	if err := env.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := env.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if env.Conn().IsConnected() {
		t.Error("the connection is open after Close")
	}
	if _, err := env.RunWorker(worker.Config{Kind: "t", Handler: worker.HandlerFunc(nil)}); err == nil {
		t.Error("RunWorker after Close succeeded")
	}
}
