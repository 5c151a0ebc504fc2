package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// handleResultPacket applies a result from worker from: the worker its
// subject names (identified has checked that the result's worker_id is that
// one), or, on the design document's bare sys.job.result, the worker_id it
// carries, which nothing vouches for.
func (e *Engine) handleResultPacket(p *pb.BusPacket, from string) error {
	res := p.GetJobResult()
	if res == nil {
		e.stats.unknown.Add(1)
		return nil
	}
	if err := validateResult(res); err != nil {
		e.stats.invalidPackets.Add(1)
		e.log.Warn("refused a result", "job_id", clip(res.GetJobId()), "worker_id", clip(from), "err", err)
		return nil // acknowledged: never redelivered
	}
	e.stats.results.Add(1)
	if e.debug() {
		e.log.Debug("result", "job_id", res.GetJobId(), "status", res.GetStatus().String(),
			"worker_id", res.GetWorkerId(), "attempt", res.GetAttempt(), "execution_ms", res.GetExecutionMs(), "trace_id", p.GetTraceId())
	}
	rec, ok := e.cached(res.GetJobId())
	if ok {
		// Compare-and-set catches a cache that is behind when the result
		// applies; applyResult reads the store again before it calls a
		// result stale on the cache's word.
		return e.applyResult(rec, res, from, false)
	}
	ctx, cancel := e.storeCtx()
	defer cancel()
	rec, err := e.cfg.Store.Get(ctx, res.GetJobId())
	if errors.Is(err, jobstore.ErrNotFound) || errors.Is(err, jobstore.ErrInvalidID) {
		e.stats.late.Add(1)
		e.log.Warn("result for an unknown job", "job_id", res.GetJobId(), "worker_id", res.GetWorkerId())
		return nil
	}
	if err != nil {
		e.stats.storeErrors.Add(1)
		return err // redelivered where results are durable
	}
	return e.applyResult(rec, res, from, true)
}

// applyResult moves a job by its result from worker from. Exactly one result
// completes a job, and only a result of the attempt's worker: results for
// finished jobs and for attempts no longer current are ignored (fenced), and
// so is a result from another worker than the one the attempt was
// dispatched to or confirmed by. fresh says rec was just read from the
// store; a record from this replica's cache may be behind another replica's
// dispatch or confirmation (the job still PENDING, at an older attempt, or
// not yet confirmed, here), so a result that looks stale or foreign against
// it is judged again against the store before it is refused.
func (e *Engine) applyResult(rec jobstore.Record, res *pb.JobResult, from string, fresh bool) error {
	var outcome string
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		switch {
		case lifecycle.Terminal(j.State):
			outcome = "late"
			return false
		case res.GetAttempt() == 0 && e.cfg.DocumentWorkers != DocumentWorkersTrust:
			outcome = "untrusted"
			return false
		case res.GetAttempt() != 0 && (res.GetAttempt() != j.Attempt || j.State == lifecycle.Pending):
			outcome = "stale"
			return false
		case res.GetAttempt() == 0 && j.State == lifecycle.Pending:
			// A worker that does not say its attempt, for a job already
			// given up: nothing tells this result is current.
			outcome = "stale"
			return false
		case j.WorkerId != "" && from != j.WorkerId:
			// The attempt names its worker: placement dispatched it to
			// that one, or that one confirmed it. Before either, a topic
			// dispatch went to whichever worker of the queue group took it,
			// and its result is the first word of it.
			outcome = "foreign"
			return false
		}
		j.WorkerId = from
		j.ExecutionMs = res.GetExecutionMs()
		switch res.GetStatus() {
		case pb.JobStatus_JOB_STATUS_COMPLETED:
			j.State = lifecycle.Completed
			j.ResultPtr = res.GetResultPtr()
			j.Error = ""
			j.PendingReason = ""
			outcome = "completed"
		case pb.JobStatus_JOB_STATUS_CANCELLED:
			// The worker handed the job back (it is shutting down): not a
			// failure of the job.
			j.State = lifecycle.Pending
			j.PendingReason = "handed back by " + from + ": " + cut(res.GetError())
			j.NextAttemptMs = 0
			outcome = "handed back"
		default:
			timedOut := res.GetStatus() == pb.JobStatus_JOB_STATUS_TIMEOUT
			reason := cut(res.GetError())
			if reason == "" {
				reason = "attempt failed"
			}
			outcome = e.failAttempt(j, fmt.Sprintf("attempt %d: %s", j.Attempt, reason), timedOut)
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case (outcome == "stale" || outcome == "foreign") && !fresh:
		ctx, cancel := e.storeCtx()
		defer cancel()
		cur, err := e.cfg.Store.Get(ctx, res.GetJobId())
		if err != nil {
			e.stats.storeErrors.Add(1)
			return err // redelivered where results are durable
		}
		e.observe(cur)
		return e.applyResult(cur, res, from, true)
	case outcome == "foreign":
		e.stats.foreignResults.Add(1)
		e.log.Warn("refused a result from a worker that does not hold the attempt", "job_id", res.GetJobId(),
			"worker_id", from, "holder", rec.Job.GetWorkerId(), "result_attempt", res.GetAttempt(), "current_attempt", rec.Job.GetAttempt())
	case outcome == "untrusted":
		e.stats.untrustedResults.Add(1)
		e.log.Warn("refused a result that names no attempt (document_workers: refuse)", "job_id", res.GetJobId(), "worker_id", from)
	case outcome == "stale":
		e.stats.stale.Add(1)
		e.log.Info("fenced a stale result", "job_id", res.GetJobId(), "worker_id", res.GetWorkerId(),
			"result_attempt", res.GetAttempt(), "current_attempt", rec.Job.GetAttempt(), "state", lifecycle.Name(rec.Job.GetState()))
	case outcome == "late":
		e.stats.late.Add(1)
		if e.debug() {
			e.log.Debug("ignored result for a finished job", "job_id", res.GetJobId(), "state", lifecycle.Name(rec.Job.GetState()))
		}
	case written:
		e.finished(rec)
	}
	return nil
}

