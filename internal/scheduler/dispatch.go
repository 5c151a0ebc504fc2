package scheduler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// The hand-off. A dispatch is one compare-and-set (PENDING -> DISPATCHED,
// attempt + 1) and one publish whose NATS reply subject names the job and
// the attempt: <ackPrefix>.<attempt>.<job_id>. What comes back on it decides
// what follows, asynchronously, with no goroutine or timer per job:
//   - a JobAck: the worker holds attempt n -> RUNNING;
//   - a refusal (JobAnswer): the worker is full or draining -> PENDING;
//   - "no responders" from the server: nobody is subscribed -> PENDING;
//   - the result itself: a worker that finishes quickly does not confirm
//     first, its result completes the job from DISPATCHED;
//   - nothing within AckTimeout: see unconfirmed.
// A refused or unheard attempt number is given back: nobody holds it.

// ackPrefix is the reply-subject prefix of this replica's dispatches.
func (e *Engine) ackPrefix() string { return e.ackPfx }

// appendReplySubject appends <ackPrefix><attempt>.<jobID> to b.
func (e *Engine) appendReplySubject(b []byte, attempt int32, jobID string) []byte {
	b = append(b, e.ackPfx...)
	b = strconv.AppendInt(b, int64(attempt), 10)
	b = append(b, '.')
	return append(b, jobID...)
}

// tryDispatch dispatches a PENDING job now unless this replica is already
// working on it.
func (e *Engine) tryDispatch(id string) {
	rec, ok := e.claim(id)
	if !ok {
		return
	}
	defer e.release(id)
	e.dispatch(rec)
}

// dispatch moves a due PENDING job to DISPATCHED and publishes it on the
// subject the SchedulingStrategy picks (the jobs of pools that place by
// what workers report go through drain instead).
func (e *Engine) dispatch(rec jobstore.Record) {
	job := rec.Job
	if job.GetState() != lifecycle.Pending || time.Now().UnixMilli() < job.GetNextAttemptMs() {
		return
	}
	subject, err := e.subjectFor(job.Request)
	if err != nil {
		if verr := ValidateRequest(job.Request); verr != nil {
			// Stored before today's bounds (by an earlier version): no
			// subject will ever do. Only on this path, not per dispatch.
			e.undeliverable(rec, lifecycle.Pending, job.Attempt, "the stored request is out of bounds: "+verr.Error())
			return
		}
		e.stats.unroutable.Add(1)
		e.requeue(rec, lifecycle.Pending, job.Attempt, job.Attempt, "no subject for the job: "+err.Error(), e.cfg.NoWorkerRetry)
		return
	}
	e.dispatchTo(rec, subject, "")
}

// subjectFor asks the SchedulingStrategy where req goes.
func (e *Engine) subjectFor(req *pb.JobRequest) (string, error) {
	var workers map[string]*pb.Heartbeat
	if !e.blind {
		workers = e.cfg.Registry.Snapshot() // a copy per job: only for strategies that look
	}
	return e.cfg.Strategy.PickSubject(req, workers)
}

// pickSubject is subjectFor for admission, which dispatches at once only
// when the strategy has an answer; else the job is recorded PENDING and
// dispatch asks again (and counts and explains the failure).
func (e *Engine) pickSubject(req *pb.JobRequest) (string, bool) {
	subject, err := e.subjectFor(req)
	return subject, err == nil
}

// dispatchTo moves a due PENDING job to DISPATCHED, to workerID when
// placement chose one, and publishes it on subject. It reports whether the
// job was dispatched.
//
// The attempt is recorded as the worker's only when it goes to that
// worker's own subject (sys.worker.<id>.job), where nobody else can take it.
// On a topic the queue group picks a worker, whichever placement counted it
// against: the one that takes it names itself by its confirmation, or by its
// result. Only that worker's result is then accepted (applyResult).
func (e *Engine) dispatchTo(rec jobstore.Record, subject, workerID string) bool {
	job := rec.Job
	if workerID != "" && subject != wire.WorkerJobSubject(workerID) {
		workerID = ""
	}
	if job.GetState() != lifecycle.Pending || time.Now().UnixMilli() < job.GetNextAttemptMs() {
		return false
	}
	if job.GetAwaitingSafety() {
		var ok bool
		if rec, ok = e.recheckSafety(rec); !ok {
			return false
		}
		job = rec.Job
	}
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Pending || time.Now().UnixMilli() < j.NextAttemptMs {
			return false
		}
		j.State = lifecycle.Dispatched
		j.Attempt++
		j.WorkerId = workerID
		j.PendingReason = ""
		j.AttemptStartedMs = time.Now().UnixMilli()
		return true
	})
	if err != nil {
		e.log.Error("recording dispatch failed", "job_id", job.JobId, "err", err)
	}
	if !written {
		return false
	}
	e.publishDispatch(rec, subject, time.Now())
	return true
}

