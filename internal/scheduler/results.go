package scheduler

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
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

// ---- worker identity ----

// A worker names itself in the subjects it publishes on
// (sys.heartbeat.<kind>.<worker_id>, sys.job.result.<worker_id>), and the
// server's permissions let its user publish on those only
// (docs/security.md). A packet whose worker_id is not the worker its subject
// names is refused; with RequireWorkerIdentity, so is one on a subject that
// names none.

// handleHeartbeatOn handles a packet that came on a heartbeat subject.
func (e *Engine) handleHeartbeatOn(subject string, p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		if e.identified("heartbeat", subject, payload.Heartbeat.GetWorkerId(), wire.HeartbeatSubjectWorker) {
			e.handleHeartbeat(payload.Heartbeat)
		}
	case *pb.BusPacket_JobResult:
		if e.identified("result", subject, payload.JobResult.GetWorkerId(), wire.HeartbeatSubjectWorker) {
			_ = e.handleResultPacket(p, payload.JobResult.GetWorkerId()) // the subject's worker, or on a bare subject the claim
		}
	case *pb.BusPacket_JobRequest:
		if e.cfg.RequireWorkerIdentity {
			// A worker's user may publish here; submitting is the clients'.
			e.stats.identityRejected.Add(1)
			e.log.Warn("refused a submission on a heartbeat subject", "subject", subject, "sender_id", p.GetSenderId())
			return
		}
		e.HandlePacket(p)
	default:
		e.HandlePacket(p)
	}
}

// handleResultOn handles a result that came on subject, if the subject may
// carry it. A refused result is acknowledged: it is never redelivered.
func (e *Engine) handleResultOn(subject string, p *pb.BusPacket, _ string) error {
	res := p.GetJobResult()
	if res != nil && !e.identified("result", subject, res.GetWorkerId(), wire.ResultSubjectWorker) {
		return nil
	}
	// The sender is the worker the subject names, which identified found
	// equal to the result's worker_id; on the bare subject, the claim.
	from, named := wire.ResultSubjectWorker(subject)
	if !named {
		from = res.GetWorkerId()
	}
	return e.handleResultPacket(p, from)
}

// identified reports whether a packet of worker claimed that came on
// subject may be applied; named reads the worker the subject names. It
// counts and logs a refusal.
func (e *Engine) identified(what, subject, claimed string, named func(string) (string, bool)) bool {
	id, ok := named(subject)
	switch {
	case ok && id == claimed:
		return true
	case !ok && !e.cfg.RequireWorkerIdentity:
		return true // the design document's bare subjects
	}
	e.stats.identityRejected.Add(1)
	if ok {
		e.log.Warn("refused a packet whose subject names another worker", "packet", what,
			"subject", clip(subject), "subject_worker", clip(id), "worker_id", clip(claimed))
	} else {
		e.log.Warn("refused a packet on a subject that names no worker (require_worker_identity)", "packet", what,
			"subject", clip(subject), "worker_id", clip(claimed))
	}
	return false
}

// ---- heartbeats and leases ----

func (e *Engine) handleHeartbeat(hb *pb.Heartbeat) {
	if err := validateHeartbeat(hb); err != nil {
		e.stats.invalidPackets.Add(1)
		e.log.Warn("refused a heartbeat", "worker_id", clip(hb.GetWorkerId()), "err", err)
		return
	}
	e.stats.heartbeats.Add(1)
	if e.debug() {
		e.log.Debug("heartbeat", "worker_id", hb.GetWorkerId(), "type", hb.GetType(),
			"cpu", hb.GetCpuLoad(), "gpu", hb.GetGpuUtilization(), "active_jobs", hb.GetActiveJobs())
	}
	e.cfg.Registry.UpdateHeartbeat(hb)
	if e.preg != nil && e.preg != e.cfg.Registry {
		e.preg.UpdateHeartbeat(hb)
	}
	if e.queues != nil && len(hb.GetTopics()) > 0 {
		defer e.drain() // room may have freed, or a worker with a missing capability come
	}
	if hb.GetConfirms() && !hb.GetDraining() && len(hb.GetTopics()) > 0 {
		now := time.Now()
		e.confirmMu.Lock()
		if e.confirmSeen == nil {
			e.confirmSeen = make(map[string]time.Time)
		}
		for _, t := range hb.GetTopics() {
			e.confirmSeen[t] = now
		}
		e.confirmMu.Unlock()
	}
	if len(hb.GetHeld()) == 0 {
		return
	}
	interval := time.Duration(hb.GetIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = e.cfg.LeaseInterval
	}
	until := time.Now().Add(time.Duration(e.cfg.LeaseMisses) * interval)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range hb.GetHeld() {
		t, ok := e.active[h.GetJobId()]
		if !ok || t.rec.Job.GetAttempt() != h.GetAttempt() {
			continue
		}
		if w := t.rec.Job.GetWorkerId(); w != "" && w != hb.GetWorkerId() {
			continue
		}
		t.leaseUntil = until
		e.active[h.GetJobId()] = t
	}
}

