package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// A minimal worker: it takes jobs on job.greet and completes each with a
// greeting as its result.
func Example() {
	// CortexOS for the example: NATS and a scheduler in this process.
	// Outside an example, url is where your NATS server is.
	dev, err := workertest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	url := dev.URL()

	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	w, err := worker.New(nc, worker.Config{
		Kind: "greet", // takes jobs on job.greet
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			return worker.Result{Ptr: "hello, " + string(job.Payload())}, nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }() // until ctx ends; then in-flight jobs finish
	<-w.Ready()

	// A client submits a job and waits for it.
	job, err := dev.Client().Submit(ctx, &pb.JobRequest{Topic: "job.greet", Payload: []byte("world")})
	if err != nil {
		log.Fatal(err)
	}
	job, err = dev.Client().Wait(ctx, job.GetJobId())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()), job.GetResultPtr())

	stop()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output: COMPLETED hello, world
}

// A worker that says what it can run: two jobs at once, a GPU, and labels
// that jobs can require. The scheduler places a job that requires them only
// on a worker that has them.
func ExampleConfig_placement() {
	dev, err := workertest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	nc, err := nats.Connect(dev.URL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	w, err := worker.New(nc, worker.Config{
		Kind:         "render",
		Capacity:     2,                         // at most two jobs at once
		Capabilities: []string{"render", "gpu"}, // what it can do
		Labels:       map[string]string{"gpu": "h100", "region": "eu"},
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			return worker.Result{Ptr: "memory://frames/" + job.ID()}, nil
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	<-w.Ready()

	job, err := dev.Client().Submit(ctx, &pb.JobRequest{
		JobId:                "frame-1",
		Topic:                "job.render",
		RequiredCapabilities: []string{"gpu"},
		RequiredLabels:       map[string]string{"gpu": "h100"},
	})
	if err != nil {
		log.Fatal(err)
	}
	job, err = dev.Client().Wait(ctx, job.GetJobId())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()), job.GetResultPtr(), job.GetWorkerId() == w.ID())

	workers, err := dev.Client().Workers(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, info := range workers {
		hb := info.GetHeartbeat()
		fmt.Println(hb.GetCapacity(), slices.Sorted(slices.Values(hb.GetCapabilities())), hb.GetLabels())
	}
	// Output:
	// COMPLETED memory://frames/frame-1 true
	// 2 [gpu render] map[gpu:h100 region:eu]
}

// A handler that honours its context: ctx ends at the attempt's deadline
// (the job's timeout), and when the job is cancelled. The job then ends
// TIMEOUT or CANCELLED.
func Example_deadline() {
	dev, err := workertest.New()
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	nc, err := nats.Connect(dev.URL())
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	w, err := worker.New(nc, worker.Config{
		Kind: "slow",
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			if _, ok := ctx.Deadline(); ok {
				fmt.Println("the attempt has a deadline")
			}
			select {
			case <-time.After(time.Hour): // the work
				return worker.Result{Ptr: "done"}, nil
			case <-ctx.Done():
				if errors.Is(context.Cause(ctx), worker.ErrCancelled) {
					return worker.Result{}, errors.New("cancelled, cleaned up")
				}
				return worker.Result{}, ctx.Err() // context.DeadlineExceeded
			}
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() { stop(); <-done }()
	<-w.Ready()

	job, err := dev.Client().Submit(ctx, &pb.JobRequest{
		Topic:       "job.slow",
		TimeoutMs:   100, // each attempt may run 100ms
		MaxAttempts: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	job, err = dev.Client().Wait(ctx, job.GetJobId())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()))
	// Output:
	// the attempt has a deadline
	// TIMEOUT
}