// dispatchPacket is the packet publishDispatch builds for a job, and its
// reply subject. The bus encodes and writes both before PublishRequest
// returns and keeps neither (see Bus), so they are pooled: this runs for
// every job.
type dispatchPacket struct {
	packet  pb.BusPacket
	created timestamppb.Timestamp
	payload pb.BusPacket_JobRequest
	req     pb.JobRequest
	reply   []byte // the reply subject's bytes
}

var dispatchPackets = sync.Pool{New: func() any { return new(dispatchPacket) }}

// publishDispatch publishes the DISPATCHED job rec on subject, stamped now;
// a failed publish puts it back to PENDING.
func (e *Engine) publishDispatch(rec jobstore.Record, subject string, now time.Time) {
	job := rec.Job
	attempt := job.Attempt
	workerID := job.WorkerId
	d := dispatchPackets.Get().(*dispatchPacket)
	copyRequest(&d.req, job.Request)
	d.req.Attempt = attempt
	d.req.TimeoutMs = e.timeout(&d.req).Milliseconds()
	d.payload.JobRequest = &d.req
	d.packet.Payload = &d.payload
	wire.StampAt(&d.packet, &d.created, job.TraceId, e.cfg.ID, now)
	d.reply = e.appendReplySubject(d.reply[:0], attempt, job.JobId)
	err := e.cfg.Bus.PublishRequest(subject, unsafe.String(unsafe.SliceData(d.reply), len(d.reply)), &d.packet)
	reply := d.reply[:0]
	*d = dispatchPacket{reply: reply} // drop the references to the job before pooling
	dispatchPackets.Put(d)
	if err != nil {
		e.stats.dispatchErrors.Add(1)
		if errors.Is(err, wire.ErrUnpublishable) {
			// Trying again would fail the same way, for ever.
			e.undeliverable(rec, lifecycle.Dispatched, attempt, "cannot be dispatched: "+err.Error())
			return
		}
		e.log.Error("dispatch failed", "job_id", job.JobId, "subject", clip(subject), "err", err)
		e.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "dispatch failed: "+err.Error(), e.cfg.NoWorkerRetry)
		return // the requeue freed what placement held
	}
	e.stats.dispatched.Add(1)
	if e.debug() {
		e.log.Debug("dispatched", "job_id", job.JobId, "subject", subject, "worker_id", workerID, "attempt", attempt, "trace_id", job.TraceId)
	}
}

// handleReply takes what came back on a dispatch's reply subject.
func (e *Engine) handleReply(subject string, p *pb.BusPacket, noResponders bool) {
	n, jobID, ok := strings.Cut(strings.TrimPrefix(subject, e.ackPrefix()), ".")
	a, err := strconv.ParseInt(n, 10, 32)
	if !ok || err != nil {
		e.stats.unknown.Add(1)
		return
	}
	attempt := int32(a)
	rec, ok := e.cached(jobID)
	if !ok {
		// Finished meanwhile (its result came first), or not ours; or
		// cancelled while the dispatch was on its way, and then the worker
		// that took it must be told.
		if ack := p.GetJobAck(); ack != nil && validateAck(ack) == nil {
			ctx, cancel := e.storeCtx()
			defer cancel()
			if cur, err := e.cfg.Store.Get(ctx, jobID); err == nil {
				e.cancelledBeforeAck(cur.Job, attempt, ack.GetWorkerId())
			}
		}
		return
	}
	topic := rec.Job.GetRequest().GetTopic()
	switch {
	case noResponders:
		e.stats.noResponders.Add(1)
		e.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "no live worker subscribed to "+topic, e.noWorkerDelay(rec.Job))
	case p.GetJobAck() != nil:
		ack := p.GetJobAck()
		if err := validateAck(ack); err != nil {
			// The job waits for its result or AckTimeout, as unheard.
			e.stats.invalidPackets.Add(1)
			e.log.Warn("refused a confirmation", "job_id", jobID, "attempt", attempt, "err", err)
			return
		}
		cur, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
			if j.State != lifecycle.Dispatched || j.Attempt != attempt {
				return false // a result got there first, or the job was cancelled
			}
			j.State = lifecycle.Running
			j.WorkerId = ack.GetWorkerId()
			j.PendingReason = ""
			return true
		})
		if err != nil {
			e.log.Error("recording confirmation failed", "job_id", jobID, "err", err)
		} else if !written {
			e.cancelledBeforeAck(cur.Job, attempt, ack.GetWorkerId())
		}
	case p.GetJobAnswer() != nil && !p.GetJobAnswer().GetOk():
		e.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "worker refused the job: "+cut(p.GetJobAnswer().GetError()), e.cfg.NoWorkerRetry)
	default:
		e.stats.unknown.Add(1)
	}
}