// ---- timers ----

func (e *Engine) timerLoop(ctx context.Context) {
	tick := time.NewTicker(e.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e.checkTimers()
		}
	}
}

// checkTimers acts on the jobs whose time has come: retries due, leases
// lost, attempts and jobs past their deadline, dispatches whose outcome was
// lost with a scheduler that died.
func (e *Engine) checkTimers() {
	now := time.Now()
	nowMs := now.UnixMilli()
	type due struct {
		rec  jobstore.Record
		what string
	}
	var todo []due
	e.mu.Lock()
	for _, t := range e.active {
		if t.busy {
			continue
		}
		j := t.rec.Job
		what := ""
		switch {
		case j.GetDeadlineMs() > 0 && nowMs >= j.GetDeadlineMs():
			what = "deadline"
		case j.GetState() == lifecycle.Pending && nowMs >= j.GetNextAttemptMs():
			what = "dispatch"
		case j.GetState() == lifecycle.Running && now.After(t.leaseUntil):
			what = "lease"
		case lifecycle.Active(j.GetState()) && j.GetState() != lifecycle.Pending &&
			nowMs > j.GetAttemptStartedMs()+(e.timeout(j.GetRequest())+e.leaseTTL()).Milliseconds():
			what = "attempt-timeout"
		case j.GetState() == lifecycle.Dispatched && j.GetPendingReason() == "" &&
			nowMs > j.GetAttemptStartedMs()+e.cfg.AckTimeout.Milliseconds():
			what = "unconfirmed"
		}
		if what != "" {
			todo = append(todo, due{t.rec, what})
		}
	}
	e.mu.Unlock()

	for _, d := range todo {
		id := d.rec.Job.GetJobId()
		rec, ok := e.claim(id)
		if !ok {
			continue
		}
		switch d.what {
		case "dispatch":
			if e.placed(e.poolOf(rec.Job.GetRequest())) {
				e.readmitDue(rec) // drain, below, places it
			} else {
				e.dispatch(rec)
			}
		case "unconfirmed":
			e.unconfirmed(rec)
		default:
			e.expire(rec, d.what)
		}
		e.release(id)
	}
	if e.queues != nil {
		e.preg.Expire()
		e.drain()
	}
}

func (e *Engine) leaseTTL() time.Duration {
	return time.Duration(e.cfg.LeaseMisses) * e.cfg.LeaseInterval
}

// expire acts on one timer.
func (e *Engine) expire(rec jobstore.Record, what string) {
	attempt := rec.Job.GetAttempt()
	state := rec.Job.GetState()
	var outcome string
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.Attempt != attempt || j.State != state {
			return false // it moved meanwhile; the next tick decides again
		}
		switch what {
		case "deadline":
			j.State = lifecycle.Timeout
			j.Error = "deadline exceeded"
			if j.PendingReason != "" && state == lifecycle.Pending {
				j.Error += " while pending: " + j.PendingReason
			}
		case "lease":
			e.stats.leasesLost.Add(1)
			outcome = e.failAttempt(j, fmt.Sprintf("worker %s lost its lease on attempt %d (no heartbeat for %s)", j.WorkerId, j.Attempt, e.leaseTTL()), false)
			j.NextAttemptMs = 0 // a dead worker's jobs go elsewhere at once
		case "attempt-timeout":
			outcome = e.failAttempt(j, fmt.Sprintf("attempt %d timed out after %s", j.Attempt, e.timeout(j.Request)), true)
		}
		return true
	})
	if err != nil {
		e.log.Error("timer action failed", "job_id", rec.Job.GetJobId(), "what", what, "err", err)
		return
	}
	if written {
		if what == "lease" {
			e.log.Warn("lease lost", "job_id", rec.Job.JobId, "worker_id", rec.Job.WorkerId, "attempt", attempt, "outcome", outcome)
		}
		e.finished(rec)
	}
}

