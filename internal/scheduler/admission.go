package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ---- submissions ----

// handleSubmit handles a submission on the bare sys.job.submit, which names
// no client.
func (e *Engine) handleSubmit(p *pb.BusPacket, replyTo string) error {
	return e.handleSubmitOn(wire.SubjectSubmit, p, replyTo)
}

// handleSubmitOn handles a submission that came on subject
// (sys.job.submit[.<identity>]) asking for its answer on replyTo. A refused
// submission is acknowledged: it is never redelivered.
func (e *Engine) handleSubmitOn(subject string, p *pb.BusPacket, replyTo string) error {
	who, drop, err := e.identify(wire.SubjectSubmit, subject, replyTo)
	if drop {
		return nil
	}
	req := p.GetJobRequest()
	if req == nil {
		e.stats.unknown.Add(1)
		e.reply(replyTo, p.GetTraceId(), refusal("sys.job.submit takes a job_request packet", false))
		return nil
	}
	if err != nil {
		e.reply(replyTo, p.GetTraceId(), refusal(err.Error(), false))
		return nil
	}
	if tenant, err := who.SubmitTenant(req.GetTenant()); err != nil {
		e.refuseTenant(subject, err)
		e.reply(replyTo, p.GetTraceId(), refusal(err.Error(), false))
		return nil
	} else if tenant != req.GetTenant() {
		req.Tenant = tenant // the client's own: stamped
	}
	e.stats.submitted.Add(1)
	if err := apply(packetRules, p); err != nil {
		e.stats.rejected.Add(1)
		e.log.Warn("refused job", "job_id", clip(req.GetJobId()), "err", err)
		e.reply(replyTo, "", refusal(err.Error(), false))
		return nil
	}
	traceID := p.GetTraceId()
	if traceID == "" {
		traceID = uuid.NewString()
	}
	answer, _, err := e.admit(req, traceID, replyTo != "")
	if err != nil {
		return err // redelivered where the intake is durable
	}
	e.reply(replyTo, traceID, answer)
	return nil
}

