package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// admission is the engine's intake part: it takes submissions ("intake"
// subscription, and HandlePacket), checks who sent them (requesters) and
// what they ask, asks the safety checker, records each job in the job store
// (PENDING, DISPATCHED at once, or DENIED) and starts its dispatch: at once
// through the dispatcher, or through the placer's queues in a pool that
// places by what workers report. Queries' re-drive admits through it too.
// It holds no state of its own beyond its settings.
type admission struct {
	id        string
	log       *slog.Logger
	safetyLog *slog.Logger
	stats     *counters
	bus       Bus
	store     JobStore
	safety    SafetyChecker
	// traceBlind: the checker reads no trace id (TraceBlind), as the design
	// document's stub: none is added to its context.
	traceBlind bool
	// traced is the checker when it takes the trace id and the time as
	// arguments (TracedChecker); nil otherwise.
	traced TracedChecker
	// blockedLevel is the level of the refusal line of a denied job: info,
	// debug when the checker logs its decisions itself (DecisionLogger).
	blockedLevel      slog.Level
	observer          Observer
	safetyUnavailable string // Config.SafetyUnavailable
	maxAttempts       int32  // of jobs that set none
	noWorkerRetry     time.Duration
	times             jobTimes

	requesters *requesters
	cache      *jobCache
	placer     *placer
	dispatcher *dispatcher
}

func (a *admission) debug() bool { return a.log.Enabled(context.Background(), slog.LevelDebug) }

// ---- submissions ----

// handleSubmit handles a submission on the bare sys.job.submit, which names
// no client.
func (a *admission) handleSubmit(p *pb.BusPacket, replyTo string) error {
	return a.handleSubmitOn(wire.SubjectSubmit, p, replyTo)
}

// handleSubmitOn handles a submission that came on subject
// (sys.job.submit[.<identity>]) asking for its answer on replyTo. A refused
// submission is acknowledged: it is never redelivered.
func (a *admission) handleSubmitOn(subject string, p *pb.BusPacket, replyTo string) error {
	who, drop, err := a.requesters.identify(wire.SubjectSubmit, subject, replyTo)
	if drop {
		return nil
	}
	req := p.GetJobRequest()
	if req == nil {
		a.stats.unknown.Add(1)
		a.reply(replyTo, p.GetTraceId(), refusal("sys.job.submit takes a job_request packet", false))
		return nil
	}
	if err != nil {
		a.reply(replyTo, p.GetTraceId(), refusal(err.Error(), false))
		return nil
	}
	if tenant, err := who.SubmitTenant(req.GetTenant()); err != nil {
		a.requesters.refuseTenant(subject, err)
		a.reply(replyTo, p.GetTraceId(), refusal(err.Error(), false))
		return nil
	} else if tenant != req.GetTenant() {
		req.Tenant = tenant // the client's own: stamped
	}
	a.stats.submitted.Add(1)
	if err := apply(packetRules, p); err != nil {
		a.stats.rejected.Add(1)
		a.log.Warn("refused job", "job_id", clip(req.GetJobId()), "err", err)
		a.reply(replyTo, "", refusal(err.Error(), false))
		return nil
	}
	traceID := p.GetTraceId()
	if traceID == "" {
		traceID = uuid.NewString()
	}
	answer, _, err := a.admit(req, traceID, replyTo != "")
	if err != nil {
		return err // redelivered where the intake is durable
	}
	a.reply(replyTo, traceID, answer)
	return nil
}

