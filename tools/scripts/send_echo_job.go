// send_echo_job sends one echo job to CortexOS, prints its job_id and
// trace_id, then waits for its JobResult and prints it. With no result within
// --timeout it says so and exits 1.
//
//	go run ./tools/scripts/send_echo_job.go [--topic job.echo] [--timeout 10s]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/system"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func main() {
	var (
		configPath = flag.String("config", "", "config file (default config/local.yaml if present)")
		natsURL    = flag.String("nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
		topic      = flag.String("topic", "job.echo", "job topic")
		timeout    = flag.Duration("timeout", 10*time.Second, "how long to wait for the result")
	)
	flag.Parse()
	if err := run(*configPath, *natsURL, *topic, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "send_echo_job:", err)
		os.Exit(1)
	}
}

func run(configPath, natsURL, topic string, timeout time.Duration) error {
	cfg, err := system.LoadConfig(configPath, natsURL, "")
	if err != nil {
		return err
	}
	b, err := bus.Connect(bus.Config{URL: cfg.NatsURL, Name: "job-sender", Logger: logging.New(os.Stderr, system.Level(cfg))})
	if err != nil {
		return err
	}
	defer b.Close()

	jobID := uuid.NewString()
	req := &pb.JobRequest{
		JobId:      jobID,
		Topic:      topic,
		Priority:   pb.JobPriority_JOB_PRIORITY_INTERACTIVE,
		ContextPtr: "memory://echo_ctx/" + jobID,
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	traceID := uuid.NewString()
	fmt.Printf("Sent job job_id=%s trace_id=%s topic=%s\n", jobID, traceID, topic)
	_, p, err := client.SubmitAndWait(ctx, b, "job-sender", traceID, req)
	if err != nil {
		return fmt.Errorf("%w (is a scheduler and a worker for %s running?)", err, topic)
	}
	res := p.GetJobResult()
	fmt.Printf("Result job_id=%s status=%s worker_id=%s result_ptr=%s execution_ms=%d trace_id=%s\n",
		res.GetJobId(), res.GetStatus(), res.GetWorkerId(), res.GetResultPtr(), res.GetExecutionMs(), p.GetTraceId())
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		return fmt.Errorf("job_id=%s ended %s", res.GetJobId(), res.GetStatus())
	}
	return nil
}
