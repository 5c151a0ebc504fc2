package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

// dispatcher is the engine's hand-off part: it moves PENDING jobs to
// DISPATCHED and publishes them (on the subject the SchedulingStrategy picks,
// or the one the placer chose), hears what comes back on the reply subjects
// ("dispatch replies" subscription), acts on dispatches nobody confirmed,
// and asks the safety checker again about jobs admitted while it could not
// decide. It holds no job state (the job cache does, and claims and
// compare-and-set are the cache's); what it owns is the reply-subject
// prefix of this replica's dispatches and when the engine started. It
// reaches the placer (jobs of placed pools go through its queues), the
// heartbeats part (which topics confirming workers served lately) and the
// job cache directly.
type dispatcher struct {
	id        string
	log       *slog.Logger
	safetyLog *slog.Logger
	// blockedLevel: as admission's, for a job denied on the second check.
	blockedLevel slog.Level
	stats        *counters
	bus          Bus
	store        JobStore
	safety       SafetyChecker
	observer     Observer
	strategy     SchedulingStrategy
	registry     WorkerRegistry
	// blind: the strategy does not look at the workers, so no registry
	// snapshot is taken per job.
	blind bool
	// ackPfx is the reply-subject prefix of this replica's dispatches:
	// _CORTEX.ack.<id>.
	ackPfx        string
	times         jobTimes
	ackTimeout    time.Duration
	noWorkerRetry time.Duration
	tick          time.Duration
	// started is when the engine last started: the registry knows the
	// workers only after a heartbeat interval. Set by Engine.Start before
	// any part runs.
	started time.Time

	cache      *jobCache
	placer     *placer
	heartbeats *heartbeats
}

func (d *dispatcher) debug() bool { return d.log.Enabled(context.Background(), slog.LevelDebug) }

// dispatchDue dispatches a job whose retry is due (the timers call it), or,
// in a pool that places jobs, queues it again for the placer.
func (d *dispatcher) dispatchDue(rec jobstore.Record) {
	if d.placer.placed(d.placer.poolOf(rec.Job.GetRequest())) {
		d.placer.readmitDue(rec) // drain, in the placer's tick, places it
	} else {
		d.dispatch(rec)
	}
}

// appendReplySubject appends <ackPrefix><attempt>.<jobID> to b.
func (d *dispatcher) appendReplySubject(b []byte, attempt int32, jobID string) []byte {
	b = append(b, d.ackPfx...)
	b = strconv.AppendInt(b, int64(attempt), 10)
	b = append(b, '.')
	return append(b, jobID...)
}

// tryDispatch dispatches a PENDING job now unless this replica is already
// working on it.
func (d *dispatcher) tryDispatch(id string) {
	rec, ok := d.cache.claim(id)
	if !ok {
		return
	}
	defer d.cache.release(id)
	d.dispatch(rec)
}

// dispatch moves a due PENDING job to DISPATCHED and publishes it on the
// subject the SchedulingStrategy picks (the jobs of pools that place by
// what workers report go through the placer's drain instead).
func (d *dispatcher) dispatch(rec jobstore.Record) {
	job := rec.Job
	if job.GetState() != lifecycle.Pending || time.Now().UnixMilli() < job.GetNextAttemptMs() {
		return
	}
	subject, err := d.subjectFor(job.Request)
	if err != nil {
		if verr := ValidateRequest(job.Request); verr != nil {
			// Stored before today's bounds (by an earlier version): no
			// subject will ever do. Only on this path, not per dispatch.
			d.undeliverable(rec, lifecycle.Pending, job.Attempt, "the stored request is out of bounds: "+verr.Error())
			return
		}
		d.stats.unroutable.Add(1)
		d.requeue(rec, lifecycle.Pending, job.Attempt, job.Attempt, "no subject for the job: "+err.Error(), d.noWorkerRetry)
		return
	}
	d.dispatchTo(rec, subject, "")
}

// subjectFor asks the SchedulingStrategy where req goes.
func (d *dispatcher) subjectFor(req *pb.JobRequest) (string, error) {
	var workers map[string]*pb.Heartbeat
	if !d.blind {
		workers = d.registry.Snapshot() // a copy per job: only for strategies that look
	}
	return d.strategy.PickSubject(req, workers)
}

