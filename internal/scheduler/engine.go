package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Stats counts what the engine did. All fields are cumulative.
type Stats struct {
	Submitted      uint64 // job requests received
	Accepted       uint64 // new jobs recorded PENDING
	Rejected       uint64 // invalid requests: no job created
	Denied         uint64 // refused by the safety checker: recorded DENIED
	Duplicates     uint64 // resubmissions of an existing job, answered with it
	Conflicts      uint64 // an existing job_id with different content
	Dispatched     uint64 // dispatches sent
	NoResponders   uint64 // dispatches no worker was subscribed for
	Unconfirmed    uint64 // dispatches no worker confirmed in time
	Unroutable     uint64 // no subject could be picked
	Results        uint64 // results received
	StaleResults   uint64 // results of an attempt that was no longer current: fenced
	LateResults    uint64 // results for jobs already finished: ignored
	Completed      uint64
	Retries        uint64 // attempts sent back to PENDING
	LeasesLost     uint64
	DeadLettered   uint64
	Cancelled      uint64
	Heartbeats     uint64
	Alerts         uint64
	Unknown        uint64 // packets with a payload the engine does not handle
	StoreErrors    uint64
	DispatchErrors uint64
	Throttled      uint64 // submissions refused for now by a throttle rule
	Backpressure   uint64 // submissions refused because their pool's or tenant's queue was full
	// SafetyUnavailable counts safety checks that got no decision (a remote
	// kernel did not answer): the job failed closed.
	SafetyUnavailable uint64
	// IdentityRejected counts heartbeats and results refused because their
	// subject names another worker (or, with RequireWorkerIdentity, none).
	IdentityRejected uint64
	// RepliesRefused counts submissions, queries and cancels that named a
	// reply subject outside the requester's own inbox: not acted on, not
	// answered.
	RepliesRefused uint64
	// ClientsRefused counts requests refused for their requester: a subject
	// that names no valid identity, no identity where Clients requires one,
	// an identity bound to nothing, a tenant's client acting for another
	// tenant.
	ClientsRefused uint64
	// ForeignResults counts results refused because their worker is not
	// the one the attempt was dispatched to or confirmed by.
	ForeignResults uint64
	// UntrustedResults counts results that name no attempt, refused
	// because DocumentWorkers is refuse.
	UntrustedResults uint64
	// InvalidPackets counts heartbeats, results, confirmations, cancels and
	// queries refused because a field is out of its bounds (FieldLimits).
	// Submissions out of bounds count in Rejected.
	InvalidPackets uint64
	// Undeliverable counts jobs failed because they can never be published
	// (wire.ErrUnpublishable: a subject too long or invalid, a packet too
	// large) or were stored with a request out of today's bounds.
	Undeliverable uint64
	// NotYetRecorded counts gets of a job the store did not hold answered
	// "not recorded yet" (retryable), as submissions were still being
	// recorded.
	NotYetRecorded uint64
}

// Engine is the scheduler's control loop. Its replicas share one JobStore.
type Engine struct {
	cfg Config
	log *slog.Logger // component=scheduler
	// safetyLog carries the safety decisions the scheduler makes on the
	// checker's answer (component=safety).
	safetyLog *slog.Logger

	mu     sync.Mutex
	active map[string]tracked // non-terminal jobs known to this replica; values, not pointers: no allocation per job

	// confirmSeen: topic -> when a worker that confirms last heartbeated
	// serving it (see confirmedLately).
	confirmMu   sync.Mutex
	confirmSeen map[string]time.Time

	// runMu guards the lifecycle. It is not mu: draining waits for handlers
	// that take mu.
	runMu   sync.Mutex
	parts   parts // what Start starts and Stop stops (parts.go)
	running bool
	started time.Time // when Start ran: the registry knows the workers only after a heartbeat interval

	// blind: the strategy does not look at the workers, so no registry
	// snapshot is taken per job.
	blind bool
	// ackPfx is the reply-subject prefix of this replica's dispatches.
	ackPfx string
	// stubSafety: the checker is the design document's stub, which reads no
	// trace id.
	stubSafety bool

	// Placement (placement.go). queues is nil when no pool places jobs by
	// what workers report: then nothing of it runs per job.
	pools      *placement.Pools
	preg       *placement.Registry
	queues     *placement.Queues
	placeMu    sync.Mutex // drain's decisions
	regVersion uint64     // the registry version drain last woke the queues at

	stats struct {
		submitted, accepted, rejected, denied, duplicates, conflicts, dispatched, noResponders,
		unconfirmed, unroutable, results, stale, late, completed, retries, leasesLost, deadLettered,
		cancelled, heartbeats, alerts, unknown, storeErrors, dispatchErrors, throttled, safetyUnavailable, backpressure,
		identityRejected, repliesRefused, clientsRefused, foreignResults, untrustedResults, invalidPackets, undeliverable atomic.Uint64
		notYetRecorded atomic.Uint64
	}
	// ownInbox is this replica's inbox prefix with its trailing dot ("" when
	// the bus has none of its own): no request is answered there.
	ownInbox string
	// Refusals are logged at most once a second of each kind.
	replyWarn, clientWarn warnLimit
}

