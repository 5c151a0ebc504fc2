package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// DefaultQueueGroup is the queue group (and durable consumer name) the
// scheduler replicas share submissions, results, queries and cancels through.
const DefaultQueueGroup = "cortex-scheduler"

// Config configures an Engine. Bus, Safety, Registry and Strategy are
// required; every other zero value is replaced by its default.
type Config struct {
	Bus      Bus
	Safety   SafetyChecker
	Registry WorkerRegistry
	Strategy SchedulingStrategy
	// Store is the job store. Default: a new jobstore.Memory.
	Store JobStore
	// DeadLetters receives jobs that exhausted their attempts. Default: a
	// new jobstore.MemoryDeadLetters.
	DeadLetters DeadLetters

	// ID is this replica's sender_id. Default "cortex-scheduler-<host>-<random>".
	ID string
	// QueueGroup shared by the replicas. Default DefaultQueueGroup.
	QueueGroup string
	// Logger. Default slog.Default(). Per-job events are logged at debug.
	Logger *slog.Logger

	// AckTimeout is how long a dispatch waits for the worker's confirmation.
	// Default 1s.
	AckTimeout time.Duration
	// LeaseInterval is the heartbeat interval the scheduler expects of a
	// worker that holds jobs, until its heartbeats say otherwise. Default 500ms.
	LeaseInterval time.Duration
	// LeaseMisses is how many heartbeat intervals a worker holding jobs may
	// miss before it is dead and its jobs are dispatched again. Default 3.
	LeaseMisses int
	// MaxAttempts is the default for jobs that set none. Default 3.
	MaxAttempts int
	// Timeout is the default per-attempt timeout. Default 60s.
	Timeout time.Duration
	// TTL is the default time from submission by which a job must finish or
	// end TIMEOUT. Default 10m; negative means none.
	TTL time.Duration
	// RetryBackoff and RetryBackoffMax bound the exponential, jittered delay
	// before a failed attempt is retried. Defaults 100ms and 30s.
	RetryBackoff, RetryBackoffMax time.Duration
	// NoWorkerRetry is how often a job no worker took is offered again.
	// Default 250ms.
	NoWorkerRetry time.Duration
	// Tick is how often timers (retries, leases, timeouts) are checked.
	// Default 50ms.
	Tick time.Duration
	// Placement names the pools, tenants and strategies of placement (see
	// package placement). Default: no pools and the naive strategy for every
	// topic, the design document's behaviour. Pools whose strategy looks at
	// the workers (least-loaded) queue their jobs and place them on workers
	// with room; for that the Registry should be a *placement.Registry over
	// the same Pools (otherwise the engine keeps one of its own, fed the same
	// heartbeats).
	Placement *placement.Pools
	// SafetyUnavailable is what happens to a job the safety checker could
	// not decide on (a remote kernel that does not answer): SafetyUnavailablePending
	// (the default) keeps it PENDING and checks it again before dispatch;
	// SafetyUnavailableDeny ends it DENIED. Either way it fails closed.
	SafetyUnavailable string
	// RequireWorkerIdentity refuses heartbeats and results on subjects that
	// name no worker (the design document's bare sys.heartbeat.<kind> and
	// sys.job.result). A heartbeat or result whose subject names another
	// worker than its worker_id is refused either way. See docs/security.md.
	RequireWorkerIdentity bool
	// Clients binds client identities to tenants (package tenancy): a
	// tenant's client submits for its tenant only and sees its tenant's jobs
	// only; with RequireIdentity, requests that name no bound identity are
	// refused. Nil: no bindings, every client acts on every tenant. Either
	// way every answer goes only to the requester's own inbox. See
	// docs/security.md.
	Clients *tenancy.Policy
	// DocumentWorkers says whether results that name no attempt (attempt 0:
	// workers built from the design document, which neither confirm nor
	// copy the attempt) are applied: DocumentWorkersTrust or
	// DocumentWorkersRefuse. Nothing tells such a result from a stale or a
	// forged one but the job's state. Default: trust, as the design
	// document's workers need; refuse with RequireWorkerIdentity, where every
	// worker names itself and reports its attempt. See docs/security.md.
	DocumentWorkers string
}

