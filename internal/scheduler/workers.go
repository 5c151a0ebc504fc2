package scheduler

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// heartbeats hears the workers: it checks that a heartbeat or result names the
// worker its subject names (worker identity), and applies heartbeats: the
// worker registries learn of the worker, the leases of the jobs it holds are
// renewed, and the topics served by workers that confirm are remembered.
//
// It owns the memory of which topics a confirming worker served lately
// (confirmSeen, under its own lock), read by the dispatcher
// (confirmedLately). It reaches the other parts directly: the job cache
// renews leases, results go to the results part, and the placer is woken
// when a heartbeat may have freed room; packets of other kinds go to the
// engine's HandlePacket (other). Its subscription ("heartbeats") is a
// part the engine starts and stops (parts.go); it has no loop of its own.
type heartbeats struct {
	log             *slog.Logger
	stats           *counters
	registry        WorkerRegistry
	preg            *placement.Registry // placement's registry, when it is not registry; nil without placement
	placing         bool                // placement queues jobs: a heartbeat wakes it
	requireIdentity bool
	leaseInterval   time.Duration
	leaseMisses     int
	cache           *jobCache
	results         *results
	placer          *placer
	other           packetHandler // the engine: packets that are neither heartbeats nor results
	replyWarn       warnLimit     // results asking for answers in another's inbox: logged at most once a second

	mu          sync.Mutex
	confirmSeen map[string]time.Time // topic -> when a worker that confirms last heartbeated serving it
}

// packetHandler handles a packet that needs no answer (Engine.HandlePacket).
type packetHandler interface {
	HandlePacket(p *pb.BusPacket)
}

// ---- worker identity ----

// A worker names itself in the subjects it publishes on
// (sys.heartbeat.<kind>.<worker_id>, sys.job.result.<worker_id>), and the
// server's permissions let its user publish on those only
// (docs/security.md). A packet whose worker_id is not the worker its subject
// names is refused; with RequireWorkerIdentity, so is one on a subject that
// names none.

// handleHeartbeatOn handles a packet that came on a heartbeat subject.
func (w *heartbeats) handleHeartbeatOn(subject string, p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		if w.identified("heartbeat", subject, payload.Heartbeat.GetWorkerId(), wire.HeartbeatSubjectWorker) {
			w.heartbeat(payload.Heartbeat)
		}
	case *pb.BusPacket_JobResult:
		if w.identified("result", subject, payload.JobResult.GetWorkerId(), wire.HeartbeatSubjectWorker) {
			_ = w.results.handleResultPacket(p, payload.JobResult.GetWorkerId()) // the subject's worker, or on a bare subject the claim
		}
	case *pb.BusPacket_JobRequest:
		if w.requireIdentity {
			// A worker's user may publish here; submitting is the clients'.
			w.stats.identityRejected.Add(1)
			w.log.Warn("refused a submission on a heartbeat subject", "subject", subject, "sender_id", p.GetSenderId())
			return
		}
		w.other.HandlePacket(p)
	default:
		w.other.HandlePacket(p)
	}
}

// handleResultOn handles a result that came on subject, if the subject may
// carry it. A refused result is acknowledged: it is never redelivered.
//
// With RequireWorkerIdentity, a result that asks for an answer (replyTo)
// gets one only in its worker's own inbox (_INBOX.<worker id>.), as a
// client's request does: one asking for it elsewhere is handled all the
// same, and not answered (wire.ErrNotAnswered), counted and logged.
func (w *heartbeats) handleResultOn(subject string, p *pb.BusPacket, replyTo string) error {
	res := p.GetJobResult()
	if res != nil && !w.identified("result", subject, res.GetWorkerId(), wire.ResultSubjectWorker) {
		return nil
	}
	// The sender is the worker the subject names, which identified found
	// equal to the result's worker_id; on the bare subject, the claim.
	from, named := wire.ResultSubjectWorker(subject)
	if !named {
		from = res.GetWorkerId()
	}
	err := w.results.handleResultPacket(p, from)
	if err != nil || !named || !w.requireIdentity || replyTo == "" {
		return err
	}
	if rerr := checkReply(from, replyTo, "", nil); rerr != nil {
		w.stats.repliesRefused.Add(1)
		if ok, suppressed := w.replyWarn.allow(time.Now()); ok {
			w.log.Warn("not answering a result: it names a reply subject its worker may not read", "subject", clip(subject),
				"reply", clip(replyTo), "worker_id", clip(from), "err", rerr, "not_logged_since_last", suppressed)
		}
		return wire.ErrNotAnswered
	}
	return nil
}

// identified reports whether a packet of worker claimed that came on
// subject may be applied; named reads the worker the subject names. It
// counts and logs a refusal.
func (w *heartbeats) identified(what, subject, claimed string, named func(string) (string, bool)) bool {
	id, ok := named(subject)
	switch {
	case ok && id == claimed:
		return true
	case !ok && !w.requireIdentity:
		return true // the design document's bare subjects
	}
	w.stats.identityRejected.Add(1)
	if ok {
		w.log.Warn("refused a packet whose subject names another worker", "packet", what,
			"subject", clip(subject), "subject_worker", clip(id), "worker_id", clip(claimed))
	} else {
		w.log.Warn("refused a packet on a subject that names no worker (require_worker_identity)", "packet", what,
			"subject", clip(subject), "worker_id", clip(claimed))
	}
	return false
}

// ---- heartbeats and leases ----

// heartbeat applies a worker's heartbeat.
func (w *heartbeats) heartbeat(hb *pb.Heartbeat) {
	if err := validateHeartbeat(hb); err != nil {
		w.stats.invalidPackets.Add(1)
		w.log.Warn("refused a heartbeat", "worker_id", clip(hb.GetWorkerId()), "err", err)
		return
	}
	w.stats.heartbeats.Add(1)
	if w.log.Enabled(context.Background(), slog.LevelDebug) {
		w.log.Debug("heartbeat", "worker_id", hb.GetWorkerId(), "type", hb.GetType(),
			"cpu", hb.GetCpuLoad(), "gpu", hb.GetGpuUtilization(), "active_jobs", hb.GetActiveJobs())
	}
	w.registry.UpdateHeartbeat(hb)
	if w.preg != nil {
		w.preg.UpdateHeartbeat(hb)
	}
	if w.placing && len(hb.GetTopics()) > 0 {
		defer w.placer.drain() // room may have freed, or a worker with a missing capability come
	}
	if hb.GetConfirms() && !hb.GetDraining() && len(hb.GetTopics()) > 0 {
		now := time.Now()
		w.mu.Lock()
		if w.confirmSeen == nil {
			w.confirmSeen = make(map[string]time.Time)
		}
		for _, t := range hb.GetTopics() {
			w.confirmSeen[t] = now
		}
		w.mu.Unlock()
	}
	if len(hb.GetHeld()) == 0 {
		return
	}
	interval := time.Duration(hb.GetIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = w.leaseInterval
	}
	w.cache.renewLeases(hb.GetWorkerId(), hb.GetHeld(), time.Now().Add(time.Duration(w.leaseMisses)*interval))
}

// confirmedLately reports whether a worker that confirms heartbeated serving
// topic within confirmMemory.
func (w *heartbeats) confirmedLately(topic string) bool {
	w.mu.Lock()
	at, ok := w.confirmSeen[topic]
	w.mu.Unlock()
	return ok && time.Since(at) < confirmMemory
}
