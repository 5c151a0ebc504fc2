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

// eventSilence is how long Watch waits for an event before it asks for the
// job: a scheduler from before job events publishes none, and an event may
// be lost (core NATS delivers at most once).
var eventSilence = time.Second

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
// How the changes are learnt is not part of the contract: today Watch
// subscribes to the job's events (Events) before it asks for the job, and
// asks again each time no event came for a second (nextAsk).
func (c *Client) Watch(ctx context.Context, jobID string) iter.Seq2[*pb.JobInfo, error] {
	return func(yield func(*pb.JobInfo, error) bool) {
		if jobID == "" {
			yield(nil, invalid("empty job id"))
			return
		}
		var events <-chan *pb.JobInfo
		evs, err := c.Events(ctx, jobID)
		if err == nil {
			defer evs.Stop()
			events = evs.C
		}
		var last *pb.JobInfo
		// offer yields job if it is news; done: stop watching.
		offer := func(job *pb.JobInfo) (done bool) {
			if last != nil && older(job, last) {
				return false // an event from before what was yielded
			}
			if changed(last, job) {
				last = job
				if !yield(job, nil) {
					return true
				}
			}
			return IsTerminal(job.GetState())
		}
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				yield(last, fmt.Errorf("client: job %s not finished: %w", jobID, context.Cause(ctx)))
				return
			case job := <-events:
				if last == nil {
					continue // the first answer is a Get's: it says whether the job exists
				}
				if offer(job) {
					return
				}
				t.Reset(eventSilence)
				continue
			case <-t.C:
			}
			// Each query has its own bound (RequestTimeout): a scheduler
			// that dies holding one never answers it, and the watch must
			// go on asking.
			job, err := c.Get(ctx, jobID)
			if err != nil && !transient(err) && ctx.Err() == nil {
				yield(nil, err)
				return
			}
			if job != nil && offer(job) {
				return
			}
			t.Reset(nextAsk(last != nil, events != nil))
		}
	}
}

// nextAsk is how long Watch waits before it asks for the job again, once
// it has asked. Subscribed to the job's events and with an answer, a
// second (eventSilence): events bring the changes, and the question only
// covers an event or an announcement that was lost, a scheduler that
// restarted and has not heard the next announcement yet, or one from
// before job events (a watch against one sees each change within a
// second). A job can stay RUNNING for hours without an event; asking it
// every 100ms all that while, as Watch did, made each watcher ten queries
// a second. Otherwise (no subscription: a job with no event subject; or
// no answer yet) it polls every watchInterval.
func nextAsk(answered, subscribed bool) time.Duration {
	if answered && subscribed {
		return eventSilence
	}
	return watchInterval
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

// older reports whether job is an earlier version than last: written
// before it, or in the same millisecond at an earlier attempt or an earlier
// step of the attempt (PENDING, DISPATCHED, RUNNING, ended).
func older(job, last *pb.JobInfo) bool {
	if job.GetUpdatedMs() != last.GetUpdatedMs() {
		return job.GetUpdatedMs() < last.GetUpdatedMs()
	}
	if job.GetAttempt() != last.GetAttempt() {
		return job.GetAttempt() < last.GetAttempt()
	}
	return step(job.GetState()) < step(last.GetState())
}

func step(s pb.JobState) int {
	switch s {
	case pb.JobState_JOB_STATE_PENDING:
		return 0
	case pb.JobState_JOB_STATE_DISPATCHED:
		return 1
	case pb.JobState_JOB_STATE_RUNNING:
		return 2
	}
	return 3
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