// cancelledBeforeAck tells a worker that confirmed attempt n of a job
// cancelled while the dispatch was on its way to cancel it: the cancel had no
// worker to tell, and the handler would run to its end for nothing.
func (e *Engine) cancelledBeforeAck(job *pb.JobInfo, attempt int32, workerID string) {
	if job.GetState() != lifecycle.Cancelled || job.GetAttempt() != attempt || workerID == "" || !e.workerSubjectOK(job.GetJobId(), workerID) {
		return
	}
	msg := wire.NewPacket(job.GetTraceId(), e.cfg.ID)
	msg.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: job.GetJobId(), Reason: job.GetError()}}
	if err := e.cfg.Bus.Publish(wire.WorkerCancelSubject(workerID), msg); err != nil {
		e.log.Warn("telling the worker of a cancel failed", "job_id", job.GetJobId(), "worker_id", workerID, "err", err)
	}
}

// noWorkerDelay is how long a job no worker took waits before it is offered
// again: NoWorkerRetry at first, then a quarter of the time it has waited so
// far, at most 5s, so that a topic nobody serves costs little.
func (e *Engine) noWorkerDelay(j *pb.JobInfo) time.Duration {
	waited := time.Since(time.UnixMilli(j.GetCreatedMs()))
	return max(e.cfg.NoWorkerRetry, min(5*time.Second, waited/4))
}

// undeliverable fails a job in state from at attempt that can never be
// published: its subject is too long or invalid, its packet too large, its
// stored request out of bounds. Retried, it would fail the same way for
// ever; it is FAILED with the reason, not dead-lettered (run again as it
// is, it would fail again).
func (e *Engine) undeliverable(rec jobstore.Record, from pb.JobState, attempt int32, reason string) {
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != from || j.Attempt != attempt {
			return false
		}
		j.State = lifecycle.Failed
		j.Error = reason
		j.PendingReason = ""
		return true
	})
	if err != nil {
		e.log.Error("recording an undeliverable job failed", "job_id", rec.Job.GetJobId(), "err", err)
		return
	}
	if written {
		e.stats.undeliverable.Add(1)
		e.log.Error("job failed: it cannot be dispatched", "job_id", rec.Job.GetJobId(),
			"topic", clip(rec.Job.GetRequest().GetTopic()), "reason", reason, "trace_id", rec.Job.GetTraceId())
	}
}

// requeue sends a job in state from at attempt expect back to PENDING with
// attempt, a reason, and a delay before it is offered again.
func (e *Engine) requeue(rec jobstore.Record, from pb.JobState, expect, attempt int32, reason string, delay time.Duration) {
	_, _, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != from || j.Attempt != expect {
			return false
		}
		j.State = lifecycle.Pending
		j.Attempt = attempt
		j.PendingReason = reason
		j.NextAttemptMs = time.Now().Add(delay).UnixMilli()
		return true
	})
	if err != nil {
		e.log.Error("requeue failed", "job_id", rec.Job.GetJobId(), "err", err)
	}
}