// ---- cancel and query ----

// serveCancel and serveQuery answer a cancel or query that came on subject
// (sys.job.<verb>[.<identity>]) with its NATS reply subject reply, once
// its requester is known and reply is its own (identify); nil means no
// answer.
func (e *Engine) serveCancel(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket {
	return e.serve(wire.SubjectCancel, subject, reply, p, decodeErr, e.handleCancel)
}

func (e *Engine) serveQuery(subject, reply string, p *pb.BusPacket, decodeErr error) *pb.BusPacket {
	return e.serve(wire.SubjectQuery, subject, reply, p, decodeErr, e.handleQuery)
}

func (e *Engine) serve(base, subject, reply string, p *pb.BusPacket, decodeErr error,
	handle func(tenancy.Principal, *pb.BusPacket) *pb.BusPacket) *pb.BusPacket {
	who, drop, err := e.identify(base, subject, reply)
	switch {
	case drop:
		return nil
	case decodeErr != nil: // the sender is waiting: tell it what was wrong
		return e.answer(nil, refusal(decodeErr.Error(), false))
	case err != nil:
		return e.answer(p, refusal(err.Error(), false))
	}
	return handle(who, p)
}

// notFound is the answer about a job that does not exist, or that the
// requester may not see: the two are not told apart.
func (e *Engine) notFound(p *pb.BusPacket, what, id string) *pb.BusPacket {
	return e.answer(p, refusal(fmt.Sprintf("%s %s: %v", what, id, jobstore.ErrNotFound), false))
}

func (e *Engine) handleCancel(who tenancy.Principal, p *pb.BusPacket) *pb.BusPacket {
	c := p.GetJobCancel()
	if c == nil {
		return e.answer(p, refusal("sys.job.cancel takes a job_cancel packet", false))
	}
	if err := validateCancel(c); err != nil {
		e.stats.invalidPackets.Add(1)
		return e.answer(p, refusal(err.Error(), false))
	}
	ctx, cancel := e.storeCtx()
	defer cancel()
	rec, err := e.cfg.Store.Get(ctx, c.GetJobId())
	if err != nil {
		return e.answer(p, refusal(fmt.Sprintf("job %s: %v", c.GetJobId(), err), storeRetryable(err)))
	}
	if !who.Sees(rec.Job.GetRequest().GetTenant()) {
		return e.notFound(p, "job", c.GetJobId())
	}
	reason := c.GetReason()
	if reason == "" {
		reason = "cancelled by request"
	}
	var was *pb.JobInfo
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if lifecycle.Terminal(j.State) {
			return false
		}
		was = cloneInfo(j)
		j.State = lifecycle.Cancelled
		j.Error = reason
		return true
	})
	if err != nil {
		return e.answer(p, refusal(err.Error(), true))
	}
	if !written {
		return e.answer(p, &pb.JobAnswer{Error: "job already " + lifecycle.Name(rec.Job.GetState()), Jobs: []*pb.JobInfo{rec.Job}})
	}
	e.stats.cancelled.Add(1)
	if w := was.GetWorkerId(); w != "" && e.workerSubjectOK(rec.Job.GetJobId(), w) {
		// Tell the worker, so the handler's context is cancelled.
		msg := wire.NewPacket(rec.Job.TraceId, e.cfg.ID)
		msg.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: rec.Job.JobId, Reason: reason}}
		if err := e.cfg.Bus.Publish(wire.WorkerCancelSubject(w), msg); err != nil {
			e.log.Warn("telling the worker of a cancel failed", "job_id", rec.Job.JobId, "worker_id", w, "err", err)
		}
	}
	e.log.Info("job cancelled", "job_id", rec.Job.JobId, "was", lifecycle.Name(was.GetState()), "reason", reason)
	return e.answer(p, &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{rec.Job}})
}

