package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func newJobCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Inspect, follow, list and cancel jobs",
		Long: `job asks the scheduler about jobs: their state (PENDING, DISPATCHED, RUNNING,
then one of COMPLETED, FAILED, DENIED, TIMEOUT, CANCELLED; see
docs/state_machine.md), attempts, worker, result and errors.`,
	}
	cmd.AddCommand(newJobGetCommand(), newJobWatchCommand(), newJobCancelCommand(), newJobListCommand(), newJobResultCommand())
	return cmd
}

func newJobGetCommand() *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "get JOB_ID",
		Short: "Print a job: state, attempts, worker, result, error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := s.request(cmd.Context())
			defer cancel()
			job, err := s.client.Get(ctx, args[0])
			if err != nil {
				return s.explain(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), viewOf(job))
			}
			return writeJob(cmd.OutOrStdout(), job)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}

func newJobWatchCommand() *cobra.Command {
	var (
		conn    connFlags
		waitFor time.Duration
	)
	cmd := &cobra.Command{
		Use:   "watch JOB_ID",
		Short: "Follow a job to its terminal state, one line per change; exit 0 only if it COMPLETED",
		Long: `watch prints a line each time the job changes (its state, attempt, or the
reason it is pending): the time of the change, the state, the attempt, the
worker and the reason (or, once COMPLETED, where the result is). It ends when
the job does, and exits 0 only if the job COMPLETED.

It follows the job's events, one per change the scheduler writes, and asks
for the job when none came for a second (docs/protocol.md).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, stop := signalContext(cmd)
			defer stop()
			_, err = s.watch(ctx, cmd.OutOrStdout(), args[0], nil, waitFor)
			return err
		},
	}
	cmd.Flags().DurationVar(&waitFor, "wait-timeout", 0, "give up after this long (0: wait until the job ends)")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}

func newJobCancelCommand() *cobra.Command {
	var (
		conn   connFlags
		why    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "cancel JOB_ID",
		Short: "Cancel a job that has not ended; a running handler sees its context cancelled",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := s.request(cmd.Context())
			defer cancel()
			job, err := s.client.Cancel(ctx, args[0], why)
			if err != nil {
				var refused *client.RefusedError
				if errors.As(err, &refused) {
					return fmt.Errorf("cannot cancel job %s: %s", args[0], refused.Reason)
				}
				return s.explain(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), viewOf(job))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job_id=%s state=%s reason=%q\n", job.GetJobId(), client.StateName(job.GetState()), job.GetError())
			return nil
		},
	}
	cmd.Flags().StringVar(&why, "reason", "", `why (recorded as the job's error; default "cancelled by request")`)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the cancelled job as one JSON object")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}

func newJobListCommand() *cobra.Command {
	var (
		conn                 connFlags
		state, topic, tenant string
		pageToken            string
		limit                int
		asJSON               bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List jobs, newest first, optionally by state, topic or tenant",
		Long: `list prints up to --limit jobs, the most recently changed first. The
scheduler answers a page at a time with bounded work, so list may ask for
several pages; when more jobs are left it prints the token of the next page
(on stderr), to pass as --page-token.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter := pb.JobState_JOB_STATE_UNSPECIFIED
			if state != "" {
				st, err := parseState(state)
				if err != nil {
					return err
				}
				filter = st
			}
			if limit < 0 {
				return errors.New("--limit must not be negative")
			}
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := s.request(cmd.Context())
			defer cancel()
			list, err := s.client.ListAll(ctx, client.ListOptions{State: filter, Topic: topic, Tenant: tenant, Limit: limit, PageToken: pageToken})
			if err != nil {
				return s.explain(err)
			}
			if asJSON {
				err = writeJobsJSON(cmd.OutOrStdout(), list.Jobs)
			} else {
				err = writeTable(cmd.OutOrStdout(), list.Jobs)
			}
			if err == nil && list.NextPageToken != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more jobs: --page-token %s\n", list.NextPageToken)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&state, "state", "", "only jobs in this state: PENDING, DISPATCHED, RUNNING, COMPLETED, FAILED, DENIED, TIMEOUT or CANCELLED")
	f.StringVar(&topic, "topic", "", "only jobs of this topic")
	f.StringVar(&tenant, "tenant", "", "only jobs of this tenant")
	f.IntVar(&limit, "limit", 100, "at most this many jobs (0: the default, 100)")
	f.StringVar(&pageToken, "page-token", "", "continue a listing where the previous one stopped (the token it printed)")
	f.BoolVar(&asJSON, "json", false, "print a JSON array of jobs")
	conn.register(f, "timeout")
	return cmd
}