// tracked is this replica's view of an active job.
type tracked struct {
	rec        jobstore.Record
	leaseUntil time.Time // RUNNING: the worker must have heartbeated by then
	busy       bool      // a dispatch or timer action of this replica holds it
}

// New validates cfg, fills in its defaults and returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:       cfg,
		log:       cfg.Logger.With(logging.ComponentKey, logging.ComponentScheduler),
		safetyLog: cfg.Logger.With(logging.ComponentKey, logging.ComponentSafety),
		active:    make(map[string]tracked),
		blind:     cfg.Strategy.WorkerBlind(),
		ackPfx:    "_CORTEX.ack." + cfg.ID + ".",
		pools:     cfg.Placement,
	}
	_, e.stubSafety = cfg.Safety.(*SafetyStub)
	if pfx := cfg.Bus.InboxPrefix(); strings.HasPrefix(pfx, wire.InboxRoot+".") {
		e.ownInbox = pfx + "."
	}
	if e.pools == nil {
		if pr, ok := cfg.Registry.(*placement.Registry); ok {
			e.pools = pr.Pools()
		}
	}
	if e.pools != nil {
		if pr, ok := cfg.Registry.(*placement.Registry); ok {
			e.preg = pr
		} else {
			e.preg = placement.NewRegistry(placement.RegistryOptions{Pools: e.pools})
		}
		e.queues = placement.NewQueues(placement.QueueOptions{Pools: e.pools})
		placing := false
		for _, p := range e.pools.List() {
			placing = placing || e.placed(p)
		}
		if def, ok := placement.LookupStrategy(e.pools.Config().DefaultStrategy); ok {
			if b, blind := def.(placement.WorkerBlind); !blind || !b.WorkerBlind() {
				placing = true // implicit pools place
			}
		}
		if !placing {
			e.queues = nil
		}
	}
	e.parts = e.assemble()
	return e, nil
}

// NewEngine is the design document's constructor, with an in-memory job
// store. It panics on a nil dependency; use New to get an error instead.
func NewEngine(bus Bus, safety SafetyChecker, reg WorkerRegistry, strat SchedulingStrategy) *Engine {
	e, err := New(Config{Bus: bus, Safety: safety, Registry: reg, Strategy: strat})
	if err != nil {
		panic(err)
	}
	return e
}

// ID is this replica's sender id.
func (e *Engine) ID() string { return e.cfg.ID }

// assemble names the engine's parts, in start order. Every replica sees
// every heartbeat (no queue group: the design document put heartbeats in the
// queue group, so each of two replicas saw only part of them); submissions,
// results, queries and cancels are shared by the replicas.
func (e *Engine) assemble() parts {
	var ps parts
	if !e.cfg.Store.InProcess() {
		// Other replicas write to the store: follow their changes.
		ps.loops = append(ps.loops, newLoop("store watch", e.watchStore))
	}
	ps.loops = append(ps.loops, newLoop("timers", e.timerLoop))
	bus, group := e.cfg.Bus, e.cfg.QueueGroup
	ps.subs = []part{
		newSubscription("heartbeats", func() (func() error, error) {
			return bus.SubscribeWithSubject(wire.SubjectHeartbeats, "", e.handleHeartbeatOn)
		}),
		newSubscription("dispatch replies", func() (func() error, error) {
			return bus.SubscribeReplies(e.ackPrefix()+">", e.handleReply)
		}),
		newSubscription("results", func() (func() error, error) {
			return bus.ConsumeTree(wire.SubjectResult, group+"-results", e.handleResultOn)
		}),
		newSubscription("queries", func() (func() error, error) {
			return bus.ServeTree(wire.SubjectQuery, group, e.serveQuery)
		}),
		newSubscription("cancels", func() (func() error, error) {
			return bus.ServeTree(wire.SubjectCancel, group, e.serveCancel)
		}),
		newSubscription("intake", func() (func() error, error) {
			// sys.job.submit and sys.job.submit.<identity>
			return bus.ConsumeTree(wire.SubjectSubmit, group, e.handleSubmitOn)
		}),
	}
	return ps
}

