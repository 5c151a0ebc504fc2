package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Engine is the scheduler's control loop. Its replicas share one JobStore.
// It is an assembly of parts (docs/ARCHITECTURE.md, "Inside the
// scheduler"), each with its own state, reaching the others directly:
// New builds and wires them, assemble lists what Start starts and Stop
// stops, and the public methods delegate.
type Engine struct {
	cfg Config
	log *slog.Logger // component=scheduler

	// The parts.
	run        runState    // what Start starts and Stop stops, and whether it runs (parts.go)
	admission  *admission  // submissions: checked, judged, recorded (admission.go)
	dispatcher *dispatcher // the hand-off to a worker and its replies (dispatch.go)
	placer     *placer     // pools, queues, placement registry, the drainer loop (placement.go)
	cache      *jobCache   // this replica's active jobs, mutate, the store watch (cache.go)
	results    *results    // results, lost leases, timeouts: what ends an attempt (results.go)
	heartbeats *heartbeats // worker identity and heartbeats (workers.go)
	timers     *timers     // what is due when (timers.go)
	queries    *queries    // queries and cancels (queries.go)
	requesters *requesters // who sent a request (requester.go)
	events     *jobEvents  // job events (events.go)
	follows    *follows    // who follows which jobs' events (follows.go)
	stats      counters    // what every part counts (stats.go)
}