// pickSubject is subjectFor for admission, which dispatches at once only
// when the strategy has an answer; else the job is recorded PENDING and
// dispatch asks again (and counts and explains the failure).
func (d *dispatcher) pickSubject(req *pb.JobRequest) (string, bool) {
	subject, err := d.subjectFor(req)
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
func (d *dispatcher) dispatchTo(rec jobstore.Record, subject, workerID string) bool {
	job := rec.Job
	if workerID != "" && subject != wire.WorkerJobSubject(workerID) {
		workerID = ""
	}
	if job.GetState() != lifecycle.Pending || time.Now().UnixMilli() < job.GetNextAttemptMs() {
		return false
	}
	if job.GetAwaitingSafety() {
		var ok bool
		if rec, ok = d.recheckSafety(rec); !ok {
			return false
		}
		job = rec.Job
	}
	rec, written, err := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
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
		d.log.Error("recording dispatch failed", "job_id", job.JobId, "err", err)
	}
	if !written {
		return false
	}
	d.publishDispatch(rec, subject, time.Now())
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
func (d *dispatcher) publishDispatch(rec jobstore.Record, subject string, now time.Time) {
	job := rec.Job
	attempt := job.Attempt
	workerID := job.WorkerId
	pk := dispatchPackets.Get().(*dispatchPacket)
	copyRequest(&pk.req, job.Request)
	pk.req.Attempt = attempt
	pk.req.TimeoutMs = d.times.timeout(&pk.req).Milliseconds()
	pk.payload.JobRequest = &pk.req
	pk.packet.Payload = &pk.payload
	wire.StampAt(&pk.packet, &pk.created, job.TraceId, d.id, now)
	pk.reply = d.appendReplySubject(pk.reply[:0], attempt, job.JobId)
	err := d.bus.PublishRequest(subject, unsafe.String(unsafe.SliceData(pk.reply), len(pk.reply)), &pk.packet)
	reply := pk.reply[:0]
	*pk = dispatchPacket{reply: reply} // drop the references to the job before pooling
	dispatchPackets.Put(pk)
	if err != nil {
		d.stats.dispatchErrors.Add(1)
		if errors.Is(err, wire.ErrUnpublishable) {
			// Trying again would fail the same way, for ever.
			d.undeliverable(rec, lifecycle.Dispatched, attempt, "cannot be dispatched: "+err.Error())
			return
		}
		d.log.Error("dispatch failed", "job_id", job.JobId, "subject", clip(subject), "err", err)
		d.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "dispatch failed: "+err.Error(), d.noWorkerRetry)
		return // the requeue freed what placement held
	}
	d.stats.dispatched.Add(1)
	if d.debug() {
		d.log.Debug("dispatched", "job_id", job.JobId, "subject", subject, "worker_id", workerID, "attempt", attempt, "trace_id", job.TraceId)
	}
}

// handleReply takes what came back on a dispatch's reply subject.
func (d *dispatcher) handleReply(subject string, p *pb.BusPacket, noResponders bool) {
	n, jobID, ok := strings.Cut(strings.TrimPrefix(subject, d.ackPfx), ".")
	a, err := strconv.ParseInt(n, 10, 32)
	if !ok || err != nil {
		d.stats.unknown.Add(1)
		return
	}
	attempt := int32(a)
	rec, ok := d.cache.cached(jobID)
	if !ok {
		// Finished meanwhile (its result came first), or not ours; or
		// cancelled while the dispatch was on its way, and then the worker
		// that took it must be told.
		if ack := p.GetJobAck(); ack != nil && validateAck(ack) == nil {
			ctx, cancel := storeCtx()
			defer cancel()
			if cur, err := d.store.Get(ctx, jobID); err == nil {
				d.cancelledBeforeAck(cur.Job, attempt, ack.GetWorkerId())
			}
		}
		return
	}
	topic := rec.Job.GetRequest().GetTopic()
	switch {
	case noResponders:
		d.stats.noResponders.Add(1)
		d.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "no live worker subscribed to "+topic, d.noWorkerDelay(rec.Job))
	case p.GetJobAck() != nil:
		ack := p.GetJobAck()
		if err := validateAck(ack); err != nil {
			// The job waits for its result or AckTimeout, as unheard.
			d.stats.invalidPackets.Add(1)
			d.log.Warn("refused a confirmation", "job_id", jobID, "attempt", attempt, "err", err)
			return
		}
		cur, written, err := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
			if j.State != lifecycle.Dispatched || j.Attempt != attempt {
				return false // a result got there first, or the job was cancelled
			}
			j.State = lifecycle.Running
			j.WorkerId = ack.GetWorkerId()
			j.PendingReason = ""
			return true
		})
		if err != nil {
			d.log.Error("recording confirmation failed", "job_id", jobID, "err", err)
		} else if !written {
			d.cancelledBeforeAck(cur.Job, attempt, ack.GetWorkerId())
		}
	case p.GetJobAnswer() != nil && !p.GetJobAnswer().GetOk():
		d.requeue(rec, lifecycle.Dispatched, attempt, attempt-1, "worker refused the job: "+cut(p.GetJobAnswer().GetError()), d.noWorkerRetry)
	default:
		d.stats.unknown.Add(1)
	}
}

// cancelledBeforeAck tells a worker that confirmed attempt n of a job
// cancelled while the dispatch was on its way to cancel it: the cancel had no
// worker to tell, and the handler would run to its end for nothing.
func (d *dispatcher) cancelledBeforeAck(job *pb.JobInfo, attempt int32, workerID string) {
	if job.GetState() != lifecycle.Cancelled || job.GetAttempt() != attempt || workerID == "" || !workerSubjectOK(d.log, job.GetJobId(), workerID) {
		return
	}
	msg := wire.NewPacket(job.GetTraceId(), d.id)
	msg.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: job.GetJobId(), Reason: job.GetError()}}
	if err := d.bus.Publish(wire.WorkerCancelSubject(workerID), msg); err != nil {
		d.log.Warn("telling the worker of a cancel failed", "job_id", job.GetJobId(), "worker_id", workerID, "err", err)
	}
}

