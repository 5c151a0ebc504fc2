// send_echo_job sends one echo job to CortexOS and prints its job_id and
// trace_id. It waits for the scheduler to confirm the job (a refusal, such as
// DENIED by the safety policy, is printed and exits 1 at once), then follows
// the job's state until it ends and prints its result. With no terminal state
// within --timeout it says where the job still is and exits 1.
//
// It finds NATS and its credentials as the binaries do: the config file, then
// NATS_URL and the NATS_* credential variables (NATS_USER and NATS_PASSWORD,
// NATS_TOKEN, NATS_NKEY_SEED, NATS_CREDS, NATS_CA, NATS_CERT, NATS_KEY,
// NATS_TLS_SERVER_NAME, NATS_INBOX_PREFIX), then the --nats-* flags. With a
// user it names itself by it (CORTEX_IDENTITY overrides): `cortex dev --auth`
// answers a client only under _INBOX.<identity>.
//
//	go run ./tools/scripts/send_echo_job.go [--topic job.echo] [--timeout 10s]
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

func main() {
	flags := pflag.NewFlagSet("send_echo_job", pflag.ExitOnError)
	var (
		configPath = flags.String("config", "", "config file (default config/local.yaml if present)")
		natsURL    = flags.String("nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
		topic      = flags.String("topic", "job.echo", "job topic")
		timeout    = flags.Duration("timeout", 10*time.Second, "how long to wait for the job to end")
	)
	config.RegisterCredentialFlags(flags)
	_ = flags.Parse(os.Args[1:]) // ExitOnError
	if err := run(flags, *configPath, *natsURL, *topic, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "send_echo_job:", err)
		os.Exit(1)
	}
}

// envIdentity names the client when set; else the connection's inbox
// prefix _INBOX.<user> does, as for cortex submit.
const envIdentity = "CORTEX_IDENTITY"

func run(flags *pflag.FlagSet, configPath, natsURL, topic string, timeout time.Duration) error {
	cfg, err := system.LoadConfig(configPath, natsURL, "")
	if err != nil {
		return err
	}
	if err := config.ApplyCredentialFlags(flags, cfg); err != nil {
		return err
	}
	identity := os.Getenv(envIdentity)
	if identity == "" {
		identity, _ = strings.CutPrefix(cfg.NATS.Inbox(), wire.InboxRoot+".")
		if strings.Contains(identity, ".") || cfg.NATS.IsZero() {
			identity = ""
		}
	}
	if identity != "" && cfg.NATS.InboxPrefix == "" {
		cfg.NATS.InboxPrefix = wire.ClientInbox(identity)
	}
	natsOpts, err := system.NatsOptions(nil, cfg)
	if err != nil {
		return err
	}
	sender := identity
	if sender == "" {
		sender = "job-sender"
	}
	c, err := client.Connect(cfg.NatsURL, client.Options{
		Name: "job-sender", Identity: identity, SenderID: sender, RequestTimeout: timeout,
		Logger: logging.New(os.Stderr, system.Level(cfg)), NATSOptions: natsOpts,
	})
	if err != nil {
		return err
	}
	defer c.Close()

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

	// The scheduler answers once it has recorded the job, or says why not.
	if _, err := c.Submit(ctx, req, client.WithTraceID(traceID)); err != nil {
		var refused *client.RefusedError
		if errors.As(err, &refused) {
			state := "refused"
			if refused.Job != nil {
				state = client.StateName(refused.Job.GetState())
			}
			return fmt.Errorf("job_id=%s %s: %s", jobID, state, refused.Reason)
		}
		return fmt.Errorf("no result: %w (is a scheduler running?)", err)
	}

	// Then follow it until it ends.
	job, err := c.Wait(ctx, jobID)
	if err != nil {
		if job == nil {
			return fmt.Errorf("no result within %s for job_id=%s: %w (is a scheduler running?)", timeout, jobID, err)
		}
		why := job.GetPendingReason()
		if why == "" {
			why = job.GetError()
		}
		if why != "" {
			why = " (" + why + ")"
		}
		return fmt.Errorf("no result within %s: job_id=%s is still %s%s; is a worker for %s running?",
			timeout, jobID, client.StateName(job.GetState()), why, topic)
	}
	fmt.Printf("Result job_id=%s status=%s worker_id=%s result_ptr=%s execution_ms=%d trace_id=%s state=%s attempts=%d\n",
		job.GetJobId(), statusOf(job.GetState()), job.GetWorkerId(), job.GetResultPtr(), job.GetExecutionMs(), job.GetTraceId(),
		client.StateName(job.GetState()), job.GetAttempt())
	if job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
		msg := fmt.Sprintf("job_id=%s ended %s", job.GetJobId(), client.StateName(job.GetState()))
		if e := job.GetError(); e != "" {
			msg += ": " + e
		}
		return errors.New(msg)
	}
	return nil
}

// statusOf is the JobStatus of the result that ended a job in state s.
func statusOf(s pb.JobState) pb.JobStatus {
	switch s {
	case pb.JobState_JOB_STATE_COMPLETED:
		return pb.JobStatus_JOB_STATUS_COMPLETED
	case pb.JobState_JOB_STATE_FAILED:
		return pb.JobStatus_JOB_STATUS_FAILED
	case pb.JobState_JOB_STATE_TIMEOUT:
		return pb.JobStatus_JOB_STATUS_TIMEOUT
	case pb.JobState_JOB_STATE_CANCELLED:
		return pb.JobStatus_JOB_STATUS_CANCELLED
	}
	return pb.JobStatus_JOB_STATUS_UNSPECIFIED
}