// New validates cfg, fills in its defaults and returns an engine.
func New(cfg Config) (*Engine, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With(logging.ComponentKey, logging.ComponentScheduler)
	safetyLog := cfg.Logger.With(logging.ComponentKey, logging.ComponentSafety)
	e := &Engine{cfg: cfg, log: log}
	stats, times := &e.stats, cfg.jobTimes()

	e.follows = newFollows(cfg.FollowTTL, cfg.MaxFollows, log, stats)
	e.events = &jobEvents{bus: cfg.Bus, id: cfg.ID, log: log, follows: e.follows}
	e.requesters = &requesters{clients: cfg.Clients, log: log, stats: stats}
	if pfx := cfg.Bus.InboxPrefix(); strings.HasPrefix(pfx, wire.InboxRoot+".") {
		e.requesters.ownInbox = pfx + "."
	}
	e.cache = newJobCache(cfg.Store, stats, log, cfg.leaseTTL())
	e.cache.recorded = (&recorder{events: e.events, observer: cfg.Observer, log: log}).recorded
	placer, ownRegistry := newPlacer(cfg, stats, log)
	e.placer = placer
	if placer.queues != nil {
		e.cache.placed = placer.observe
	}
	e.dispatcher = &dispatcher{id: cfg.ID, log: log, safetyLog: safetyLog, stats: stats, bus: cfg.Bus, store: cfg.Store,
		safety: cfg.Safety, observer: cfg.Observer, strategy: cfg.Strategy, registry: cfg.Registry, blind: cfg.Strategy.WorkerBlind(),
		ackPfx: "_CORTEX.ack." + cfg.ID + ".", times: times, ackTimeout: cfg.AckTimeout, noWorkerRetry: cfg.NoWorkerRetry, tick: cfg.Tick,
		cache: e.cache, placer: placer}
	placer.cache, placer.dispatcher = e.cache, e.dispatcher
	e.admission = &admission{id: cfg.ID, log: log, safetyLog: safetyLog, stats: stats, bus: cfg.Bus, store: cfg.Store,
		safety: cfg.Safety, observer: cfg.Observer, safetyUnavailable: cfg.SafetyUnavailable, maxAttempts: int32(cfg.MaxAttempts),
		noWorkerRetry: cfg.NoWorkerRetry, times: times,
		requesters: e.requesters, cache: e.cache, placer: placer, dispatcher: e.dispatcher}
	if dl, ok := cfg.Safety.(DecisionLogger); ok && dl.LogsDecisions() {
		e.admission.blockedLevel, e.dispatcher.blockedLevel = slog.LevelDebug, slog.LevelDebug
	}
	if tb, ok := cfg.Safety.(TraceBlind); ok {
		e.admission.traceBlind = tb.TraceBlind()
	}
	if tc, ok := cfg.Safety.(TracedChecker); ok {
		e.admission.traced = tc
	}
	e.results = &results{log: log, stats: stats, store: cfg.Store, dead: cfg.DeadLetters, documentWorkers: cfg.DocumentWorkers,
		retryBackoff: cfg.RetryBackoff, retryBackoffMax: cfg.RetryBackoffMax, leaseTTL: cfg.leaseTTL(), times: times,
		cache: e.cache, placer: placer}
	e.heartbeats = &heartbeats{log: log, stats: stats, registry: cfg.Registry, placing: placer.queues != nil,
		requireIdentity: cfg.RequireWorkerIdentity, leaseInterval: cfg.LeaseInterval, leaseMisses: cfg.LeaseMisses,
		cache: e.cache, results: e.results, placer: placer, other: e}
	if ownRegistry {
		e.heartbeats.preg = placer.preg // the engine's own: heartbeats feed both
	}
	e.dispatcher.heartbeats = e.heartbeats
	e.timers = &timers{tick: cfg.Tick, ackTimeout: cfg.AckTimeout, leaseTTL: cfg.leaseTTL(), times: times,
		cache: e.cache, dispatcher: e.dispatcher, results: e.results, placer: placer, follows: e.follows}
	e.queries = &queries{id: cfg.ID, log: log, bus: cfg.Bus, store: cfg.Store, dead: cfg.DeadLetters, stats: stats,
		requesters: e.requesters, cache: e.cache, placer: placer, admission: e.admission}
	e.run.parts = e.assemble()
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
// queue group, so each of two replicas saw only part of them) and every
// follow announcement (any replica may write the followed job); submissions,
// results, queries and cancels are shared by the replicas.
func (e *Engine) assemble() parts {
	var ps parts
	if !e.cfg.Store.InProcess() {
		// Other replicas write to the store: follow their changes.
		ps.loops = append(ps.loops, newLoop("store watch", e.cache.watch))
	}
	ps.loops = append(ps.loops, newLoop("timers", e.timers.run))
	if e.placer.drainer != nil {
		ps.loops = append(ps.loops, e.placer.drainer)
	}
	bus, group := e.cfg.Bus, e.cfg.QueueGroup
	ps.subs = []part{
		newSubscription("heartbeats", func() (func() error, error) {
			return bus.SubscribeWithSubject(wire.SubjectHeartbeats, "", e.heartbeats.handleHeartbeatOn)
		}),
		newSubscription("follows", func() (func() error, error) {
			return bus.Subscribe(wire.SubjectJobFollow, "", e.follows.handleFollow)
		}),
		newSubscription("dispatch replies", func() (func() error, error) {
			return bus.SubscribeReplies(e.dispatcher.ackPfx+">", e.dispatcher.handleReply)
		}),
		newSubscription("results", func() (func() error, error) {
			return bus.ConsumeTree(wire.SubjectResult, group+"-results", e.heartbeats.handleResultOn)
		}),
		newSubscription("queries", func() (func() error, error) {
			return bus.ServeTree(wire.SubjectQuery, group, e.queries.serveQuery)
		}),
		newSubscription("cancels", func() (func() error, error) {
			return bus.ServeTree(wire.SubjectCancel, group, e.queries.serveCancel)
		}),
		newSubscription("intake", func() (func() error, error) {
			// sys.job.submit and sys.job.submit.<identity>
			return bus.ConsumeTree(wire.SubjectSubmit, group, e.admission.handleSubmitOn)
		}),
	}
	return ps
}

// Start starts the engine's parts: the loops (the store watch, the timers,
// the drainer), then the subscriptions, the intake last.
func (e *Engine) Start(ctx context.Context) error {
	return e.run.start(ctx, func() { e.dispatcher.started = time.Now() }, func(ctx context.Context) {
		// Started means the server has the subscriptions: a submission sent
		// from now on is heard (over core NATS, one sent before would be lost).
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := e.cfg.Bus.Flush(fctx)
		cancel()
		if err != nil {
			e.log.Warn("flushing the subscriptions failed", "err", err)
		}
		e.log.InfoContext(ctx, "started", "id", e.cfg.ID, "queue_group", e.cfg.QueueGroup)
	})
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
	return e.run.stop(ctx, func() { e.log.Info("stopped", "id", e.cfg.ID) })
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
// alerts, and submissions, which get no answer here (the intake,
// admission's handleSubmitOn, answers them).
func (e *Engine) HandlePacket(p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		e.heartbeats.heartbeat(payload.Heartbeat)
	case *pb.BusPacket_JobRequest:
		_ = e.admission.handleSubmit(p, "")
	case *pb.BusPacket_JobResult:
		_ = e.results.handleResultPacket(p, payload.JobResult.GetWorkerId()) // no subject: the claim
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

// storeCtx is the context of job-store operations. It carries no deadline of
// its own: the KV store's requests time out by the JetStream client's
// default, and a timer per operation is a cost on the hot path.
func storeCtx() (context.Context, context.CancelFunc) {
	return context.Background(), func() {}
}
