package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/pkg/client"
)

func newDLQCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and re-drive dead-lettered jobs",
		Long: `A job that fails on every one of its attempts ends FAILED and goes to the
dead-letter queue. dlq list shows the queue; dlq retry takes a job out of it
and runs its request again as a new job (<job_id>-redrive-<n>); the failed job
itself stays FAILED.`,
	}
	cmd.AddCommand(newDLQListCommand(), newDLQRetryCommand())
	return cmd
}

func newDLQListCommand() *cobra.Command {
	var (
		conn   connFlags
		limit  int
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead-lettered jobs, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			list, err := s.client.DeadLetters(ctx, client.ListOptions{Limit: limit})
			if err != nil {
				return s.explain(err)
			}
			if asJSON {
				return writeJobsJSON(cmd.OutOrStdout(), list.Jobs)
			}
			return writeTable(cmd.OutOrStdout(), list.Jobs)
		},
	}
	f := cmd.Flags()
	f.IntVar(&limit, "limit", 100, "at most this many jobs (0: the scheduler's default, 100)")
	f.BoolVar(&asJSON, "json", false, "print a JSON array of jobs")
	conn.register(f, "timeout")
	return cmd
}

func newDLQRetryCommand() *cobra.Command {
	var (
		conn   connFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "retry JOB_ID",
		Short: "Run a dead-lettered job's request again as a new job; prints the new job's id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := conn.open()
			if err != nil {
				return err
			}
			defer s.close()
			ctx, cancel := s.request(cmd.Context())
			defer cancel()
			job, err := s.client.RetryDeadLetter(ctx, args[0])
			if err != nil {
				var refused *client.RefusedError
				if errors.As(err, &refused) {
					return fmt.Errorf("cannot re-drive %s: %s", args[0], refused.Reason)
				}
				return s.explain(err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), viewOf(job))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "job_id=%s state=%s redriven_from=%s\n", job.GetJobId(), client.StateName(job.GetState()), args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the new job as one JSON object")
	conn.register(cmd.Flags(), "timeout")
	return cmd
}
