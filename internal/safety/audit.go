package safety

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Subjects and queue group of the safety kernel on the bus.
const (
	// SubjectCheck takes safety checks: a BusPacket with a job_request,
	// answered (request-reply) with a BusPacket with a safety_verdict.
	SubjectCheck = "sys.safety.check"
	// SubjectAudit carries a BusPacket with a safety_verdict for every
	// decision: job_id, tenant, topic, decision, rule_id, policy_version,
	// reason, retry_after_ms, decided_ms and decided_by.
	SubjectAudit = "sys.safety.audit"
	// QueueGroup is the queue group of the safety services on SubjectCheck:
	// each check goes to one of them.
	QueueGroup = "cortex-safety"
)

// Publisher publishes packets; *bus.NatsBus is one. Publish must not keep
// the packet after it returns (a BusAuditor reuses it).
type Publisher interface {
	Publish(subject string, packet *pb.BusPacket) error
}

// AuditorConfig configures a BusAuditor.
type AuditorConfig struct {
	// Bus publishes the records. Required.
	Bus Publisher
	// Subject is where records go. Default SubjectAudit.
	Subject string
	// Buffer is how many records may wait to be published; when it is full
	// Record drops the record (counted). Default 4096.
	Buffer int
	// SenderID signs the packets. Default "cortex-safety".
	SenderID string
	// Logger receives publish failures and drops, at most one line a
	// second. Default slog.Default().
	Logger *slog.Logger
}

// AuditStats counts what a BusAuditor did.
type AuditStats struct {
	Published uint64
	Dropped   uint64 // the buffer was full, or the auditor had stopped
	Failed    uint64 // the bus refused the publish
}

// BusAuditor publishes audit records on the bus, from its own goroutine, so
// that Record never waits: it is the Config.Audit hook of a Kernel, or,
// with no record allocated per decision, its Config.Auditor (Decided).
//
// Records are taken in batches: Record appends to a list under a lock and
// wakes the publisher only when the list was empty; the publisher takes the
// whole list and publishes its records one by one, in order. Under load that
// is one wake-up per batch instead of a channel hand-off per record.
type BusAuditor struct {
	cfg  AuditorConfig
	log  *slog.Logger
	wake chan struct{} // one token: records are waiting

	qmu   sync.Mutex
	queue []auditEntry // waiting, oldest first; at most cfg.Buffer
	spare []auditEntry // the list the publisher emptied last, reused

	published, dropped, failed atomic.Uint64
	lastWarnNs                 atomic.Int64

	out struct { // publish's packet, reused
		packet  pb.BusPacket
		created timestamppb.Timestamp
		payload pb.BusPacket_SafetyVerdict
		verdict pb.SafetyVerdict // a Decided entry's record
	}

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	running atomic.Bool
}