// admit validates req, asks the safety checker, records the job (PENDING, or
// DENIED) and starts its dispatch. created is false for a resubmission of an
// existing job. An error means the store failed: nothing was decided.
// Without answerWanted (nobody waits for the answer) an accepted job's
// answer is nil: it is not built for nothing on the hot path.
func (a *admission) admit(req *pb.JobRequest, traceID string, answerWanted bool) (answer *pb.JobAnswer, created bool, err error) {
	if err := ValidateRequest(req); err != nil {
		a.stats.rejected.Add(1)
		a.log.Warn("refused job", "job_id", clip(req.GetJobId()), "topic", clip(req.GetTopic()), "err", err, "trace_id", traceID)
		return refusal(err.Error(), false), false, nil
	}
	if a.debug() {
		a.log.Debug("submitted", "job_id", req.JobId, "topic", req.Topic, "trace_id", traceID)
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
		job.MaxAttempts = a.maxAttempts
	}
	if ttl := a.times.ttl(req); ttl > 0 {
		job.DeadlineMs = now.Add(ttl).UnixMilli()
	}
	var verdict safety.Verdict
	var serr error
	if a.traced != nil {
		verdict, serr = a.traced.CheckTraced(context.Background(), req, traceID, now)
	} else {
		ctx := context.Background()
		if !a.traceBlind {
			ctx = safety.WithTraceID(ctx, traceID) // for the kernel's log lines and remote checks
		}
		verdict, serr = a.safety.Check(ctx, req)
	}
	if serr == nil {
		observeSafety(a.observer, req, traceID, verdict)
	}
	switch {
	case serr != nil:
		a.stats.safetyUnavailable.Add(1)
		a.safetyLog.Warn("safety kernel unavailable", "job_id", req.JobId, "err", serr, "fail_closed", a.safetyUnavailable)
		if a.safetyUnavailable == SafetyUnavailableDeny {
			job.State = lifecycle.Denied
			job.Error = SafetyUnavailableReason + ": " + serr.Error()
			reason = SafetyUnavailableReason
		} else {
			job.AwaitingSafety = true
			job.PendingReason = SafetyUnavailableReason + "; checked again before dispatch"
			job.NextAttemptMs = now.Add(a.noWorkerRetry).UnixMilli()
		}
	case verdict.Decision == SafetyThrottle:
		a.stats.throttled.Add(1)
		if a.debug() {
			a.safetyLog.Debug("throttled", "job_id", req.JobId, "rule_id", verdict.RuleID, "retry_after", verdict.RetryAfter, "trace_id", traceID)
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
	pool := a.placer.poolOf(req)
	if pool != nil {
		job.Pool = pool.Name
	}
	queued := false
	subject, direct := "", false
	var placedOn string // the worker placement counted the job against, if any
	if job.State == lifecycle.Pending && !job.AwaitingSafety && a.placer.placed(pool) {
		if d, ok := a.placer.placeNow(job, pool, now); ok {
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
	if job.State == lifecycle.Pending && !job.AwaitingSafety && a.placer.placed(pool) {
		var refused *pb.JobAnswer
		if queued, refused = a.placer.pushNew(job, pool); refused != nil {
			if a.debug() {
				a.log.Debug("refused job: queue full", "job_id", req.JobId, "pool", job.Pool, "reason", refused.Error, "trace_id", traceID)
			}
			return refused, false, nil
		}
	}

	// A job that can go at once is recorded DISPATCHED (attempt 1): one store
	// write where PENDING then DISPATCHED took two. What PENDING would say
	// (waiting to be dispatched) never holds for it. A crash before the
	// publish below is a dispatch whose outcome is lost: AckTimeout covers it,
	// as it covers a crash after any dispatch's write.
	if job.State == lifecycle.Pending && !job.AwaitingSafety && !queued && !a.placer.placed(pool) {
		if subject, direct = a.dispatcher.pickSubject(job.Request); direct {
			job.State = lifecycle.Dispatched
			job.Attempt = 1
			job.PendingReason = ""
			job.AttemptStartedMs = job.CreatedMs
		}
	}

	ctx, cancel := storeCtx()
	defer cancel()
	rec, err := a.store.Create(ctx, job)
	if err != nil && queued {
		a.placer.dequeue(job.JobId) // not recorded: not queued either
	}
	if err != nil && direct && a.placer.placed(pool) {
		a.placer.unplace(job.JobId, placedOn) // not recorded: not placed either
	}
	switch {
	case errors.Is(err, jobstore.ErrExists):
		if proto.Equal(rec.Job.GetRequest(), req) { // the same job, submitted again
			a.stats.duplicates.Add(1)
			if rec.Job.GetState() == lifecycle.Denied { // refused then: refused now
				return &pb.JobAnswer{Error: rec.Job.GetError(), Jobs: []*pb.JobInfo{rec.Job}}, false, nil
			}
			return &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{rec.Job}}, false, nil
		}
		a.stats.conflicts.Add(1)
		a.log.Warn("refused job: job_id exists with different content", "job_id", req.JobId, "trace_id", traceID)
		return refusal(fmt.Sprintf("%s: job_id %s already exists with different content", conflictPrefix, req.JobId), false), false, nil
	case err != nil:
		a.stats.storeErrors.Add(1)
		a.log.Error("recording job failed", "job_id", req.JobId, "err", err)
		return nil, false, err
	}
	observeRecorded(a.observer, nil, rec.Job)

	if job.State == lifecycle.Denied {
		a.stats.denied.Add(1)
		a.safetyLog.Log(context.Background(), a.blockedLevel, "job blocked", "job_id", req.JobId, "topic", req.Topic, "reason", reason, "rule_id", job.RuleId, "trace_id", traceID)
		return &pb.JobAnswer{Error: job.Error, RuleId: job.RuleId, Jobs: []*pb.JobInfo{rec.Job}}, true, nil
	}
	a.stats.accepted.Add(1)
	if a.cache.admitted(rec) {
		if direct {
			a.dispatcher.publishDispatch(rec, subject, now) // the clock read at admission, microseconds ago
		} else if queued {
			a.placer.drain()
		} else {
			a.dispatcher.tryDispatch(rec.Job.JobId)
		}
	}
	if !answerWanted {
		return nil, true, nil
	}
	return acceptedAnswer(rec.Job), true, nil
}

// acceptedAnswer is the answer to an accepted submission, ok with job, in
// one allocation (the answer and its one-job list): this runs for every job
// submitted for an answer.
func acceptedAnswer(job *pb.JobInfo) *pb.JobAnswer {
	a := &struct {
		answer pb.JobAnswer
		jobs   [1]*pb.JobInfo
	}{}
	a.jobs[0] = job
	a.answer.Ok, a.answer.Jobs = true, a.jobs[:]
	return &a.answer
}

// conflictPrefix starts the error of a submission whose job_id is taken.
const conflictPrefix = "conflict"

func refusal(msg string, retryable bool) *pb.JobAnswer {
	return &pb.JobAnswer{Error: msg, Retryable: retryable}
}

func (a *admission) reply(to, traceID string, answer *pb.JobAnswer) {
	if to == "" {
		return
	}
	if err := a.bus.Publish(to, wire.JobAnswerPacket(traceID, a.id, answer)); err != nil {
		a.log.Warn("answering failed", "to", to, "err", err)
	}
}