// admit validates req, asks the safety checker, records the job (PENDING, or
// DENIED) and starts its dispatch. created is false for a resubmission of an
// existing job. An error means the store failed: nothing was decided.
// Without answerWanted (nobody waits for the answer) an accepted job's
// answer is nil: it is not built for nothing on the hot path.
func (e *Engine) admit(req *pb.JobRequest, traceID string, answerWanted bool) (answer *pb.JobAnswer, created bool, err error) {
	if err := ValidateRequest(req); err != nil {
		e.stats.rejected.Add(1)
		e.log.Warn("refused job", "job_id", clip(req.GetJobId()), "topic", clip(req.GetTopic()), "err", err, "trace_id", traceID)
		return refusal(err.Error(), false), false, nil
	}
	if e.debug() {
		e.log.Debug("submitted", "job_id", req.JobId, "topic", req.Topic, "trace_id", traceID)
	}

	var reason string
	now := time.Now()
	job := &pb.JobInfo{
		JobId:       strings.Clone(req.JobId),
		State:       lifecycle.Pending,
		MaxAttempts: req.GetMaxAttempts(),
		TraceId:     traceID,
		Request:     req,
		CreatedMs:   now.UnixMilli(),
		UpdatedMs:   now.UnixMilli(),
	}
	if job.MaxAttempts <= 0 {
		job.MaxAttempts = int32(e.cfg.MaxAttempts)
	}
	if ttl := e.ttl(req); ttl > 0 {
		job.DeadlineMs = now.Add(ttl).UnixMilli()
	}
	ctx := context.Background()
	if !e.stubSafety {
		ctx = safety.WithTraceID(ctx, traceID) // for the kernel's log lines and remote checks
	}
	verdict, serr := e.cfg.Safety.Check(ctx, req)
	if serr == nil {
		e.observeSafety(req, traceID, verdict)
	}
	switch {
	case serr != nil:
		e.stats.safetyUnavailable.Add(1)
		e.safetyLog.Warn("safety kernel unavailable", "job_id", req.JobId, "err", serr, "fail_closed", e.cfg.SafetyUnavailable)
		if e.cfg.SafetyUnavailable == SafetyUnavailableDeny {
			job.State = lifecycle.Denied
			job.Error = SafetyUnavailableReason + ": " + serr.Error()
			reason = SafetyUnavailableReason
		} else {
			job.AwaitingSafety = true
			job.PendingReason = SafetyUnavailableReason + "; checked again before dispatch"
			job.NextAttemptMs = now.Add(e.cfg.NoWorkerRetry).UnixMilli()
		}
	case verdict.Decision == SafetyThrottle:
		e.stats.throttled.Add(1)
		if e.debug() {
			e.safetyLog.Debug("throttled", "job_id", req.JobId, "rule_id", verdict.RuleID, "retry_after", verdict.RetryAfter, "trace_id", traceID)
		}
		return &pb.JobAnswer{Error: "throttled by the safety policy: " + verdict.Reason, Retryable: true,
			RetryAfterMs: max(1, verdict.RetryAfter.Milliseconds()), RuleId: verdict.RuleID}, false, nil
	case verdict.Decision != SafetyAllow:
		job.State = lifecycle.Denied
		job.Error = "denied by the safety policy: " + verdict.Reason
		reason = verdict.Reason
	default:
		job.PendingReason = "waiting to be dispatched"
	}
	job.RuleId, job.PolicyVersion = verdict.RuleID, verdict.PolicyVersion
	pool := e.poolOf(req)
	if pool != nil {
		job.Pool = pool.Name
	}
	queued := false
	subject, direct := "", false
	var placedOn string // the worker placement counted the job against, if any
	if job.State == lifecycle.Pending && !job.AwaitingSafety && e.placed(pool) {
		if d, ok := e.placeNow(job, pool); ok {
			// A worker has room and nothing is ahead of the job: it is
			// recorded DISPATCHED to that worker (one store write) and
			// published at once, as the naive path does.
			subject, direct, placedOn = d.Subject, true, d.WorkerID
			job.State = lifecycle.Dispatched
			job.Attempt = 1
			job.PendingReason = ""
			job.AttemptStartedMs = job.CreatedMs
			if d.WorkerID != "" && d.Subject != req.Topic {
				job.WorkerId = d.WorkerID // its own subject: nobody else can take it
			}
		}
	}
	if job.State == lifecycle.Pending && !job.AwaitingSafety && e.placed(pool) {
		var refused *pb.JobAnswer
		if queued, refused = e.pushNew(job, pool); refused != nil {
			if e.debug() {
				e.log.Debug("refused job: queue full", "job_id", req.JobId, "pool", job.Pool, "reason", refused.Error, "trace_id", traceID)
			}
			return refused, false, nil
		}
	}

	// A job that can go at once is recorded DISPATCHED (attempt 1): one store
	// write where PENDING then DISPATCHED took two. What PENDING would say
	// (waiting to be dispatched) never holds for it. A crash before the
	// publish below is a dispatch whose outcome is lost: AckTimeout covers it,
	// as it covers a crash after any dispatch's write.
	if job.State == lifecycle.Pending && !job.AwaitingSafety && !queued && !e.placed(pool) {
		if subject, direct = e.pickSubject(job.Request); direct {
			job.State = lifecycle.Dispatched
			job.Attempt = 1
			job.PendingReason = ""
			job.AttemptStartedMs = job.CreatedMs
		}
	}

	ctx, cancel := e.storeCtx()
	defer cancel()
	rec, err := e.cfg.Store.Create(ctx, job)
	if err != nil && queued {
		e.queues.Remove(job.JobId) // not recorded: not queued either
	}
	if err != nil && direct && e.placed(pool) {
		e.unplace(job.JobId, placedOn) // not recorded: not placed either
	}
	switch {
	case errors.Is(err, jobstore.ErrExists):
		if proto.Equal(rec.Job.GetRequest(), req) { // the same job, submitted again
			e.stats.duplicates.Add(1)
			if rec.Job.GetState() == lifecycle.Denied { // refused then: refused now
				return &pb.JobAnswer{Error: rec.Job.GetError(), Jobs: []*pb.JobInfo{rec.Job}}, false, nil
			}
			return &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{rec.Job}}, false, nil
		}
		e.stats.conflicts.Add(1)
		e.log.Warn("refused job: job_id exists with different content", "job_id", req.JobId, "trace_id", traceID)
		return refusal(fmt.Sprintf("%s: job_id %s already exists with different content", conflictPrefix, req.JobId), false), false, nil
	case err != nil:
		e.stats.storeErrors.Add(1)
		e.log.Error("recording job failed", "job_id", req.JobId, "err", err)
		return nil, false, err
	}
	e.observeRecorded(nil, rec.Job)

	if job.State == lifecycle.Denied {
		e.stats.denied.Add(1)
		e.safetyLog.Info("job blocked", "job_id", req.JobId, "topic", req.Topic, "reason", reason, "rule_id", job.RuleId, "trace_id", traceID)
		return &pb.JobAnswer{Error: job.Error, RuleId: job.RuleId, Jobs: []*pb.JobInfo{rec.Job}}, true, nil
	}
	e.stats.accepted.Add(1)
	if e.observe(rec) {
		if direct {
			e.publishDispatch(rec, subject, now) // the clock read at admission, microseconds ago
		} else if queued {
			e.drain()
		} else {
			e.tryDispatch(rec.Job.JobId)
		}
	}
	if !answerWanted {
		return nil, true, nil
	}
	return &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{rec.Job}}, true, nil
}

// conflictPrefix starts the error of a submission whose job_id is taken.
const conflictPrefix = "conflict"

func (e *Engine) ttl(req *pb.JobRequest) time.Duration {
	if req.GetTtlMs() > 0 {
		return time.Duration(req.GetTtlMs()) * time.Millisecond
	}
	if e.cfg.TTL > 0 {
		return e.cfg.TTL
	}
	return 0
}

func (e *Engine) timeout(req *pb.JobRequest) time.Duration {
	if req.GetTimeoutMs() > 0 {
		return time.Duration(req.GetTimeoutMs()) * time.Millisecond
	}
	return e.cfg.Timeout
}

func refusal(msg string, retryable bool) *pb.JobAnswer {
	return &pb.JobAnswer{Error: msg, Retryable: retryable}
}

func (e *Engine) reply(to, traceID string, answer *pb.JobAnswer) {
	if to == "" {
		return
	}
	p := wire.NewPacket(traceID, e.cfg.ID)
	p.Payload = &pb.BusPacket_JobAnswer{JobAnswer: answer}
	if err := e.cfg.Bus.Publish(to, p); err != nil {
		e.log.Warn("answering failed", "to", to, "err", err)
	}
}
