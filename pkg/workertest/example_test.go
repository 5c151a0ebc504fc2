package workertest_test

import (
	"context"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// greet is the handler under test.
func greet(ctx context.Context, job *worker.Job) (worker.Result, error) {
	return worker.Result{Ptr: "hello, " + string(job.Payload())}, nil
}

// A worker tested the way CortexOS tests its own: against a real NATS
// server and scheduler, started for the test and stopped when it ends.
func TestGreetWorker(t *testing.T) {
	env := workertest.Start(t)
	if _, err := env.RunWorker(worker.Config{Kind: "greet", Handler: worker.HandlerFunc(greet)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := env.Client().Submit(ctx, &pb.JobRequest{Topic: "job.greet", Payload: []byte("test")})
	if err != nil {
		t.Fatal(err)
	}
	job, err = env.Client().Wait(ctx, job.GetJobId())
	if err != nil {
		t.Fatal(err)
	}
	if job.GetState() != pb.JobState_JOB_STATE_COMPLETED || job.GetResultPtr() != "hello, test" {
		t.Fatalf("job ended %s with %q", client.StateName(job.GetState()), job.GetResultPtr())
	}
}

// A handler is a function: it can also be called directly, without NATS.
func TestGreetHandler(t *testing.T) {
	out, err := greet(context.Background(), worker.NewJob(&pb.JobRequest{Payload: []byte("unit")}))
	if err != nil || out.Ptr != "hello, unit" {
		t.Fatalf("greet = %q, %v", out.Ptr, err)
	}
}

// New runs CortexOS where there is no test to end it: an example, or a
// TestMain shared by a package's tests.
func ExampleNew() {
	env, err := workertest.New(workertest.WithMaxAttempts(1))
	if err != nil {
		log.Fatal(err)
	}
	defer env.Close()
	w, err := env.RunWorker(worker.Config{Kind: "greet", Handler: worker.HandlerFunc(greet)})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := env.Client().Submit(ctx, &pb.JobRequest{Topic: "job.greet", Payload: []byte("example")})
	if err != nil {
		log.Fatal(err)
	}
	job, err = env.Client().Wait(ctx, job.GetJobId())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()), job.GetResultPtr(), job.GetWorkerId() == w.ID())
	// Output: COMPLETED hello, example true
}