// noWorkerDelay is how long a job no worker took (or one the safety checker
// could not decide on) waits before it is offered (asked about) again:
// NoWorkerRetry at first, then a quarter of the time it has waited so
// far, at most 5s, so that a topic nobody serves costs little.
func (d *dispatcher) noWorkerDelay(j *pb.JobInfo) time.Duration {
	waited := time.Since(time.UnixMilli(j.GetCreatedMs()))
	return max(d.noWorkerRetry, min(5*time.Second, waited/4))
}

// undeliverable fails a job in state from at attempt that can never be
// published: its subject is too long or invalid, its packet too large, its
// stored request out of bounds. Retried, it would fail the same way for
// ever; it is FAILED with the reason, not dead-lettered (run again as it
// is, it would fail again).
func (d *dispatcher) undeliverable(rec jobstore.Record, from pb.JobState, attempt int32, reason string) {
	rec, written, err := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != from || j.Attempt != attempt {
			return false
		}
		j.State = lifecycle.Failed
		j.Error = reason
		j.PendingReason = ""
		return true
	})
	if err != nil {
		d.log.Error("recording an undeliverable job failed", "job_id", rec.Job.GetJobId(), "err", err)
		return
	}
	if written {
		d.stats.undeliverable.Add(1)
		d.log.Error("job failed: it cannot be dispatched", "job_id", rec.Job.GetJobId(),
			"topic", clip(rec.Job.GetRequest().GetTopic()), "reason", reason, "trace_id", rec.Job.GetTraceId())
	}
}

// requeue sends a job in state from at attempt expect back to PENDING with
// attempt, a reason, and a delay before it is offered again.
func (d *dispatcher) requeue(rec jobstore.Record, from pb.JobState, expect, attempt int32, reason string, delay time.Duration) {
	_, _, err := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
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
		d.log.Error("requeue failed", "job_id", rec.Job.GetJobId(), "err", err)
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
func (d *dispatcher) unconfirmed(rec jobstore.Record) {
	attempt := rec.Job.GetAttempt()
	topic := rec.Job.GetRequest().GetTopic()
	confirming := d.confirmingWorkerServes(topic) || d.heartbeats.confirmedLately(topic)
	if !confirming && rec.Job.GetAttemptStartedMs() < d.started.UnixMilli() && time.Since(d.started) < DefaultHeartbeatInterval {
		return // a later tick decides
	}
	d.stats.unconfirmed.Add(1)
	if confirming {
		reason := fmt.Sprintf("no worker confirmed attempt %d within %s", attempt, d.ackTimeout)
		d.requeue(rec, lifecycle.Dispatched, attempt, attempt, reason, 0)
		return
	}
	_, _, err := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Dispatched || j.Attempt != attempt {
			return false
		}
		j.PendingReason = "delivered to " + topic + "; waiting for the result (the worker does not confirm)"
		return true
	})
	if err != nil {
		d.log.Error("recording dispatch failed", "job_id", rec.Job.GetJobId(), "err", err)
	}
}

// confirmMemory is how long a topic counts as served by workers that confirm
// after the last heartbeat of one.
const confirmMemory = time.Minute

func (d *dispatcher) confirmingWorkerServes(topic string) bool {
	for _, hb := range d.registry.Snapshot() {
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
func (d *dispatcher) recheckSafety(rec jobstore.Record) (jobstore.Record, bool) {
	v, err := d.safety.Check(safety.WithTraceID(context.Background(), rec.Job.GetTraceId()), rec.Job.GetRequest())
	if err == nil {
		observeSafety(d.observer, rec.Job.GetRequest(), rec.Job.GetTraceId(), v)
	}
	rec, written, werr := d.cache.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Pending || !j.AwaitingSafety {
			return false
		}
		switch {
		case err != nil:
			j.PendingReason = SafetyUnavailableReason + "; checked again before dispatch"
			// Backing off as a job no worker takes does: a kernel down for
			// long costs each waiting job a store write per 5 s, not one
			// per NoWorkerRetry.
			j.NextAttemptMs = time.Now().Add(d.noWorkerDelay(j)).UnixMilli()
		case v.Decision == SafetyThrottle:
			j.PendingReason = "throttled by the safety policy: " + v.Reason
			j.NextAttemptMs = time.Now().Add(max(v.RetryAfter, d.tick)).UnixMilli()
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
		d.log.Error("recording the safety decision failed", "job_id", rec.Job.GetJobId(), "err", werr)
		return rec, false
	}
	if written && rec.Job.GetState() == lifecycle.Denied {
		d.stats.denied.Add(1)
		d.safetyLog.Log(context.Background(), d.blockedLevel, "job blocked", "job_id", rec.Job.GetJobId(), "topic", rec.Job.GetRequest().GetTopic(),
			"reason", v.Reason, "rule_id", v.RuleID, "trace_id", rec.Job.GetTraceId())
	}
	return rec, written && rec.Job.GetState() == lifecycle.Pending && !rec.Job.GetAwaitingSafety()
}
