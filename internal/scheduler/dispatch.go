package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// startDispatch hands a PENDING job to a dispatch goroutine. With wait, it
// waits for a free dispatch slot (backpressure on intake); without, a job
// finding no slot is left for the next tick.
func (e *Engine) startDispatch(t *tracked, wait bool) {
	id := t.rec.Job.GetJobId()
	rec, ok := e.claim(id)
	if !ok {
		return
	}
	if wait {
		e.dispatching <- struct{}{}
	} else {
		select {
		case e.dispatching <- struct{}{}:
		default:
			e.release(id)
			return
		}
	}
	e.inflight.Add(1)
	go func() {
		defer func() {
			<-e.dispatching
			e.release(id)
			e.inflight.Done()
		}()
		e.dispatch(rec)
	}()
}

// dispatch moves a PENDING job to DISPATCHED (attempt + 1), hands it to a
// worker and records what came of it: RUNNING on the worker's confirmation,
// back to PENDING when no worker took it.
func (e *Engine) dispatch(rec jobstore.Record) {
	job := rec.Job
	if job.GetState() != lifecycle.Pending || time.Now().UnixMilli() < job.GetNextAttemptMs() {
		return
	}
	var workers map[string]*pb.Heartbeat
	if !e.blind {
		workers = e.cfg.Registry.Snapshot() // a copy per job: only for strategies that look
	}
	subject, err := e.cfg.Strategy.PickSubject(job.Request, workers)
	if err != nil {
		e.stats.unroutable.Add(1)
		e.requeue(rec, job.Attempt, "no subject for the job: "+err.Error(), e.cfg.NoWorkerRetry)
		return
	}
	rec, written, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Pending || time.Now().UnixMilli() < j.NextAttemptMs {
			return false
		}
		j.State = lifecycle.Dispatched
		j.Attempt++
		j.WorkerId = ""
		j.PendingReason = ""
		j.AttemptStartedMs = time.Now().UnixMilli()
		return true
	})
	if err != nil {
		e.log.Error("[SCHEDULER] recording dispatch failed", "job_id", job.JobId, "err", err)
	}
	if !written {
		return
	}
	attempt := rec.Job.Attempt
	req := proto.Clone(job.Request).(*pb.JobRequest)
	req.Attempt = attempt
	req.TimeoutMs = e.timeout(req).Milliseconds()

	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.AckTimeout)
	defer cancel()
	e.stats.dispatched.Add(1)
	if e.debug() {
		e.log.Debug("[SCHEDULER] 🚀 dispatched", "job_id", job.JobId, "subject", subject, "attempt", attempt, "trace_id", job.TraceId)
	}
	reply, err := e.cfg.Bus.Request(ctx, subject, wire.JobRequestPacket(job.TraceId, e.cfg.ID, req))
	switch {
	case errors.Is(err, wire.ErrNoResponders):
		e.stats.noResponders.Add(1)
		// Nobody received attempt n: it is not spent, and may be reused.
		e.requeue(rec, attempt-1, "no live worker subscribed to "+subject, e.cfg.NoWorkerRetry)
	case err != nil:
		e.unconfirmed(rec, subject, err)
	case reply.GetJobAck() != nil:
		ack := reply.GetJobAck()
		if ack.GetJobId() != job.JobId || ack.GetAttempt() != attempt {
			e.unconfirmed(rec, subject, fmt.Errorf("confirmation for %s attempt %d", ack.GetJobId(), ack.GetAttempt()))
			return
		}
		_, _, err := e.mutate(rec, func(j *pb.JobInfo) bool {
			if j.State != lifecycle.Dispatched || j.Attempt != attempt {
				return false // a result got there first, or the job was cancelled
			}
			j.State = lifecycle.Running
			j.WorkerId = ack.GetWorkerId()
			return true
		})
		if err != nil {
			e.log.Error("[SCHEDULER] recording confirmation failed", "job_id", job.JobId, "err", err)
		}
	case reply.GetJobAnswer() != nil && !reply.GetJobAnswer().GetOk():
		// The worker refused before starting (at capacity, draining).
		e.requeue(rec, attempt-1, "worker refused the job: "+reply.GetJobAnswer().GetError(), e.cfg.NoWorkerRetry)
	default:
		e.unconfirmed(rec, subject, errors.New("unexpected answer to a dispatch"))
	}
}

// requeue sends a DISPATCHED or PENDING job back to PENDING with a reason,
// to be offered again after delay.
func (e *Engine) requeue(rec jobstore.Record, attempt int32, reason string, delay time.Duration) {
	prevAttempt := rec.Job.GetAttempt()
	_, _, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if (j.State != lifecycle.Pending && j.State != lifecycle.Dispatched) || j.Attempt != prevAttempt {
			return false
		}
		j.State = lifecycle.Pending
		j.Attempt = attempt
		j.PendingReason = reason
		j.NextAttemptMs = time.Now().Add(delay).UnixMilli()
		return true
	})
	if err != nil {
		e.log.Error("[SCHEDULER] requeue failed", "job_id", rec.Job.GetJobId(), "err", err)
	}
}

// unconfirmed handles a dispatch that reached a subscriber that did not
// confirm in time. If workers that confirm serve the subject, the hand-off
// is taken as failed and the job offered again (its attempt spent: it may
// have run). Otherwise the subscriber is a worker that does not confirm, as
// in the design document: the job stays DISPATCHED, covered by its timeout.
func (e *Engine) unconfirmed(rec jobstore.Record, subject string, cause error) {
	e.stats.unconfirmed.Add(1)
	attempt := rec.Job.GetAttempt()
	if e.confirmingWorkerServes(subject) {
		reason := fmt.Sprintf("no worker confirmed attempt %d within %s (%v)", attempt, e.cfg.AckTimeout, cause)
		e.requeue(rec, attempt, reason, 0)
		return
	}
	_, _, err := e.mutate(rec, func(j *pb.JobInfo) bool {
		if j.State != lifecycle.Dispatched || j.Attempt != attempt {
			return false
		}
		j.PendingReason = "delivered to " + subject + "; waiting for the result (the worker does not confirm)"
		return true
	})
	if err != nil {
		e.log.Error("[SCHEDULER] recording dispatch failed", "job_id", rec.Job.GetJobId(), "err", err)
	}
}

func (e *Engine) confirmingWorkerServes(subject string) bool {
	for _, hb := range e.cfg.Registry.Snapshot() {
		if !hb.GetConfirms() || hb.GetDraining() {
			continue
		}
		for _, t := range hb.GetTopics() {
			if t == subject {
				return true
			}
		}
	}
	return false
}
