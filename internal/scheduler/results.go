package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// results applies what ends an attempt: a worker's result, and the timers'
// verdicts (a lost lease, an attempt or a job past its time). It moves the
// job (completed, retried after a backoff, failed and dead-lettered, timed
// out), fencing results of attempts no longer current and of workers that
// do not hold the attempt. It holds no job state: the job cache does, which
// it calls directly (a closure passed to mutate through an interface would
// be allocated per result), as it asks the placer why a queued job waits.
// Results arrive through the heartbeats part's identity check ("results"
// subscription) and HandlePacket; the timers call expire.
type results struct {
	log                           *slog.Logger
	stats                         *counters
	store                         JobStore
	dead                          DeadLetters
	documentWorkers               string // DocumentWorkersTrust or DocumentWorkersRefuse
	retryBackoff, retryBackoffMax time.Duration
	leaseTTL                      time.Duration
	times                         jobTimes
	cache                         *jobCache
	placer                        *placer // why a queued job waits
}

// handleResultPacket applies a result from worker from: the worker its
// subject names (identified has checked that the result's worker_id is that
// one), or, on the design document's bare sys.job.result, the worker_id it
// carries, which nothing vouches for.
func (r *results) handleResultPacket(p *pb.BusPacket, from string) error {
	res := p.GetJobResult()
	if res == nil {
		r.stats.unknown.Add(1)
		return nil
	}
	if err := validateResult(res); err != nil {
		r.stats.invalidPackets.Add(1)
		r.log.Warn("refused a result", "job_id", clip(res.GetJobId()), "worker_id", clip(from), "err", err)
		return nil // acknowledged: never redelivered
	}
	r.stats.results.Add(1)
	if r.log.Enabled(context.Background(), slog.LevelDebug) {
		r.log.Debug("result", "job_id", res.GetJobId(), "status", res.GetStatus().String(),
			"worker_id", res.GetWorkerId(), "attempt", res.GetAttempt(), "execution_ms", res.GetExecutionMs(), "trace_id", p.GetTraceId())
	}
	rec, ok := r.cache.cached(res.GetJobId())
	if ok {
		// Compare-and-set catches a cache that is behind when the result
		// applies; applyResult reads the store again before it calls a
		// result stale on the cache's word.
		return r.applyResult(rec, res, from, false)
	}
	ctx, cancel := storeCtx()
	defer cancel()
	rec, err := r.store.Get(ctx, res.GetJobId())
	if errors.Is(err, jobstore.ErrNotFound) || errors.Is(err, jobstore.ErrInvalidID) {
		r.stats.late.Add(1)
		r.log.Warn("result for an unknown job", "job_id", res.GetJobId(), "worker_id", res.GetWorkerId())
		return nil
	}
	if err != nil {
		r.stats.storeErrors.Add(1)
		return err // redelivered where results are durable
	}
	return r.applyResult(rec, res, from, true)
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
func (r *results) applyResult(rec jobstore.Record, res *pb.JobResult, from string, fresh bool) error {
	var outcome string
	rec, written, err := r.cache.mutate(rec, func(j *pb.JobInfo) bool {
		switch {
		case lifecycle.Terminal(j.State):
			outcome = "late"
			return false
		case res.GetAttempt() == 0 && r.documentWorkers != DocumentWorkersTrust:
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
			outcome = r.failAttempt(j, fmt.Sprintf("attempt %d: %s", j.Attempt, reason), timedOut)
		}
		return true
	})
	switch {
	case err != nil:
		return err
	case (outcome == "stale" || outcome == "foreign") && !fresh:
		ctx, cancel := storeCtx()
		defer cancel()
		cur, err := r.store.Get(ctx, res.GetJobId())
		if err != nil {
			r.stats.storeErrors.Add(1)
			return err // redelivered where results are durable
		}
		r.cache.observe(cur)
		return r.applyResult(cur, res, from, true)
	case outcome == "foreign":
		r.stats.foreignResults.Add(1)
		r.log.Warn("refused a result from a worker that does not hold the attempt", "job_id", res.GetJobId(),
			"worker_id", from, "holder", rec.Job.GetWorkerId(), "result_attempt", res.GetAttempt(), "current_attempt", rec.Job.GetAttempt())
	case outcome == "untrusted":
		r.stats.untrustedResults.Add(1)
		r.log.Warn("refused a result that names no attempt (document_workers: refuse)", "job_id", res.GetJobId(), "worker_id", from)
	case outcome == "stale":
		r.stats.stale.Add(1)
		r.log.Info("fenced a stale result", "job_id", res.GetJobId(), "worker_id", res.GetWorkerId(),
			"result_attempt", res.GetAttempt(), "current_attempt", rec.Job.GetAttempt(), "state", lifecycle.Name(rec.Job.GetState()))
	case outcome == "late":
		r.stats.late.Add(1)
		if r.log.Enabled(context.Background(), slog.LevelDebug) {
			r.log.Debug("ignored result for a finished job", "job_id", res.GetJobId(), "state", lifecycle.Name(rec.Job.GetState()))
		}
	case written:
		r.finished(rec)
	}
	return nil
}

// failAttempt records a failed attempt on j: back to PENDING after a backoff
// while attempts remain, else FAILED (dead-lettered) or TIMEOUT.
func (r *results) failAttempt(j *pb.JobInfo, reason string, timedOut bool) string {
	j.FailedAttempts++
	j.Error = reason
	if j.FailedAttempts < j.MaxAttempts {
		j.State = lifecycle.Pending
		j.PendingReason = "retrying after " + reason
		j.NextAttemptMs = time.Now().Add(r.backoff(j.FailedAttempts)).UnixMilli()
		r.stats.retries.Add(1)
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
func (r *results) backoff(n int32) time.Duration {
	d := r.retryBackoff
	for i := int32(1); i < n && d < r.retryBackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.retryBackoffMax)
	return d/2 + rand.N(d/2+1)
}

// finished does what follows a job's move: count it, dead-letter it.
func (r *results) finished(rec jobstore.Record) {
	j := rec.Job
	switch j.GetState() {
	case lifecycle.Completed:
		r.stats.completed.Add(1)
	case lifecycle.Failed, lifecycle.Timeout:
		if !j.GetDeadLetter() { // past the job's deadline: not a matter of attempts
			r.log.Warn("job timed out", "job_id", j.JobId, "error", j.Error, "trace_id", j.TraceId)
			return
		}
		r.stats.deadLettered.Add(1)
		ctx, cancel := storeCtx()
		defer cancel()
		if err := r.dead.Put(ctx, j); err != nil {
			r.log.Error("dead-lettering failed", "job_id", j.JobId, "err", err)
		}
		msg := "job failed and was dead-lettered"
		if j.GetState() == lifecycle.Timeout {
			msg = "job timed out and was dead-lettered"
		}
		r.log.Warn(msg, "job_id", j.JobId, "attempts", j.Attempt, "error", j.Error, "trace_id", j.TraceId)
	}
}

// expire acts on one timer.
func (r *results) expire(rec jobstore.Record, what string) {
	attempt := rec.Job.GetAttempt()
	state := rec.Job.GetState()
	why := r.placer.pendingReason(rec.Job) // a queued job's, from its pool's queue
	var outcome string
	rec, written, err := r.cache.mutate(rec, func(j *pb.JobInfo) bool {
		if j.Attempt != attempt || j.State != state {
			return false // it moved meanwhile; the next tick decides again
		}
		switch what {
		case "deadline":
			j.State = lifecycle.Timeout
			j.Error = "deadline exceeded"
			if why == "" {
				why = j.PendingReason
			}
			if why != "" && state == lifecycle.Pending {
				j.Error += " while pending: " + why
			}
		case "lease":
			r.stats.leasesLost.Add(1)
			outcome = r.failAttempt(j, fmt.Sprintf("worker %s lost its lease on attempt %d (no heartbeat for %s)", j.WorkerId, j.Attempt, r.leaseTTL), false)
			j.NextAttemptMs = 0 // a dead worker's jobs go elsewhere at once
		case "attempt-timeout":
			outcome = r.failAttempt(j, fmt.Sprintf("attempt %d timed out after %s", j.Attempt, r.times.timeout(j.Request)), true)
		}
		return true
	})
	if err != nil {
		r.log.Error("timer action failed", "job_id", rec.Job.GetJobId(), "what", what, "err", err)
		return
	}
	if written {
		if what == "lease" {
			r.log.Warn("lease lost", "job_id", rec.Job.JobId, "worker_id", rec.Job.WorkerId, "attempt", attempt, "outcome", outcome)
		}
		r.finished(rec)
	}
}
