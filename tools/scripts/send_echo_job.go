// send_echo_job sends one echo job to CortexOS and prints its job_id and
// trace_id. It waits for the scheduler to confirm the job (a refusal, such as
// DENIED by the safety policy, is printed and exits 1 at once), then follows
// the job's state until it ends and prints its result. With no terminal state
// within --timeout it says where the job still is and exits 1.
//
// It is written against the public SDK alone (pkg/client, pkg/pb/v1,
// pkg/wire), as code in another module would be. It finds NATS and its
// credentials as the binaries do, without their config file: NATS_URL
// (default nats://127.0.0.1:4222) and the NATS_* credential variables
// (NATS_USER and NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED, NATS_CREDS,
// NATS_CA, NATS_CERT, NATS_KEY, NATS_TLS_SERVER_NAME, NATS_INBOX_PREFIX;
// client.CredentialsFromEnv), then the --nats-* flags. With a user it names
// itself by it (CORTEX_IDENTITY overrides): `cortex dev --auth` answers a
// client only under _INBOX.<identity>. CORTEX_LOG_LEVEL (default info) sets
// what the connection logs on stderr.
//
//	go run ./tools/scripts/send_echo_job.go [--topic job.echo] [--timeout 10s]
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/pflag"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// credentialFlags are the --nats-* flags the cortex commands take, each with
// the field it sets; a flag given wins over its variable.
var credentialFlags = []struct {
	name, usage string
	field       func(*client.Credentials) *string
}{
	{"nats-user", "NATS user (with --nats-password; overrides NATS_USER)", func(c *client.Credentials) *string { return &c.User }},
	{"nats-password", "NATS password (overrides NATS_PASSWORD; prefer the variable: flags show in ps)", func(c *client.Credentials) *string { return &c.Password }},
	{"nats-token", "NATS token (overrides NATS_TOKEN; prefer the variable: flags show in ps)", func(c *client.Credentials) *string { return &c.Token }},
	{"nats-nkey", "file with an NKey user seed (overrides NATS_NKEY_SEED)", func(c *client.Credentials) *string { return &c.NKeySeed }},
	{"nats-creds", "creds file: user JWT and seed (overrides NATS_CREDS)", func(c *client.Credentials) *string { return &c.Creds }},
	{"nats-ca", "PEM file of the CAs the server's certificate must chain to; turns TLS on (overrides NATS_CA)", func(c *client.Credentials) *string { return &c.CA }},
	{"nats-cert", "client certificate (PEM) for mutual TLS, with --nats-key (overrides NATS_CERT)", func(c *client.Credentials) *string { return &c.Cert }},
	{"nats-key", "client certificate's key (PEM) for mutual TLS (overrides NATS_KEY)", func(c *client.Credentials) *string { return &c.Key }},
	{"nats-tls-server-name", "name the server's certificate must carry, if not the URL's host (overrides NATS_TLS_SERVER_NAME)", func(c *client.Credentials) *string { return &c.TLSServerName }},
	{"nats-inbox-prefix", `prefix of this connection's answer subjects (default "_INBOX.<user>" with a user; overrides NATS_INBOX_PREFIX)`, func(c *client.Credentials) *string { return &c.InboxPrefix }},
}

func main() {
	flags := pflag.NewFlagSet("send_echo_job", pflag.ExitOnError)
	var (
		natsURL = flags.String("nats-url", "", "NATS server URL (overrides NATS_URL; default nats://127.0.0.1:4222)")
		topic   = flags.String("topic", "job.echo", "job topic")
		timeout = flags.Duration("timeout", 10*time.Second, "how long to wait for the job to end")
	)
	for _, f := range credentialFlags {
		flags.String(f.name, "", f.usage)
	}
	_ = flags.Parse(os.Args[1:]) // ExitOnError
	if err := run(flags, *natsURL, *topic, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "send_echo_job:", err)
		os.Exit(1)
	}
}

// envIdentity names the client when set; else the connection's inbox
// prefix _INBOX.<user> does, as for cortex submit.
const envIdentity = "CORTEX_IDENTITY"

func run(flags *pflag.FlagSet, natsURL, topic string, timeout time.Duration) error {
	if natsURL == "" {
		natsURL = os.Getenv("NATS_URL")
	}
	if natsURL == "" {
		natsURL = "nats://127.0.0.1:4222"
	}
	creds := client.CredentialsFromEnv()
	for _, f := range credentialFlags {
		if fl := flags.Lookup(f.name); fl.Changed {
			*f.field(&creds) = fl.Value.String()
		}
	}
	if err := creds.Validate(); err != nil {
		return err
	}
	identity := os.Getenv(envIdentity)
	if identity == "" {
		inbox := creds.InboxPrefix
		if inbox == "" && creds.User != "" {
			inbox = client.InboxPrefix(creds.User) // _INBOX.<user>, as the connection will
		}
		identity, _ = strings.CutPrefix(inbox, wire.InboxRoot+".")
		if strings.Contains(identity, ".") || creds == (client.Credentials{}) {
			identity = ""
		}
	}
	sender := identity
	if sender == "" {
		sender = "job-sender"
	}
	level := slog.LevelInfo
	if v := os.Getenv("CORTEX_LOG_LEVEL"); v != "" {
		if err := level.UnmarshalText([]byte(v)); err != nil {
			return fmt.Errorf("CORTEX_LOG_LEVEL: %w", err)
		}
	}
	c, err := client.Connect(natsURL, client.Options{
		Name: "job-sender", Identity: identity, SenderID: sender, RequestTimeout: timeout, Credentials: creds,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})),
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