// NewBusAuditor returns an auditor; run it with Run or Start.
func NewBusAuditor(cfg AuditorConfig) (*BusAuditor, error) {
	if cfg.Bus == nil {
		return nil, errors.New("safety: AuditorConfig.Bus is required")
	}
	if cfg.Buffer < 0 {
		return nil, errors.New("safety: AuditorConfig.Buffer is negative")
	}
	if cfg.Subject == "" {
		cfg.Subject = SubjectAudit
	}
	if cfg.Buffer == 0 {
		cfg.Buffer = 4096
	}
	if cfg.SenderID == "" {
		cfg.SenderID = "cortex-safety"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &BusAuditor{cfg: cfg, log: cfg.Logger.With(logging.ComponentKey, logging.ComponentSafety), wake: make(chan struct{}, 1)}, nil
}

// auditEntry is a record waiting to be published: rec, given to Record, or
// when rec is nil the fields of a decision given to Decided, kept by value
// so that no record is allocated for it.
type auditEntry struct {
	rec                  *pb.SafetyVerdict
	verdict              Verdict
	jobID, tenant, topic string
	decidedBy            string
	decidedMs            int64
}

// Record queues rec for publishing, or drops it (counted) if the buffer is
// full. It never blocks.
func (a *BusAuditor) Record(rec *pb.SafetyVerdict) { a.enqueue(auditEntry{rec: rec}) }

// Decided queues the record of a decision, the one Record(Record(req, v,
// decidedBy, at)) would publish, without building it: its fields wait by
// value and are published through one reused record, so that a decision
// costs no allocation. It never blocks. It is the Config.Auditor of a
// Kernel.
func (a *BusAuditor) Decided(req *pb.JobRequest, v Verdict, decidedBy string, at time.Time) {
	a.enqueue(auditEntry{verdict: v, jobID: req.GetJobId(), tenant: req.GetTenant(), topic: req.GetTopic(),
		decidedBy: decidedBy, decidedMs: at.UnixMilli()})
}

// record is the record e stands for: its own, or out filled in from its
// fields.
func (e *auditEntry) record(out *pb.SafetyVerdict) *pb.SafetyVerdict {
	if e.rec != nil {
		return e.rec
	}
	fillRecord(out, e.jobID, e.tenant, e.topic, e.verdict, e.decidedBy, e.decidedMs)
	return out
}

func (a *BusAuditor) enqueue(e auditEntry) {
	a.qmu.Lock()
	if len(a.queue) >= a.cfg.Buffer {
		a.qmu.Unlock()
		a.dropped.Add(1)
		a.warn("audit buffer full; record dropped", "dropped_total", a.dropped.Load())
		return
	}
	if a.queue == nil {
		a.queue = make([]auditEntry, 0, min(a.cfg.Buffer, 64))
	}
	a.queue = append(a.queue, e)
	first := len(a.queue) == 1
	a.qmu.Unlock()
	if first {
		select {
		case a.wake <- struct{}{}:
		default: // already woken
		}
	}
}

// take returns the waiting records and leaves an empty list (the previous
// batch's, emptied) in their place.
func (a *BusAuditor) take() []auditEntry {
	a.qmu.Lock()
	batch := a.queue
	a.queue, a.spare = a.spare[:0], nil
	a.qmu.Unlock()
	return batch
}

// publishBatch publishes batch, then hands the emptied list back for reuse.
func (a *BusAuditor) publishBatch(batch []auditEntry) {
	if len(batch) == 0 {
		return
	}
	now := time.Now() // one clock read per batch: its records are published together
	for i := range batch {
		a.publish(batch[i].record(&a.out.verdict), now)
	}
	a.out.verdict = pb.SafetyVerdict{} // keeps no request's strings alive
	clear(batch)
	a.qmu.Lock()
	if a.spare == nil && cap(batch) <= max(64, a.cfg.Buffer) {
		a.spare = batch[:0]
	}
	a.qmu.Unlock()
}

// Run publishes records until ctx ends, then publishes what is still
// buffered and returns nil. One Run at a time.
func (a *BusAuditor) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("safety: BusAuditor is already running")
	}
	defer a.running.Store(false)
	for {
		select {
		case <-a.wake:
			a.publishBatch(a.take())
		case <-ctx.Done():
			for {
				batch := a.take()
				if len(batch) == 0 {
					return nil
				}
				a.publishBatch(batch)
			}
		}
	}
}

// Start runs the auditor in a goroutine until Stop.
func (a *BusAuditor) Start() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		_ = a.Run(ctx)
	}(a.done)
}

// Stop ends what Start started, after publishing what is buffered.
func (a *BusAuditor) Stop() {
	a.mu.Lock()
	cancel, done := a.cancel, a.done
	a.cancel, a.done = nil, nil
	a.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// publish publishes one record, its packet stamped with now. Only Run's
// goroutine calls it, so the packet, its time stamp and its payload wrapper
// are reused: a record is published for every decision.
func (a *BusAuditor) publish(rec *pb.SafetyVerdict, now time.Time) {
	o := &a.out
	wire.StampAt(&o.packet, &o.created, "", a.cfg.SenderID, now)
	o.payload.SafetyVerdict = rec
	o.packet.Payload = &o.payload
	err := a.cfg.Bus.Publish(a.cfg.Subject, &o.packet)
	o.payload.SafetyVerdict, o.packet.Payload = nil, nil
	if err != nil {
		a.failed.Add(1)
		a.warn("publishing an audit record failed", "subject", a.cfg.Subject, "err", err, "failed_total", a.failed.Load())
		return
	}
	a.published.Add(1)
}

// warn logs at most once a second.
func (a *BusAuditor) warn(msg string, args ...any) {
	now := time.Now().UnixNano()
	last := a.lastWarnNs.Load()
	if now-last < int64(time.Second) || !a.lastWarnNs.CompareAndSwap(last, now) {
		return
	}
	a.log.Warn(msg, args...)
}

// Stats returns the auditor's counters.
func (a *BusAuditor) Stats() AuditStats {
	return AuditStats{Published: a.published.Load(), Dropped: a.dropped.Load(), Failed: a.failed.Load()}
}
