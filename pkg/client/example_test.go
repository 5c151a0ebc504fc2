package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
	"github.com/cortex-os/core/pkg/workertest"
)

// exampleEnv runs CortexOS with an echo worker on job.echo for an example:
// the worker ends its jobs with memory://echo/<id>, or, for a job with the
// payload "block", only when the job is cancelled.
func exampleEnv() *workertest.Env {
	dev, err := workertest.New()
	if err != nil {
		log.Fatal(err)
	}
	_, err = dev.RunWorker(worker.Config{Kind: "echo", Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		if string(job.Payload()) == "block" {
			<-ctx.Done()
			return worker.Result{}, ctx.Err()
		}
		return worker.Result{Ptr: "memory://echo/" + job.ID()}, nil
	})})
	if err != nil {
		log.Fatal(err)
	}
	return dev
}

// A client submits a job and waits for it to end.
func Example() {
	dev := exampleEnv() // CortexOS and an echo worker, for the example
	defer dev.Close()
	url := dev.URL()

	c, err := client.Connect(url, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := c.Submit(ctx, &pb.JobRequest{JobId: "hello-1", Topic: "job.echo"})
	if err != nil {
		log.Fatal(err) // a *client.RefusedError if the scheduler said no
	}
	fmt.Println(job.GetJobId(), client.IsTerminal(job.GetState()))

	job, err = c.Wait(ctx, job.GetJobId())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()), job.GetResultPtr())
	// Output:
	// hello-1 false
	// COMPLETED memory://echo/hello-1
}

// Cancelling a running job: the worker's handler sees its context
// cancelled, and the job ends CANCELLED.
func ExampleClient_Cancel() {
	dev := exampleEnv()
	defer dev.Close()
	c := dev.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	job, err := c.Submit(ctx, &pb.JobRequest{Topic: "job.echo", Payload: []byte("block")})
	if err != nil {
		log.Fatal(err)
	}
	for j, err := range c.Watch(ctx, job.GetJobId()) {
		if err != nil {
			log.Fatal(err)
		}
		if j.GetState() == pb.JobState_JOB_STATE_RUNNING {
			break // a worker holds it
		}
	}
	job, err = c.Cancel(ctx, job.GetJobId(), "no longer needed")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(client.StateName(job.GetState()), job.GetError())

	// It has ended: cancelling it again is a conflict.
	_, err = c.Cancel(ctx, job.GetJobId(), "")
	fmt.Println(errors.Is(err, client.ErrConflict))
	// Output:
	// CANCELLED no longer needed
	// true
}

// Telling refusals apart: errors.Is with the kind, errors.As for the
// details.
func ExampleRefusedError() {
	dev := exampleEnv()
	defer dev.Close()
	c := dev.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The shipped safety policy denies every job on sys.destroy.
	_, err := c.Submit(ctx, &pb.JobRequest{Topic: "sys.destroy"})
	var refused *client.RefusedError
	switch {
	case errors.Is(err, client.ErrDenied) && errors.As(err, &refused):
		fmt.Println("denied by rule", refused.RuleID, "; the job is", client.StateName(refused.Job.GetState()))
	case errors.Is(err, client.ErrThrottled) && errors.As(err, &refused):
		fmt.Println("try again in", refused.RetryAfter)
	case errors.Is(err, client.ErrNoScheduler):
		fmt.Println("is a scheduler running?")
	case err != nil:
		fmt.Println(err)
	}

	_, err = c.Get(ctx, "no-such-job")
	fmt.Println(errors.Is(err, client.ErrNotFound), errors.Is(err, client.ErrRefused))
	// Output:
	// denied by rule forbidden-topic ; the job is DENIED
	// true true
}

// Connecting with credentials, as the cortex command takes them
// (docs/security.md). Printing them never shows a secret.
func ExampleConnect_credentials() {
	// A NATS server that admits alice with her password, for the example.
	srv, err := embeddednats.Start(embeddednats.Config{Port: -1,
		Users: []*server.User{{Username: "alice", Password: "s3cret-pw"}}})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Shutdown()
	url, password := srv.ClientURL(), "s3cret-pw"

	creds := client.Credentials{User: "alice", Password: password}
	c, err := client.Connect(url, client.Options{Credentials: creds})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Println(creds, c.Conn().IsConnected())

	_, err = client.Connect(url, client.Options{Credentials: client.Credentials{User: "alice", Password: "wrong"}})
	fmt.Println(err != nil)
	// Output:
	// user alice true
	// true
}