func (e *Engine) handleQuery(who tenancy.Principal, p *pb.BusPacket) *pb.BusPacket {
	q := p.GetJobQuery()
	if q == nil {
		return e.answer(p, refusal("sys.job.query takes a job_query packet", false))
	}
	if err := validateQuery(q); err != nil {
		e.stats.invalidPackets.Add(1)
		return e.answer(p, refusal(err.Error(), false))
	}
	ctx, cancel := e.storeCtx()
	defer cancel()
	limit := int(q.GetLimit())
	if limit <= 0 {
		limit = 100
	}
	switch {
	case q.GetWorkers():
		return e.answer(p, &pb.JobAnswer{Ok: true, Workers: e.workersFor(who)})
	case q.GetDeadLetter() && q.GetRedrive():
		return e.answer(p, e.redrive(ctx, who, q.GetJobId()))
	case q.GetDeadLetter():
		jobs, err := e.deadLetters(ctx, who, limit)
		if err != nil {
			return e.answer(p, refusal(err.Error(), true))
		}
		return e.answer(p, &pb.JobAnswer{Ok: true, Jobs: jobs})
	case q.GetJobId() != "":
		rec, err := e.cfg.Store.Get(ctx, q.GetJobId())
		if errors.Is(err, jobstore.ErrNotFound) {
			if n := e.intakeBacklog(ctx); n > 0 {
				// Its submission may be one of those received and not yet
				// recorded: not a "not found" to give up on.
				e.stats.notYetRecorded.Add(1)
				return e.answer(p, refusal(fmt.Sprintf("job %s: %s (%d submissions received are being recorded); ask again",
					q.GetJobId(), NotRecordedYet, n), true))
			}
		}
		if err != nil {
			return e.answer(p, refusal(fmt.Sprintf("job %s: %v", q.GetJobId(), err), storeRetryable(err)))
		}
		if !who.Sees(rec.Job.GetRequest().GetTenant()) {
			return e.notFound(p, "job", q.GetJobId())
		}
		job := rec.Job
		if r := e.pendingReason(job); r != "" && r != job.GetPendingReason() {
			job = cloneInfo(job) // why it waits now, as this replica's queues see it
			job.PendingReason = r
		}
		return e.answer(p, &pb.JobAnswer{Ok: true, Jobs: []*pb.JobInfo{job}})
	default:
		return e.answer(p, e.listPage(ctx, who, q, limit))
	}
}

// deadLetters lists up to limit dead letters the requester may see, oldest
// first.
func (e *Engine) deadLetters(ctx context.Context, who tenancy.Principal, limit int) ([]*pb.JobInfo, error) {
	if !who.Restricted() {
		return e.cfg.DeadLetters.List(ctx, limit)
	}
	jobs, err := e.cfg.DeadLetters.List(ctx, 0)
	if err != nil {
		return nil, err
	}
	jobs = slices.DeleteFunc(jobs, func(j *pb.JobInfo) bool { return !who.Sees(j.GetRequest().GetTenant()) })
	if len(jobs) > limit {
		jobs = jobs[:limit]
	}
	return jobs, nil
}

// NotRecordedYet is the answer to a get of a job the store does not hold
// while submissions received are still being recorded: it may be one of
// them, so the answer is retryable, not "not found".
const NotRecordedYet = "not recorded yet"

// intakeBacklog is how many submissions the bus has received and not yet
// handed back (0 when it cannot tell): over core NATS those this replica
// holds, with durable intake those the shared stream holds.
func (e *Engine) intakeBacklog(ctx context.Context) int {
	n, err := e.cfg.Bus.Backlog(ctx, wire.SubjectSubmit)
	if err != nil {
		e.log.Warn("reading the intake backlog failed", "err", err)
	}
	return n
}

// maxListAnswerBytes bounds the jobs of one list answer, well under the
// bus's packet limit (1 MiB by default): a page of large jobs ends early,
// with a token for the rest.
const maxListAnswerBytes = 512 << 10

