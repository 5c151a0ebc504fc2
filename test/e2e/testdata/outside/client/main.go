// Command client is a CortexOS client written outside the CortexOS module,
// against its public SDK only: it submits one job on job.outside that
// requires the label built=outside, waits for it and prints
// "result <state> <result_ptr> <worker_id>"; it exits 1 unless the job
// COMPLETED.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "client:", err)
		os.Exit(1)
	}
}

func run() error {
	c, err := client.Connect(os.Getenv("NATS_URL"), client.Options{Name: "outside-client"})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	job, err := c.Submit(ctx, &pb.JobRequest{
		Topic:          "job.outside",
		Payload:        []byte("afar"),
		RequiredLabels: map[string]string{"built": "outside"},
	})
	var refused *client.RefusedError
	if errors.As(err, &refused) {
		return fmt.Errorf("refused: %s", refused.Reason)
	}
	if err != nil {
		return err
	}
	job, err = c.Wait(ctx, job.GetJobId())
	if err != nil {
		return err
	}
	fmt.Println("result", client.StateName(job.GetState()), job.GetResultPtr(), job.GetWorkerId())
	if job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		return errors.New("the job did not complete")
	}
	return nil
}