// unconfirmed handles a dispatch that nothing answered within AckTimeout. If
// workers that confirm serve the topic, the hand-off is taken as failed
// (the worker died, or a scheduler died before it heard back) and the job is
// offered again at once; its attempt is spent, since it may have run. If not,
// the subscriber is a worker that does not confirm, as in the design
// document: the job stays DISPATCHED, waiting for its result or its timeout.
//
// Not knowing a confirming worker does not mean there is none, and taking the
// silence for a worker that does not confirm leaves the job waiting for its
// timeout. So a topic served by confirming workers within confirmMemory
// still counts as one (the registry forgets workers whose heartbeats stopped,
// as during a NATS outage); and a job dispatched before this replica started
// (by a replica that stopped or died before hearing back) is decided only
// once the replica has listened to heartbeats for an interval.
func (e *Engine) unconfirmed(rec jobstore.Record) {
	attempt := rec.Job.GetAttempt()
	topic := rec.Job.GetRequest().GetTopic()
	confirming := e.confirmingWorkerServes(topic) || e.confirmedLately(topic)
	if !confirming && rec.Job.GetAttemptStartedMs() < e.started.UnixMilli() && time.Since(e.started) < DefaultHeartbeatInterval {
		return // a later tick decides
	}
	e.stats.unconfirmed.Add(1)
	if confirming {
		reason := fmt.Sprintf("no worker confirmed attempt %d within %s", attempt, e.cfg.AckTimeout)
		e.requeue(rec, lifecycle.Dispatched, attempt, attempt, reason, 0)
		return
	}
	_, _, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Dispatched || j.Attempt != attempt {
			return false
		}
		j.PendingReason = "delivered to " + topic + "; waiting for the result (the worker does not confirm)"
		return true
	})
	if err != nil {
		e.log.Error("recording dispatch failed", "job_id", rec.Job.GetJobId(), "err", err)
	}
}

// confirmMemory is how long a topic counts as served by workers that confirm
// after the last heartbeat of one.
const confirmMemory = time.Minute

// confirmedLately reports whether a worker that confirms heartbeated serving
// topic within confirmMemory.
func (e *Engine) confirmedLately(topic string) bool { return e.heartbeats.confirmedLately(topic) }

func (e *Engine) confirmingWorkerServes(topic string) bool {
	for _, hb := range e.cfg.Registry.Snapshot() {
		if !hb.GetConfirms() || hb.GetDraining() {
			continue
		}
		for _, t := range hb.GetTopics() {
			if t == topic {
				return true
			}
		}
	}
	return false
}

// recheckSafety asks the safety checker again about a job admitted while it
// could not decide. It returns the job's record and true when it may be
// dispatched now.
func (e *Engine) recheckSafety(rec jobstore.Record) (jobstore.Record, bool) {
	v, err := e.cfg.Safety.Check(safety.WithTraceID(context.Background(), rec.Job.GetTraceId()), rec.Job.GetRequest())
	if err == nil {
		e.observeSafety(rec.Job.GetRequest(), rec.Job.GetTraceId(), v)
	}
	rec, written, werr := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Pending || !j.AwaitingSafety {
			return false
		}
		switch {
		case err != nil:
			j.PendingReason = SafetyUnavailableReason + "; checked again before dispatch"
			j.NextAttemptMs = time.Now().Add(e.cfg.NoWorkerRetry).UnixMilli()
		case v.Decision == SafetyThrottle:
			j.PendingReason = "throttled by the safety policy: " + v.Reason
			j.NextAttemptMs = time.Now().Add(max(v.RetryAfter, e.cfg.Tick)).UnixMilli()
		case v.Decision != SafetyAllow:
			j.State = lifecycle.Denied
			j.Error = "denied by the safety policy: " + v.Reason
			j.PendingReason = ""
			j.AwaitingSafety = false
		default:
			j.AwaitingSafety = false
			j.PendingReason = "waiting to be dispatched"
		}
		j.RuleId, j.PolicyVersion = v.RuleID, v.PolicyVersion
		return true
	})
	if werr != nil {
		e.log.Error("recording the safety decision failed", "job_id", rec.Job.GetJobId(), "err", werr)
		return rec, false
	}
	if written && rec.Job.GetState() == lifecycle.Denied {
		e.stats.denied.Add(1)
		e.safetyLog.Info("job blocked", "job_id", rec.Job.GetJobId(), "topic", rec.Job.GetRequest().GetTopic(),
			"reason", v.Reason, "rule_id", v.RuleID, "trace_id", rec.Job.GetTraceId())
	}
	return rec, written && rec.Job.GetState() == lifecycle.Pending && !rec.Job.GetAwaitingSafety()
}
