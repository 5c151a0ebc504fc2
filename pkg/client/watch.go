package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// watchInterval is how often Watch asks for the job while it polls.
var watchInterval = 100 * time.Millisecond

// Watch follows a job until it ends. It yields the job each time its
// state, attempt or pending reason changes, starting with the job as it is
// now; the last job yielded is terminal (IsTerminal), and the sequence
// ends there. Stop early by breaking out of the loop.
//
// Watch rides out a scheduler's restart: a query that nobody answers is
// asked again. It ends with an error when the job does not exist
// (ErrNotFound) or cannot be asked about, yielding (nil, err); and when ctx
// ends first, yielding the job as last seen (nil if never seen) and an
// error wrapping context.Cause(ctx).
//
//	for job, err := range c.Watch(ctx, id) {
//		if err != nil { ... }
//		fmt.Println(client.StateName(job.GetState()))
//	}
//
// How the changes are learnt (today by asking every 100ms, so a state that
// lasts less than that may not be seen) is not part of the contract.
func (c *Client) Watch(ctx context.Context, jobID string) iter.Seq2[*pb.JobInfo, error] {
	return func(yield func(*pb.JobInfo, error) bool) {
		if jobID == "" {
			yield(nil, invalid("empty job id"))
			return
		}
		var last *pb.JobInfo
		t := time.NewTicker(watchInterval)
		defer t.Stop()
		for {
			// Each query has its own bound (RequestTimeout): a scheduler
			// that dies holding one never answers it, and the watch must
			// go on asking.
			job, err := c.Get(ctx, jobID)
			if err != nil && !transient(err) && ctx.Err() == nil {
				yield(nil, err)
				return
			}
			if job != nil {
				if changed(last, job) {
					last = job
					if !yield(job, nil) {
						return
					}
				}
				if IsTerminal(job.GetState()) {
					return
				}
			}
			select {
			case <-ctx.Done():
				yield(last, fmt.Errorf("client: job %s not finished: %w", jobID, context.Cause(ctx)))
				return
			case <-t.C:
			}
		}
	}
}

// Wait follows a job until it ends and returns it, whichever way it ended:
// check its state (COMPLETED, FAILED, ...). The error is Watch's: the job
// does not exist, or ctx ended first (the job is then as last seen).
func (c *Client) Wait(ctx context.Context, jobID string) (*pb.JobInfo, error) {
	var last *pb.JobInfo
	for job, err := range c.Watch(ctx, jobID) {
		if err != nil {
			if job == nil {
				job = last
			}
			return job, err
		}
		last = job
	}
	return last, nil
}

// changed reports whether job differs from last in what Watch reports.
func changed(last, job *pb.JobInfo) bool {
	return last == nil || job.GetState() != last.GetState() || job.GetAttempt() != last.GetAttempt() ||
		job.GetPendingReason() != last.GetPendingReason()
}

// transient reports whether asking again may be answered: a retryable
// refusal, no scheduler, or no answer in time.
func transient(err error) bool {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Retryable
	}
	return errors.Is(err, wire.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded)
}