// watchStore follows the changes other replicas make to the job store.
func (e *Engine) watchStore(ctx context.Context) {
	if err := e.cfg.Store.Watch(ctx, func(r jobstore.Record) { e.observe(r) }); err != nil && ctx.Err() == nil {
		e.log.Error("job store watch ended", "err", err)
	}
}

// Start starts the engine's parts: the store watch and the timers, then the
// subscriptions, the intake last.
func (e *Engine) Start(ctx context.Context) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	if e.running {
		return errors.New("scheduler: already started")
	}
	e.started = time.Now()
	if err := e.parts.start(ctx); err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	e.running = true
	// Started means the server has the subscriptions: a submission sent
	// from now on is heard (over core NATS, one sent before would be lost).
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := e.cfg.Bus.Flush(fctx)
	cancel()
	if err != nil {
		e.log.Warn("flushing the subscriptions failed", "err", err)
	}
	e.log.InfoContext(ctx, "started", "id", e.cfg.ID, "queue_group", e.cfg.QueueGroup)
	return nil
}

// ErrStopTimeout is wrapped, with ctx's error, by Stop when ctx ends before
// the engine's parts have drained.
var ErrStopTimeout = errors.New("scheduler: stop did not finish in time")

// Stop stops the timers and intake first, then lets the packets already
// received be handled. Nothing is left half-written: every change to a job
// is one compare-and-set, and no dispatch goes out once its answer can no
// longer be heard. If ctx ends first, Stop returns an error wrapping
// ErrStopTimeout and ctx.Err(); the draining goes on to its end in the
// background (no goroutine is left behind), and Start waits for it.
func (e *Engine) Stop(ctx context.Context) error {
	e.runMu.Lock()
	if !e.running {
		e.runMu.Unlock()
		return nil
	}
	e.running = false
	done := make(chan error, 1)
	go func() {
		defer e.runMu.Unlock() // held until drained: a Start or Stop meanwhile waits
		err := e.parts.stop()
		e.log.Info("stopped", "id", e.cfg.ID)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrStopTimeout, ctx.Err())
	}
}

// Run starts the engine, waits for ctx to end, and stops it.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	return e.Stop(context.WithoutCancel(ctx))
}

// HandlePacket handles a packet that needs no answer: heartbeats, results,
// alerts. (Submissions arrive through handleSubmit, which can answer.)
func (e *Engine) HandlePacket(p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		e.handleHeartbeat(payload.Heartbeat)
	case *pb.BusPacket_JobRequest:
		_ = e.handleSubmit(p, "")
	case *pb.BusPacket_JobResult:
		_ = e.handleResultPacket(p, payload.JobResult.GetWorkerId()) // no subject: the claim
	case *pb.BusPacket_Alert:
		e.stats.alerts.Add(1)
		a := payload.Alert
		e.log.Warn("alert", "level", a.GetLevel(), "alert_component", a.GetComponent(),
			"message", a.GetMessage(), "sender_id", p.GetSenderId())
	default:
		e.stats.unknown.Add(1)
		e.log.Warn("packet the scheduler does not handle", "sender_id", p.GetSenderId(), "trace_id", p.GetTraceId())
	}
}