// failAttempt records a failed attempt on j: back to PENDING after a backoff
// while attempts remain, else FAILED (dead-lettered) or TIMEOUT.
func (e *Engine) failAttempt(j *pb.JobInfo, reason string, timedOut bool) string {
	j.FailedAttempts++
	j.Error = reason
	if j.FailedAttempts < j.MaxAttempts {
		j.State = lifecycle.Pending
		j.PendingReason = "retrying after " + reason
		j.NextAttemptMs = time.Now().Add(e.backoff(j.FailedAttempts)).UnixMilli()
		e.stats.retries.Add(1)
		return "retry"
	}
	if timedOut {
		j.State = lifecycle.Timeout
		j.DeadLetter = true // as a failed job: every attempt was spent
		j.Error = fmt.Sprintf("%s; no attempts left (%d)", reason, j.MaxAttempts)
		return "timeout"
	}
	j.State = lifecycle.Failed
	j.DeadLetter = true
	j.Error = fmt.Sprintf("%s; no attempts left (%d)", reason, j.MaxAttempts)
	return "failed"
}

// backoff is the delay before retry n (1-based): exponential from
// RetryBackoff, capped at RetryBackoffMax, with jitter in [d/2, d].
func (e *Engine) backoff(n int32) time.Duration {
	d := e.cfg.RetryBackoff
	for i := int32(1); i < n && d < e.cfg.RetryBackoffMax; i++ {
		d *= 2
	}
	d = min(d, e.cfg.RetryBackoffMax)
	return d/2 + rand.N(d/2+1)
}

// finished does what follows a job's move: count it, dead-letter it.
func (e *Engine) finished(rec jobstore.Record) {
	j := rec.Job
	switch j.GetState() {
	case lifecycle.Completed:
		e.stats.completed.Add(1)
	case lifecycle.Failed, lifecycle.Timeout:
		if !j.GetDeadLetter() { // past the job's deadline: not a matter of attempts
			e.log.Warn("job timed out", "job_id", j.JobId, "error", j.Error, "trace_id", j.TraceId)
			return
		}
		e.stats.deadLettered.Add(1)
		ctx, cancel := e.storeCtx()
		defer cancel()
		if err := e.cfg.DeadLetters.Put(ctx, j); err != nil {
			e.log.Error("dead-lettering failed", "job_id", j.JobId, "err", err)
		}
		msg := "job failed and was dead-lettered"
		if j.GetState() == lifecycle.Timeout {
			msg = "job timed out and was dead-lettered"
		}
		e.log.Warn(msg, "job_id", j.JobId, "attempts", j.Attempt, "error", j.Error, "trace_id", j.TraceId)
	}
}