// listPage answers a list query with one page of the store, newest first:
// bounded work per query (jobstore.PageQuery), whatever the store holds.
func (e *Engine) listPage(ctx context.Context, who tenancy.Principal, q *pb.JobQuery, limit int) *pb.JobAnswer {
	tenant := q.GetTenant()
	if who.Restricted() { // its tenant's jobs only: another tenant's look like none
		if tenant != "" && !who.Sees(tenant) {
			return &pb.JobAnswer{Ok: true}
		}
		tenant = who.Tenant
	}
	page, err := e.cfg.Store.ListPage(ctx, jobstore.PageQuery{
		Filter: jobstore.Filter{State: q.GetState(), Topic: q.GetTopic(), Tenant: tenant},
		Token:  q.GetPageToken(),
		Size:   limit,
	})
	if errors.Is(err, jobstore.ErrBadPageToken) {
		return refusal("page_token: "+err.Error(), false)
	}
	if err != nil {
		return refusal(err.Error(), true)
	}
	a := &pb.JobAnswer{Ok: true, NextPageToken: page.Next, Jobs: make([]*pb.JobInfo, 0, len(page.Records))}
	size := 0
	for i, r := range page.Records {
		job := r.Job
		if why := e.pendingReason(job); why != "" && why != job.GetPendingReason() {
			job = cloneInfo(job) // why it waits now, as in job get
			job.PendingReason = why
		}
		if size += job.SizeVT(); size > maxListAnswerBytes && i > 0 {
			a.NextPageToken = jobstore.PageTokenBefore(page.Records[i-1].Revision)
			break
		}
		a.Jobs = append(a.Jobs, job)
	}
	return a
}

// redrive takes a job out of the dead-letter queue and submits its request
// again as a new job, <job_id>-redrive-<n>: the failed job itself stays
// FAILED, as every terminal job does. A dead letter the requester may not
// see is, to it, one that does not exist.
func (e *Engine) redrive(ctx context.Context, who tenancy.Principal, id string) *pb.JobAnswer {
	notFound := refusal(fmt.Sprintf("dead letter %s: %v", id, jobstore.ErrNotFound), false)
	if who.Restricted() {
		// Look before taking: another tenant's dead letter stays where it is.
		if rec, err := e.cfg.Store.Get(ctx, id); err == nil && !who.Sees(rec.Job.GetRequest().GetTenant()) {
			return notFound
		}
	}
	job, err := e.cfg.DeadLetters.Take(ctx, id)
	if err != nil {
		return refusal(fmt.Sprintf("dead letter %s: %v", id, err), storeRetryable(err))
	}
	if !who.Sees(job.GetRequest().GetTenant()) { // the record said otherwise: put it back
		if err := e.cfg.DeadLetters.Put(ctx, job); err != nil {
			e.log.Error("returning a dead letter failed", "job_id", id, "err", err)
		}
		return notFound
	}
redrive:
	for n := 1; n <= 100; n++ {
		req := proto.CloneOf(job.GetRequest())
		req.JobId = fmt.Sprintf("%s-redrive-%d", id, n)
		req.Attempt = 0
		answer, created, err := e.admit(req, job.GetTraceId(), true)
		switch {
		case err != nil:
			break redrive
		case created: // a new job, PENDING or DISPATCHED (or DENIED by today's policy)
			e.log.Info("dead letter re-driven", "job_id", id, "new_job_id", req.JobId, "ok", answer.GetOk())
			return answer
		case answer.GetOk() || strings.HasPrefix(answer.GetError(), conflictPrefix):
			continue // that id was taken by an earlier re-drive: try the next
		default:
			break redrive
		}
	}
	// Put it back: nothing may be lost on the way.
	if err := e.cfg.DeadLetters.Put(ctx, job); err != nil {
		e.log.Error("returning a dead letter failed", "job_id", id, "err", err)
	}
	return refusal("re-driving "+id+" failed; it stays in the dead-letter queue", true)
}

// storeRetryable reports whether asking again may be answered otherwise: not
// for a job that does not exist, nor for an id no job can have.
func storeRetryable(err error) bool {
	return !errors.Is(err, jobstore.ErrNotFound) && !errors.Is(err, jobstore.ErrInvalidID)
}

func (e *Engine) answer(p *pb.BusPacket, a *pb.JobAnswer) *pb.BusPacket {
	out := wire.NewPacket(p.GetTraceId(), e.cfg.ID)
	out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: a}
	return out
}
