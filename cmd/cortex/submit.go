package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/cortex-os/core/internal/tracing"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func newSubmitCommand() *cobra.Command {
	var (
		conn                           connFlags
		topic, jobID, contextPtr, prio string
		tenant, payload, input         string
		env, labels, caps              []string
		maxAttempts                    int32
		jobTimeout, ttl, waitFor       time.Duration
		wait, asJSON                   bool
	)
	cmd := &cobra.Command{
		Use:   "submit --topic TOPIC",
		Short: "Submit a job and print its id and state (or why it was refused)",
		Long: `submit sends one JobRequest on sys.job.submit and waits for the scheduler to
record it: it prints the job's id and state, or the reason it was refused
(invalid, denied by the safety policy, or a job_id already taken by different
content), and then exits 1. Submitting the same job_id with the same content
again is harmless: the answer is the existing job.

With --wait it then follows the job, one line per change, to its terminal
state, and exits 0 only if the job COMPLETED.

--timeout is the job's own per-attempt timeout; --request-timeout bounds the
wait for the scheduler's answer.`,
		Example: `  cortex submit --topic job.echo --wait
  cortex submit --topic job.echo --job-id report-42 --env MODEL=small --max-attempts 5 --json
  cortex submit --topic job.llm --tenant acme --priority critical --require gpu --label region=eu`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			priority, err := parsePriority(prio)
			if err != nil {
				return err
			}
			req := &pb.JobRequest{
				JobId:       jobID,
				Topic:       topic,
				Priority:    priority,
				ContextPtr:  contextPtr,
				MaxAttempts: maxAttempts,
				TimeoutMs:   jobTimeout.Milliseconds(),
				TtlMs:       ttl.Milliseconds(),
				Tenant:      tenant,
				Payload:     []byte(payload),
			}
			req.RequiredCapabilities = caps
			if len(labels) > 0 {
				req.RequiredLabels = make(map[string]string, len(labels))
				for _, kv := range labels {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--label %q: want KEY=VALUE", kv)
					}
					req.RequiredLabels[k] = v
				}
			}
			if maxAttempts < 0 || jobTimeout < 0 || ttl < 0 {
				return errors.New("--max-attempts, --timeout and --ttl must not be negative")
			}
			if len(env) > 0 {
				req.EnvVars = make(map[string]string, len(env))
				for _, kv := range env {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return fmt.Errorf("--env %q: want KEY=VALUE", kv)
					}
					req.EnvVars[k] = v
				}
			}
			inputOpts, err := inputOptions(cmd, input, payload, contextPtr)
			if err != nil {
				return err
			}
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, stop := signalContext(cmd)
			stopTracing, err := tracing.Setup(ctx, "cortex-submit", nil) // the submit span, with OTEL_EXPORTER_OTLP_ENDPOINT
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }()
			defer stop()

			out := cmd.OutOrStdout()
			reqCtx, cancel := s.request(ctx)
			if inputOpts != nil {
				cancel() // an upload takes what it takes; the client bounds the request itself
				reqCtx, cancel = ctx, func() {}
			}
			job, err := s.client.Submit(reqCtx, req, inputOpts...)
			cancel()
			if err != nil {
				var refused *client.RefusedError
				if errors.As(err, &refused) {
					if refused.Job != nil && asJSON {
						_ = writeJSON(out, viewOf(refused.Job))
					}
					if refused.Job != nil {
						return fmt.Errorf("job %s refused (%s): %s", refused.Job.GetJobId(), client.StateName(refused.Job.GetState()), refused.Error())
					}
					return fmt.Errorf("job %s refused: %s", req.GetJobId(), refused.Error())
				}
				if errors.Is(err, context.DeadlineExceeded) {
					if s.refusedByServer() {
						return s.explain(err) // the server refused it: not a silent scheduler
					}
					return fmt.Errorf("no answer from a scheduler on %s within %s for job %s; where the intake is durable (JetStream), it is recorded when a scheduler runs", s.url, s.timeout, req.GetJobId())
				}
				return s.explain(err)
			}
			if !wait {
				if asJSON {
					return writeJSON(out, viewOf(job))
				}
				fmt.Fprintf(out, "job_id=%s state=%s trace_id=%s topic=%s\n",
					job.GetJobId(), client.StateName(job.GetState()), job.GetTraceId(), job.GetRequest().GetTopic())
				return nil
			}
			progress := out
			if asJSON {
				progress = nil // one JSON object: the job as it ended
			} else {
				fmt.Fprintf(out, "job_id=%s trace_id=%s topic=%s\n", job.GetJobId(), job.GetTraceId(), job.GetRequest().GetTopic())
			}
			final, err := s.watch(ctx, progress, job.GetJobId(), job, waitFor)
			if asJSON && final != nil {
				if werr := writeJSON(out, viewOf(final)); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&topic, "topic", "", "the job's topic, the subject it is dispatched on (job.echo for the echo worker)")
	f.StringVar(&prio, "priority", "interactive", "batch, interactive or critical")
	f.StringVar(&jobID, "job-id", "", "the job's id (default: a new UUID); resubmitting an id returns the existing job")
	f.StringVar(&contextPtr, "context-ptr", "", "where the job's input is (JobRequest.context_ptr)")
	f.StringArrayVar(&env, "env", nil, "KEY=VALUE for the job's env_vars (repeatable)")
	f.Int32Var(&maxAttempts, "max-attempts", 0, "attempts before the job fails and is dead-lettered (0: the scheduler's default)")
	f.DurationVar(&jobTimeout, "timeout", 0, "the job's per-attempt timeout (0: the scheduler's default)")
	f.DurationVar(&ttl, "ttl", 0, "the job's deadline from submission: not finished by then, it ends TIMEOUT (0: the scheduler's default)")
	f.StringVar(&tenant, "tenant", "", "who the job is for: fair sharing, limits and policy apply per tenant")
	f.StringSliceVar(&caps, "require", nil, "capabilities a worker must have to run the job (comma-separated or repeated)")
	f.StringArrayVar(&labels, "label", nil, "KEY=VALUE a worker must carry to run the job, such as gpu=h100 (repeatable)")
	f.StringVar(&payload, "payload", "", "inline input for the handler (JobRequest.payload)")
	f.StringVar(&input, "input", "", "the job's input from FILE (- for stdin): inline up to 256 KiB, else uploaded to the blob store (docs/blobs.md)")
	f.BoolVar(&wait, "wait", false, "follow the job to its terminal state; exit 0 only if it COMPLETED")
	f.DurationVar(&waitFor, "wait-timeout", 0, "with --wait: give up after this long (0: wait until the job ends)")
	f.BoolVar(&asJSON, "json", false, "print the job as one JSON object (with --wait: as it ended)")
	conn.register(f, "request-timeout")
	_ = cmd.MarkFlagRequired("topic")
	return cmd
}