func (e *Engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// storeCtx is the context of job-store operations. It carries no deadline of
// its own: the KV store's requests time out by the JetStream client's
// default, and a timer per operation is a cost on the hot path.
func (e *Engine) storeCtx() (context.Context, context.CancelFunc) {
	return context.Background(), func() {}
}

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
	if job.State == lifecycle.Pending && !job.AwaitingSafety && e.placed(pool) {
		var refused *pb.JobAnswer
		if queued, refused = e.pushNew(job); refused != nil {
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
	subject, direct := "", false
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

// ---- the job cache ----

// observe records rec as this replica's latest view of its job and reports
// whether the job is active (false once it is terminal). Views older than
// the one held are ignored.
func (e *Engine) observe(rec jobstore.Record) (active bool) {
	id := rec.Job.GetJobId()
	e.mu.Lock()
	defer e.mu.Unlock()
	t, known := e.active[id]
	if known && t.rec.Revision >= rec.Revision {
		return true
	}
	var prev *pb.JobInfo
	if known {
		prev = t.rec.Job
	}
	if e.queues != nil {
		e.placementObserve(prev, rec.Job)
	}
	if !lifecycle.Active(rec.Job.GetState()) {
		if known {
			delete(e.active, id)
		}
		return false
	}
	t.rec = rec
	if rec.Job.State == lifecycle.Running &&
		(prev.GetState() != lifecycle.Running || prev.GetAttempt() != rec.Job.Attempt || t.leaseUntil.IsZero()) {
		t.leaseUntil = time.Now().Add(time.Duration(e.cfg.LeaseMisses) * e.cfg.LeaseInterval)
	}
	e.active[id] = t
	return true
}

// cached returns this replica's latest view of an active job.
func (e *Engine) cached(id string) (jobstore.Record, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.active[id]
	return t.rec, ok
}

// claim marks the job busy for this replica; false if it already is or the
// job is no longer active.
func (e *Engine) claim(id string) (jobstore.Record, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t, ok := e.active[id]
	if !ok || t.busy {
		return jobstore.Record{}, false
	}
	t.busy = true
	e.active[id] = t
	return t.rec, true
}

func (e *Engine) release(id string) {
	e.mu.Lock()
	if t, ok := e.active[id]; ok {
		t.busy = false
		e.active[id] = t
	}
	e.mu.Unlock()
}

// mutate applies change to the job with compare-and-set, re-reading and
// deciding again when another writer got there first. change edits a copy
// and reports whether to write it. It returns the record written, or the
// latest one read with written=false.
func (e *Engine) mutate(rec jobstore.Record, change func(j *pb.JobInfo) bool) (_ jobstore.Record, written bool, _ error) {
	ctx, cancel := e.storeCtx()
	defer cancel()
	for range 8 {
		next := cloneInfo(rec.Job)
		if !change(next) {
			return rec, false, nil
		}
		next.UpdatedMs = time.Now().UnixMilli()
		nrec, err := e.cfg.Store.Update(ctx, rec, next)
		if err == nil {
			e.observe(nrec)
			e.logTransition(rec.Job, nrec.Job)
			return nrec, true, nil
		}
		if !errors.Is(err, jobstore.ErrRevision) {
			e.stats.storeErrors.Add(1)
			return rec, false, err
		}
		if rec, err = e.cfg.Store.Get(ctx, rec.Job.GetJobId()); err != nil {
			e.stats.storeErrors.Add(1)
			return rec, false, err
		}
		e.observe(rec)
	}
	return rec, false, fmt.Errorf("job %s: too many concurrent changes", rec.Job.GetJobId())
}

func (e *Engine) logTransition(prev, next *pb.JobInfo) {
	e.publishJobEvent(prev, next) // events.go
	if !e.debug() || prev.GetState() == next.GetState() || next.GetState() == lifecycle.Dispatched {
		return // a dispatch logs itself, with its subject
	}
	e.log.Debug("job changed state", "job_id", next.JobId, "state", lifecycle.Name(next.State), "from", lifecycle.Name(prev.GetState()),
		"attempt", next.Attempt, "worker_id", next.WorkerId, "reason", firstNonEmpty(next.PendingReason, next.Error), "trace_id", next.TraceId)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	s := &e.stats
	return Stats{
		Submitted: s.submitted.Load(), Accepted: s.accepted.Load(), Rejected: s.rejected.Load(),
		Denied: s.denied.Load(), Duplicates: s.duplicates.Load(), Conflicts: s.conflicts.Load(),
		Dispatched: s.dispatched.Load(), NoResponders: s.noResponders.Load(), Unconfirmed: s.unconfirmed.Load(),
		Unroutable: s.unroutable.Load(), Results: s.results.Load(), StaleResults: s.stale.Load(),
		LateResults: s.late.Load(), Completed: s.completed.Load(), Retries: s.retries.Load(),
		LeasesLost: s.leasesLost.Load(), DeadLettered: s.deadLettered.Load(), Cancelled: s.cancelled.Load(),
		Heartbeats: s.heartbeats.Load(), Alerts: s.alerts.Load(), Unknown: s.unknown.Load(),
		StoreErrors: s.storeErrors.Load(), DispatchErrors: s.dispatchErrors.Load(),
		Throttled: s.throttled.Load(), SafetyUnavailable: s.safetyUnavailable.Load(), Backpressure: s.backpressure.Load(),
		IdentityRejected: s.identityRejected.Load(), RepliesRefused: s.repliesRefused.Load(), ClientsRefused: s.clientsRefused.Load(),
		ForeignResults:   s.foreignResults.Load(),
		UntrustedResults: s.untrustedResults.Load(), InvalidPackets: s.invalidPackets.Load(),
		Undeliverable:  s.undeliverable.Load(),
		NotYetRecorded: s.notYetRecorded.Load(),
	}
}
