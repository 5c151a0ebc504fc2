package scheduler

import (
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

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
