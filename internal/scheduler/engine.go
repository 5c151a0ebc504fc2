package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// DefaultQueueGroup is the queue group scheduler replicas share submissions
// and results through.
const DefaultQueueGroup = "cortex-scheduler"

// Config configures an Engine. Bus, Safety, Registry and Strategy are required.
type Config struct {
	Bus      Bus
	Safety   SafetyChecker
	Registry WorkerRegistry
	Strategy SchedulingStrategy

	// ID is this replica's sender_id on the packets it publishes.
	// Default "cortex-scheduler-<host>-<random>", unique per process.
	ID string
	// QueueGroup shared by the replicas for submissions and results.
	// Default DefaultQueueGroup.
	QueueGroup string
	// Logger. Default slog.Default(). Per-job events are logged at debug.
	Logger *slog.Logger
}

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
	if c.ID == "" {
		c.ID = UniqueID("cortex-scheduler")
	}
	if c.QueueGroup == "" {
		c.QueueGroup = DefaultQueueGroup
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// UniqueID returns prefix-host-random, distinct for every call.
func UniqueID(prefix string) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "local"
	}
	return fmt.Sprintf("%s-%s-%s", prefix, host, uuid.NewString()[:8])
}

// Stats counts what the engine did. All fields are cumulative.
type Stats struct {
	Submitted      uint64 // job requests received
	Rejected       uint64 // invalid requests (no job_id)
	Denied         uint64 // refused by the safety checker
	Unroutable     uint64 // no subject could be picked
	Dispatched     uint64
	DispatchErrors uint64
	Results        uint64
	Heartbeats     uint64
	Alerts         uint64
	Unknown        uint64 // packets with a payload the engine does not handle
}

// Engine is the scheduler's control loop.
type Engine struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	drains []func() error

	// blind: the strategy does not look at the workers, so no registry
	// snapshot is taken per job.
	blind bool

	submitted, rejected, denied, unroutable, dispatched, dispatchErrs, results, heartbeats, alerts, unknown atomic.Uint64
}

// New validates cfg, fills in its defaults and returns an engine.
func New(cfg Config) (*Engine, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	wb, ok := cfg.Strategy.(WorkerBlind)
	return &Engine{cfg: cfg, log: cfg.Logger, blind: ok && wb.WorkerBlind()}, nil
}

// NewEngine is the design document's constructor. It panics on a nil
// dependency; use New to get an error instead.
func NewEngine(bus Bus, safety SafetyChecker, reg WorkerRegistry, strat SchedulingStrategy) *Engine {
	e, err := New(Config{Bus: bus, Safety: safety, Registry: reg, Strategy: strat})
	if err != nil {
		panic(err)
	}
	return e
}

// ID is this replica's sender id.
func (e *Engine) ID() string { return e.cfg.ID }

// Start subscribes: every replica sees every heartbeat (no queue group), while
// submissions and results are shared through the queue group. (The design
// document subscribed heartbeats in the queue group too, so each of two
// replicas saw only part of them.)
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.drains) > 0 {
		return errors.New("scheduler: already started")
	}
	subs := []struct{ subject, queue string }{
		{wire.SubjectHeartbeats, ""},
		{wire.SubjectSubmit, e.cfg.QueueGroup},
		{wire.SubjectResult, e.cfg.QueueGroup},
	}
	for _, s := range subs {
		drain, err := e.cfg.Bus.Subscribe(s.subject, s.queue, e.HandlePacket)
		if err != nil {
			e.stopLocked()
			return fmt.Errorf("scheduler: %w", err)
		}
		e.drains = append(e.drains, drain)
	}
	e.log.InfoContext(ctx, "[SCHEDULER] started", "id", e.cfg.ID, "queue_group", e.cfg.QueueGroup)
	return nil
}

// Stop drains the subscriptions: no new packet is taken, and the ones already
// received are handled before Stop returns.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.stopLocked()
	e.log.InfoContext(ctx, "[SCHEDULER] stopped", "id", e.cfg.ID)
	return err
}