// What becomes of results that name no attempt (Config.DocumentWorkers).
const (
	DocumentWorkersTrust  = "trust"
	DocumentWorkersRefuse = "refuse"
)

// What a job the safety checker could not decide on becomes.
const (
	SafetyUnavailablePending = "pending"
	SafetyUnavailableDeny    = "deny"
)

// SafetyUnavailableReason is the reason of a job the safety checker could not decide on.
const SafetyUnavailableReason = "safety kernel unavailable"

func (c *Config) setDefaults() error {
	switch {
	case c.Bus == nil:
		return errors.New("scheduler: Config.Bus is required")
	case c.Safety == nil:
		return errors.New("scheduler: Config.Safety is required")
	case c.Registry == nil:
		return errors.New("scheduler: Config.Registry is required")
	case c.Strategy == nil:
		return errors.New("scheduler: Config.Strategy is required")
	}
	if c.Store == nil {
		c.Store = jobstore.NewMemory()
	}
	if c.DeadLetters == nil {
		c.DeadLetters = jobstore.NewMemoryDeadLetters()
	}
	if c.ID == "" {
		c.ID = UniqueID("cortex-scheduler")
	}
	if err := validSchedulerID("scheduler: Config.ID", c.ID); err != nil {
		return err // it names the subjects of its dispatches' replies
	}
	if c.QueueGroup == "" {
		c.QueueGroup = DefaultQueueGroup
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	setDuration(&c.AckTimeout, time.Second)
	setDuration(&c.LeaseInterval, 500*time.Millisecond)
	if c.LeaseMisses <= 0 {
		c.LeaseMisses = 3
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	setDuration(&c.Timeout, time.Minute)
	if c.TTL == 0 {
		c.TTL = 10 * time.Minute
	}
	setDuration(&c.RetryBackoff, 100*time.Millisecond)
	setDuration(&c.RetryBackoffMax, 30*time.Second)
	setDuration(&c.NoWorkerRetry, 250*time.Millisecond)
	setDuration(&c.Tick, 50*time.Millisecond)
	switch c.DocumentWorkers {
	case "":
		c.DocumentWorkers = DocumentWorkersTrust
		if c.RequireWorkerIdentity {
			c.DocumentWorkers = DocumentWorkersRefuse
		}
	case DocumentWorkersTrust, DocumentWorkersRefuse:
	default:
		return fmt.Errorf("scheduler: Config.DocumentWorkers %q: want %q or %q", c.DocumentWorkers, DocumentWorkersTrust, DocumentWorkersRefuse)
	}
	switch c.SafetyUnavailable {
	case "":
		c.SafetyUnavailable = SafetyUnavailablePending
	case SafetyUnavailablePending, SafetyUnavailableDeny:
	default:
		return fmt.Errorf("scheduler: Config.SafetyUnavailable %q: want %q or %q", c.SafetyUnavailable, SafetyUnavailablePending, SafetyUnavailableDeny)
	}
	return nil
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

// UniqueID returns prefix-host-random, distinct for every call and usable as
// a subject token.
func UniqueID(prefix string) string {
	host, _ := os.Hostname()
	host = strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").Replace(host)
	if host == "" {
		host = "local"
	}
	if len(host) > 64 {
		host = host[:64] // ids are bounded (MaxWorkerIDLength)
	}
	return fmt.Sprintf("%s-%s-%s", prefix, host, uuid.NewString()[:8])
}

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
	log *slog.Logger

	mu     sync.Mutex
	active map[string]tracked // non-terminal jobs known to this replica; values, not pointers: no allocation per job

	// confirmSeen: topic -> when a worker that confirms last heartbeated
	// serving it (see confirmedLately).
	confirmMu   sync.Mutex
	confirmSeen map[string]time.Time

	// runMu guards the lifecycle. It is not mu: draining waits for handlers
	// that take mu.
	runMu    sync.Mutex
	drains   []func() error
	stopLoop context.CancelFunc
	loops    sync.WaitGroup // timer loop and store watch
	running  bool
	started  time.Time // when Start ran: the registry knows the workers only after a heartbeat interval

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
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	wb, ok := cfg.Strategy.(WorkerBlind)
	e := &Engine{
		cfg:    cfg,
		log:    cfg.Logger,
		active: make(map[string]tracked),
		blind:  ok && wb.WorkerBlind(),
		ackPfx: "_CORTEX.ack." + cfg.ID + ".",
		pools:  cfg.Placement,
	}
	_, e.stubSafety = cfg.Safety.(*SafetyStub)
	if ib, ok := cfg.Bus.(interface{ InboxPrefix() string }); ok {
		if pfx := ib.InboxPrefix(); strings.HasPrefix(pfx, wire.InboxRoot+".") {
			e.ownInbox = pfx + "."
		}
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

// Start subscribes and starts the timers. Every replica sees every heartbeat
// (no queue group: the design document put heartbeats in the queue group, so
// each of two replicas saw only part of them); submissions, results, queries
// and cancels are shared by the replicas.
func (e *Engine) Start(ctx context.Context) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	if e.running {
		return errors.New("scheduler: already started")
	}
	loopCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	e.stopLoop = stop
	e.started = time.Now()
	if ip, ok := e.cfg.Store.(interface{ InProcess() bool }); !ok || !ip.InProcess() {
		// Other replicas write to the store: follow their changes.
		e.loops.Add(1)
		go func() {
			defer e.loops.Done()
			if err := e.cfg.Store.Watch(loopCtx, func(r jobstore.Record) { e.observe(r) }); err != nil && loopCtx.Err() == nil {
				e.log.Error("[SCHEDULER] job store watch ended", "err", err)
			}
		}()
	}
	e.loops.Add(1)
	go func() {
		defer e.loops.Done()
		e.timerLoop(loopCtx)
	}()

	subscribe := []func() (func() error, error){
		func() (func() error, error) {
			return e.cfg.Bus.SubscribeWithSubject(wire.SubjectHeartbeats, "", e.handleHeartbeatOn)
		},
		func() (func() error, error) {
			return e.cfg.Bus.SubscribeReplies(e.ackPrefix()+">", e.handleReply)
		},
		func() (func() error, error) {
			return e.cfg.Bus.ConsumeTree(wire.SubjectResult, e.cfg.QueueGroup+"-results", e.handleResultOn)
		},
		func() (func() error, error) {
			return e.cfg.Bus.ServeTree(wire.SubjectQuery, e.cfg.QueueGroup, e.serveQuery)
		},
		func() (func() error, error) {
			return e.cfg.Bus.ServeTree(wire.SubjectCancel, e.cfg.QueueGroup, e.serveCancel)
		},
		func() (func() error, error) {
			// sys.job.submit and sys.job.submit.<identity>
			return e.cfg.Bus.ConsumeTree(wire.SubjectSubmit, e.cfg.QueueGroup, e.handleSubmitOn)
		},
	}
	e.running = true
	for _, sub := range subscribe {
		drain, err := sub()
		if err != nil {
			e.stopLocked()
			return fmt.Errorf("scheduler: %w", err)
		}
		e.drains = append(e.drains, drain)
	}
	// Started means the server has the subscriptions: a submission sent
	// from now on is heard (over core NATS, one sent before would be lost).
	if f, ok := e.cfg.Bus.(interface{ Flush(context.Context) error }); ok {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f.Flush(fctx)
		cancel()
		if err != nil {
			e.log.Warn("[SCHEDULER] flushing the subscriptions failed", "err", err)
		}
	}
	e.log.InfoContext(ctx, "[SCHEDULER] started", "id", e.cfg.ID, "queue_group", e.cfg.QueueGroup)
	return nil
}

// Stop stops the timers and intake first, then lets the packets already
// received be handled. Nothing is left half-written: every change to a job
// is one compare-and-set, and no dispatch goes out once its answer can no
// longer be heard.
func (e *Engine) Stop(ctx context.Context) error {
	e.runMu.Lock()
	defer e.runMu.Unlock()
	if !e.running {
		return nil
	}
	err := e.stopLocked()
	e.log.InfoContext(ctx, "[SCHEDULER] stopped", "id", e.cfg.ID)
	return err
}

func (e *Engine) stopLocked() error {
	var errs []error
	// Timers first: a dispatch they sent once the replies subscription is
	// drained would leave its job DISPATCHED with nobody to hear the answer.
	e.stopLoop()
	e.loops.Wait()
	// Submissions were subscribed last: drain in reverse, intake first.
	for i := len(e.drains) - 1; i >= 0; i-- {
		errs = append(errs, e.drains[i]())
	}
	e.drains = nil
	e.running = false
	return errors.Join(errs...)
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
		e.log.Warn("[SCHEDULER] alert", "level", a.GetLevel(), "component", a.GetComponent(),
			"message", a.GetMessage(), "sender_id", p.GetSenderId())
	default:
		e.stats.unknown.Add(1)
		e.log.Warn("[SCHEDULER] packet the scheduler does not handle", "sender_id", p.GetSenderId(), "trace_id", p.GetTraceId())
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
		e.log.Warn("[SCHEDULER] refused job", "job_id", clip(req.GetJobId()), "err", err)
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
		e.log.Warn("[SCHEDULER] refused job", "job_id", clip(req.GetJobId()), "topic", clip(req.GetTopic()), "err", err, "trace_id", traceID)
		return refusal(err.Error(), false), false, nil
	}
	if e.debug() {
		e.log.Debug("[SCHEDULER] 📥 submitted", "job_id", req.JobId, "topic", req.Topic, "trace_id", traceID)
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
		ctx = safety.WithTraceID(ctx, traceID) // for the kernel's [SAFETY] lines and remote checks
	}
	verdict, serr := e.cfg.Safety.Check(ctx, req)
	switch {
	case serr != nil:
		e.stats.safetyUnavailable.Add(1)
		e.log.Warn("[SAFETY] safety kernel unavailable", "job_id", req.JobId, "err", serr, "fail_closed", e.cfg.SafetyUnavailable)
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
			e.log.Debug("[SAFETY] throttled", "job_id", req.JobId, "rule_id", verdict.RuleID, "retry_after", verdict.RetryAfter, "trace_id", traceID)
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
				e.log.Debug("[SCHEDULER] refused job: queue full", "job_id", req.JobId, "pool", job.Pool, "reason", refused.Error, "trace_id", traceID)
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
		e.log.Warn("[SCHEDULER] refused job: job_id exists with different content", "job_id", req.JobId, "trace_id", traceID)
		return refusal(fmt.Sprintf("%s: job_id %s already exists with different content", conflictPrefix, req.JobId), false), false, nil
	case err != nil:
		e.stats.storeErrors.Add(1)
		e.log.Error("[SCHEDULER] recording job failed", "job_id", req.JobId, "err", err)
		return nil, false, err
	}

	if job.State == lifecycle.Denied {
		e.stats.denied.Add(1)
		e.log.Info("[SAFETY] ⛔ BLOCKED", "job_id", req.JobId, "topic", req.Topic, "reason", reason, "rule_id", job.RuleId, "trace_id", traceID)
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
		e.log.Warn("[SCHEDULER] answering failed", "to", to, "err", err)
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
	e.log.Debug("[SCHEDULER] job "+lifecycle.Name(next.State), "job_id", next.JobId, "from", lifecycle.Name(prev.GetState()),
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
