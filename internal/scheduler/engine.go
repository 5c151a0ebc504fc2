package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Engine is the scheduler's control loop. Its replicas share one JobStore.
// It is an assembly of parts (docs/ARCHITECTURE.md, "Inside the
// scheduler"): each field below the first group is a part with its own state
// that reaches the others through a narrow interface the engine implements;
// admission, dispatch and placement, the hot path, are the engine's own
// methods. Its public methods delegate.
type Engine struct {
	cfg Config
	log *slog.Logger // component=scheduler
	// safetyLog carries the safety decisions the scheduler makes on the
	// checker's answer (component=safety).
	safetyLog *slog.Logger

	// The parts.
	run        runState    // what Start starts and Stop stops, and whether it runs (parts.go)
	cache      *jobCache   // this replica's active jobs, and mutate (cache.go)
	results    *results    // results, lost leases, timeouts: what ends an attempt (results.go)
	heartbeats *heartbeats // worker identity and heartbeats (workers.go)
	timers     *timers     // what is due when (timers.go)
	queries    *queries    // queries and cancels (queries.go)
	requesters *requesters // who sent a request (requester.go)
	events     *jobEvents  // job events (events.go)
	stats      counters    // what every part counts (stats.go)

	// Admission and dispatch (admission.go, dispatch.go).
	started time.Time // when Start ran: the registry knows the workers only after a heartbeat interval
	// blind: the strategy does not look at the workers, so no registry
	// snapshot is taken per job.
	blind bool
	// ackPfx is the reply-subject prefix of this replica's dispatches.
	ackPfx string
	// stubSafety: the checker says it reads no trace id (TraceBlind), as
	// the design document's stub.
	stubSafety bool

	// Placement (placement.go). queues is nil when no pool places jobs by
	// what workers report: then nothing of it runs per job.
	pools      *placement.Pools
	preg       *placement.Registry
	queues     *placement.Queues
	placeMu    sync.Mutex    // drain's decisions
	kick       chan struct{} // a slot freed: drain (the drainer loop)
	regVersion uint64        // the registry version drain last woke the queues at
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
		blind:     cfg.Strategy.WorkerBlind(),
		ackPfx:    "_CORTEX.ack." + cfg.ID + ".",
		pools:     cfg.Placement,
	}
	e.events = &jobEvents{bus: cfg.Bus, id: cfg.ID, log: e.log}
	e.queries = &queries{id: cfg.ID, log: e.log, bus: cfg.Bus, store: cfg.Store, dead: cfg.DeadLetters, stats: &e.stats, jobs: e}
	if tb, ok := cfg.Safety.(TraceBlind); ok {
		e.stubSafety = tb.TraceBlind()
	}
	e.requesters = &requesters{clients: cfg.Clients, log: e.log, stats: &e.stats}
	if pfx := cfg.Bus.InboxPrefix(); strings.HasPrefix(pfx, wire.InboxRoot+".") {
		e.requesters.ownInbox = pfx + "."
	}
	if pr, ok := cfg.Registry.(PlacingRegistry); ok {
		e.preg = pr.PlacementRegistry() // nil: it only lists workers
	}
	if e.pools == nil && e.preg != nil {
		e.pools = e.preg.Pools()
	}
	if e.pools != nil {
		if e.preg == nil {
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
		} else {
			e.kick = make(chan struct{}, 1)
		}
	}
	e.cache = newJobCache(cfg.Store, &e.stats, e.leaseTTL())
	e.cache.recorded = e.logTransition
	if e.queues != nil {
		e.cache.placed = e.placementObserve
	}
	e.results = &results{log: e.log, stats: &e.stats, store: cfg.Store, dead: cfg.DeadLetters, documentWorkers: cfg.DocumentWorkers,
		retryBackoff: cfg.RetryBackoff, retryBackoffMax: cfg.RetryBackoffMax, leaseTTL: e.leaseTTL(), cache: e.cache, jobs: e}
	e.heartbeats = &heartbeats{log: e.log, stats: &e.stats, registry: cfg.Registry, placing: e.queues != nil,
		requireIdentity: cfg.RequireWorkerIdentity, leaseInterval: cfg.LeaseInterval, leaseMisses: cfg.LeaseMisses, jobs: e}
	if e.preg != nil && WorkerRegistry(e.preg) != cfg.Registry { // its own: heartbeats feed both
		e.heartbeats.preg = e.preg
	}
	e.timers = &timers{tick: cfg.Tick, ackTimeout: cfg.AckTimeout, leaseTTL: e.leaseTTL(), jobs: e}
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
// queue group, so each of two replicas saw only part of them); submissions,
// results, queries and cancels are shared by the replicas.
func (e *Engine) assemble() parts {
	var ps parts
	if !e.cfg.Store.InProcess() {
		// Other replicas write to the store: follow their changes.
		ps.loops = append(ps.loops, newLoop("store watch", e.watchStore))
	}
	ps.loops = append(ps.loops, newLoop("timers", e.timers.run))
	if e.kick != nil {
		ps.loops = append(ps.loops, newLoop("drainer", e.drainLoop))
	}
	bus, group := e.cfg.Bus, e.cfg.QueueGroup
	ps.subs = []part{
		newSubscription("heartbeats", func() (func() error, error) {
			return bus.SubscribeWithSubject(wire.SubjectHeartbeats, "", e.heartbeats.handleHeartbeatOn)
		}),
		newSubscription("dispatch replies", func() (func() error, error) {
			return bus.SubscribeReplies(e.ackPrefix()+">", e.handleReply)
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
	return e.run.start(ctx, func() { e.started = time.Now() }, func(ctx context.Context) {
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
// alerts. (Submissions arrive through handleSubmit, which can answer.)
func (e *Engine) HandlePacket(p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		e.heartbeats.heartbeat(payload.Heartbeat)
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
func (e *Engine) storeCtx() (context.Context, context.CancelFunc) { return storeCtx() }

func storeCtx() (context.Context, context.CancelFunc) {
	return context.Background(), func() {}
}