func (e *Engine) stopLocked() error {
	var errs []error
	for _, drain := range e.drains {
		errs = append(errs, drain())
	}
	e.drains = nil
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

// HandlePacket handles one packet from the bus.
func (e *Engine) HandlePacket(p *pb.BusPacket) {
	switch payload := p.Payload.(type) {
	case *pb.BusPacket_Heartbeat:
		e.heartbeats.Add(1)
		hb := payload.Heartbeat
		if e.debug() {
			e.log.Debug("[SCHEDULER] 💓 heartbeat", "worker_id", hb.GetWorkerId(), "type", hb.GetType(),
				"cpu", hb.GetCpuLoad(), "gpu", hb.GetGpuUtilization(), "active_jobs", hb.GetActiveJobs())
		}
		e.cfg.Registry.UpdateHeartbeat(hb)

	case *pb.BusPacket_JobRequest:
		e.submitted.Add(1)
		e.processJob(payload.JobRequest, p.GetTraceId())

	case *pb.BusPacket_JobResult:
		e.results.Add(1)
		if e.debug() {
			res := payload.JobResult
			e.log.Debug("[SCHEDULER] ✅ result", "job_id", res.GetJobId(), "status", res.GetStatus().String(),
				"worker_id", res.GetWorkerId(), "execution_ms", res.GetExecutionMs(), "trace_id", p.GetTraceId())
		}

	case *pb.BusPacket_Alert:
		e.alerts.Add(1)
		a := payload.Alert
		e.log.Warn("[SCHEDULER] alert", "level", a.GetLevel(), "component", a.GetComponent(),
			"message", a.GetMessage(), "sender_id", p.GetSenderId())

	default:
		e.unknown.Add(1)
		e.log.Warn("[SCHEDULER] packet without a known payload", "sender_id", p.GetSenderId(), "trace_id", p.GetTraceId())
	}
}

func (e *Engine) processJob(req *pb.JobRequest, traceID string) {
	if req.GetJobId() == "" {
		e.rejected.Add(1)
		e.log.Warn("[SCHEDULER] rejected job without job_id", "topic", req.GetTopic(), "trace_id", traceID)
		return
	}
	if traceID == "" {
		traceID = uuid.NewString()
	}
	if e.debug() {
		e.log.Debug("[SCHEDULER] 📥 submitted", "job_id", req.JobId, "topic", req.Topic, "trace_id", traceID)
	}

	decision, reason := e.cfg.Safety.Check(req)
	if decision != SafetyAllow {
		e.denied.Add(1)
		e.log.Info("[SAFETY] ⛔ BLOCKED", "job_id", req.JobId, "topic", req.Topic, "reason", reason, "trace_id", traceID)
		return
	}

	var workers map[string]*pb.Heartbeat
	if !e.blind {
		workers = e.cfg.Registry.Snapshot() // a copy per job: only for strategies that look
	}
	subject, err := e.cfg.Strategy.PickSubject(req, workers)
	if err != nil {
		e.unroutable.Add(1)
		e.log.Warn("[SCHEDULER] no subject for job", "job_id", req.JobId, "topic", req.Topic, "err", err, "trace_id", traceID)
		return
	}

	if err := e.cfg.Bus.Publish(subject, wire.JobRequestPacket(traceID, e.cfg.ID, req)); err != nil {
		e.dispatchErrs.Add(1)
		e.log.Error("[SCHEDULER] dispatch failed", "job_id", req.JobId, "subject", subject, "err", err, "trace_id", traceID)
		return
	}
	e.dispatched.Add(1)
	if e.debug() {
		e.log.Debug("[SCHEDULER] 🚀 dispatched", "job_id", req.JobId, "subject", subject, "trace_id", traceID)
	}
}

func (e *Engine) debug() bool { return e.log.Enabled(context.Background(), slog.LevelDebug) }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	return Stats{
		Submitted:      e.submitted.Load(),
		Rejected:       e.rejected.Load(),
		Denied:         e.denied.Load(),
		Unroutable:     e.unroutable.Load(),
		Dispatched:     e.dispatched.Load(),
		DispatchErrors: e.dispatchErrs.Load(),
		Results:        e.results.Load(),
		Heartbeats:     e.heartbeats.Load(),
		Alerts:         e.alerts.Load(),
		Unknown:        e.unknown.Load(),
	}
}
