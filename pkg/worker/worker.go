// Package worker is the CortexOS worker runtime: it takes jobs from a topic's
// queue group and confirms each one to the scheduler, runs them on a Handler
// with bounded concurrency, a per-attempt timeout and cancellation, publishes
// their results with the attempt they are for, heartbeats its true load and
// the jobs it holds (their leases), and drains on shutdown, handing back what
// does not finish in time.
//
// A worker runs on a NATS connection the caller made (as nats.go's micro
// services do) and is a few lines:
//
//	nc, err := nats.Connect(url)
//	if err != nil { ... }
//	w, err := worker.New(nc, worker.Config{
//		Kind: "echo", // takes jobs on job.echo
//		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
//			return worker.Result{Ptr: "memory://echo/" + job.ID()}, nil
//		}),
//	})
//	if err != nil { ... }
//	err = w.Run(ctx) // returns when ctx ends and in-flight jobs are drained
//
// docs/sdk-go.md walks through writing, running and testing a worker.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/pkg/blob"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Handler runs one job. It returns the job's result, or an error that fails
// the job. It must return soon after ctx is done: ctx ends when the job is
// cancelled (ctx.Err() is context.Canceled, context.Cause(ctx) is
// ErrCancelled), when the attempt's timeout passes (ctx.Deadline() reports
// it; ctx.Err() is then context.DeadlineExceeded), or when the worker's
// shutdown grace is over (context.Canceled, cause ErrShutdown). ctx carries
// the values of the context Run was given.
//
// A handler that panics fails its job; the worker goes on.
type Handler interface {
	HandleJob(ctx context.Context, job *Job) (Result, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) (Result, error)

// HandleJob calls f.
func (f HandlerFunc) HandleJob(ctx context.Context, job *Job) (Result, error) {
	return f(ctx, job)
}

// transport is what the runtime needs of the bus: the hardened bus of
// internal/infrastructure/bus on the caller's connection (bus.FromConn),
// or a stand-in in this package's tests and benchmarks.
type transport interface {
	Publish(subject string, packet *pb.BusPacket) error
	Subscribe(subject, queue string, handler func(*pb.BusPacket)) (drain func() error, err error)
	SubscribeWithReply(subject, queue string, handler func(p *pb.BusPacket, reply string)) (drain func() error, err error)
}

// requestTransport is a transport that can hand dispatches to a handler
// that keeps only their JobRequest (bus.NatsBus.SubscribeRequests: the
// packet around it is pooled); handlePacket is such a handler.
type requestTransport interface {
	SubscribeRequests(subject, queue string, handler func(p *pb.BusPacket, reply string)) (drain func() error, err error)
}

// subscribeJobs subscribes handlePacket to subject: through
// SubscribeRequests where the transport has it, else SubscribeWithReply.
func (w *Worker) subscribeJobs(subject, queue string) (drain func() error, err error) {
	if rt, ok := w.bus.(requestTransport); ok {
		return rt.SubscribeRequests(subject, queue, w.handlePacket)
	}
	return w.bus.SubscribeWithReply(subject, queue, w.handlePacket)
}

// Config configures a Worker. Kind and Handler are required.
type Config struct {
	Handler Handler
	// Kind names the worker type: it heartbeats on sys.heartbeat.<Kind> (see
	// NamedSubjects) and logs with component=worker kind=<Kind>.
	Kind string
	// Topic is the subject jobs arrive on. Default "job.<Kind>".
	Topic string
	// QueueGroup shared by the workers of one topic. Default "workers-<Kind>".
	QueueGroup string
	// ID is unique per worker process. Default "worker-<Kind>-<host>-<random>".
	ID string
	// Region and Type describe the worker in heartbeats. Defaults "local", "cpu".
	Region, Type string
	// GPUUtilization, if set, is called for every heartbeat and reported as
	// its gpu_utilization (0–100, as `cortex workers` shows it): the worker
	// cannot measure a GPU itself (read it from NVML or nvidia-smi). A value
	// that is not a number, or out of range, is reported clamped (NaN as 0),
	// since a scheduler refuses a heartbeat with a non-finite load. Nil
	// reports 0. It must return quickly: it runs on the heartbeat goroutine.
	GPUUtilization func() float32
	// Capabilities are reported in heartbeats: a job or pool that requires
	// a capability is placed only on workers that report it. Default [Kind].
	Capabilities []string
	// Labels are reported in heartbeats (gpu=h100, region=eu,
	// model=llama-3-8b): a job or pool that requires a label is placed only
	// on workers that carry it with that value.
	Labels map[string]string
	// Pool, when set, reserves the worker for the jobs of that pool of the
	// scheduler's placement config; "" serves any pool.
	Pool string
	// Capacity is how many jobs run at once, reported in heartbeats so that
	// the scheduler places no more: a dispatch beyond it is refused (at
	// capacity). It is the same setting as Concurrency, its older name; set
	// either. Default 64.
	Capacity int
	// Concurrency is Capacity's older name.
	Concurrency int
	// Inline runs the handler on the subscription's delivery goroutine
	// instead of handing each job to a runner goroutine. That saves a
	// goroutine hand-off per job (cortex bench: about a tenth more
	// throughput with the echo handler), but jobs then run one at a time per
	// subscription, in arrival order, and a handler that blocks holds back
	// every job behind it. Only for handlers that return in microseconds and
	// never block: never for model calls, tool runs or code execution. Jobs
	// are held, confirmed, cancelled and handed back as without it.
	Inline bool
	// Direct: the worker also takes jobs on its own subject,
	// sys.worker.<ID>.job (wire.WorkerJobSubject), and says so in its
	// heartbeats, so that a strategy can place a job on this very worker
	// rather than on the topic's queue group.
	Direct bool
	// HeartbeatInterval while the worker holds no job. Default 5s.
	HeartbeatInterval time.Duration
	// LeaseInterval is the heartbeat interval while it holds jobs: each
	// heartbeat renews the leases of the jobs it lists. Default 500ms.
	LeaseInterval time.Duration
	// SlotWait is how long a dispatch waits for a free slot before the
	// worker refuses it (the scheduler then offers it elsewhere). Default 200ms.
	SlotWait time.Duration
	// AckDelay: a job still running this long after it arrived is confirmed
	// to the scheduler (JobAck: RUNNING, its lease starts). A job that
	// finishes sooner is confirmed by its result alone, which saves a
	// message per short job. It must stay well under the scheduler's
	// ack_timeout. Default 20ms.
	AckDelay time.Duration
	// ShutdownGrace is how long in-flight jobs may run after shutdown begins
	// before their contexts are cancelled. Default 10s.
	ShutdownGrace time.Duration
	// Logger. Default slog.Default(). Per-job events are logged at debug.
	Logger *slog.Logger

	// Blobs reads jobs' obj:// inputs (Job.Input) and stores results
	// (Result.Data) too large to go inline. Default: a blob.Store on the
	// worker's connection (bucket CORTEX_BLOBS, 64 MiB cap), which the
	// scheduler creates (docs/blobs.md).
	Blobs *blob.Store
	// ResultInlineLimit: Result.Data up to this many bytes goes inline in
	// result_ptr as a data: URL, as long as that URL fits the scheduler's
	// bound on result_ptr (MaxResultPtr); larger goes to Blobs. Default
	// 2 KiB, as the Python SDK.
	ResultInlineLimit int

	// NamedSubjects makes the worker name itself in the subjects it
	// publishes on: heartbeats on sys.heartbeat.<Kind>.<ID>, results on
	// sys.job.result.<ID>. A NATS server that lets each worker's user
	// publish only on its own subjects needs it (docs/security.md), and so
	// does a scheduler with require_worker_identity. Without it the worker
	// uses the design document's subjects, sys.heartbeat.<Kind> and
	// sys.job.result, where the design document's clients read results.
	NamedSubjects bool

	// Metrics, if set, is where the worker registers
	// cortex_worker_jobs_total{topic,status} and
	// cortex_worker_job_seconds{topic} (docs/observability.md). Workers may
	// share one registry. Default none: nothing is counted.
	Metrics prometheus.Registerer
	// TracerProvider, if set, records each job's "worker run" span, the
	// child of the scheduler's dispatch span, and propagates its context
	// in W3C traceparent headers (docs/observability.md). Default: the
	// OpenTelemetry global provider when the process exports traces
	// (OTEL_EXPORTER_OTLP_ENDPOINT), else none.
	TracerProvider trace.TracerProvider
}

func (c *Config) setDefaults() error {
	switch {
	case c.Handler == nil:
		return errors.New("worker: Config.Handler is required")
	case c.Kind == "":
		return errors.New("worker: Config.Kind is required")
	}
	if c.Topic == "" {
		c.Topic = wire.JobSubjectPrefix + c.Kind
	}
	if c.QueueGroup == "" {
		c.QueueGroup = "workers-" + c.Kind
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		if host == "" {
			host = "local"
		}
		// One subject token, whatever the host and the kind (a kind may
		// name a dotted topic) are called.
		c.ID = strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").
			Replace(fmt.Sprintf("worker-%s-%s-%s", c.Kind, host, uuid.NewString()[:8]))
	}
	if c.Region == "" {
		c.Region = "local"
	}
	if c.Type == "" {
		c.Type = "cpu"
	}
	if len(c.Capabilities) == 0 {
		c.Capabilities = []string{c.Kind}
	}
	if err := c.checkPlacement(); err != nil {
		return err
	}
	if strings.ContainsAny(c.ID, ". *>\t\r\n") {
		return fmt.Errorf("worker: id %q must be one subject token: no dots, spaces or wildcards", c.ID)
	}
	if c.ResultInlineLimit < 0 {
		return fmt.Errorf("worker: ResultInlineLimit %d must not be negative", c.ResultInlineLimit)
	}
	if c.ResultInlineLimit == 0 {
		c.ResultInlineLimit = DefaultResultInlineLimit
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.LeaseInterval <= 0 {
		c.LeaseInterval = 500 * time.Millisecond
	}
	if c.LeaseInterval > c.HeartbeatInterval {
		c.LeaseInterval = c.HeartbeatInterval
	}
	if c.SlotWait <= 0 {
		c.SlotWait = 200 * time.Millisecond
	}
	if c.AckDelay <= 0 {
		c.AckDelay = 20 * time.Millisecond
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// checkPlacement validates and defaults what the worker reports for
// placement: capacity, capabilities, labels and pool.
func (c *Config) checkPlacement() error {
	switch {
	case c.Capacity < 0:
		return fmt.Errorf("worker: capacity %d must be positive", c.Capacity)
	case c.Concurrency < 0:
		return fmt.Errorf("worker: concurrency %d must be positive", c.Concurrency)
	case c.Capacity > 0 && c.Concurrency > 0 && c.Capacity != c.Concurrency:
		return fmt.Errorf("worker: capacity %d and concurrency %d differ: they are one setting, set one", c.Capacity, c.Concurrency)
	case c.Capacity > math.MaxInt32:
		return fmt.Errorf("worker: capacity %d is too large", c.Capacity)
	}
	if c.Capacity == 0 {
		c.Capacity = c.Concurrency
	}
	if c.Capacity == 0 {
		c.Capacity = 64
	}
	c.Concurrency = c.Capacity
	// Copies: the heartbeats carry them while the caller may reuse its own.
	c.Capabilities, c.Labels = slices.Clone(c.Capabilities), maps.Clone(c.Labels)
	for _, cp := range c.Capabilities {
		if strings.TrimSpace(cp) == "" || strings.TrimSpace(cp) != cp {
			return fmt.Errorf("worker: capability %q must be non-empty, without surrounding blanks", cp)
		}
	}
	for k, v := range c.Labels {
		if strings.TrimSpace(k) == "" || strings.TrimSpace(k) != k || strings.ContainsAny(k, "=,") {
			return fmt.Errorf("worker: label key %q must be non-empty, without '=', ',' or surrounding blanks", k)
		}
		if strings.TrimSpace(v) != v {
			return fmt.Errorf("worker: label %s=%q: the value has surrounding blanks", k, v)
		}
	}
	if strings.ContainsAny(c.Pool, " \t\r\n") {
		return fmt.Errorf("worker: pool %q must not contain blanks", c.Pool)
	}
	return nil
}

// Stats counts what the worker did.
type Stats struct {
	Received, Completed, Failed, PublishErrors uint64
	Refused, Cancelled, TimedOut               uint64
	Active                                     int64
}

// Worker runs jobs for one topic.
type Worker struct {
	cfg     Config
	metrics *workerMetrics // nil without Config.Metrics (metrics.go)
	// tracer and traceHeaders are set when spans are recorded (trace.go).
	tracer       trace.Tracer
	traceHeaders traceHeaders
	bus          transport
	base         context.Context // Run's, without its cancellation: the parent of the handlers' contexts
	ready        chan struct{}   // closed when the first Run has subscribed
	readyOnce    sync.Once
	log          *slog.Logger
	slots        chan struct{}
	jobs         sync.WaitGroup

	// Runners are goroutines that run jobs one after another, so that a job
	// neither starts a goroutine nor grows a fresh stack. There are at most
	// Concurrency of them; they end when Run does.
	work     chan queuedJob // unbuffered: hands a job to an idle runner
	quit     chan struct{}  // closed when the jobs are done: idle runners end
	runners  sync.WaitGroup
	nrunners int // owned by the subscription's callback

	heldMu     sync.Mutex
	held       heldList      // the jobs running now; one job may be held twice (two attempts)
	idle       chan struct{} // the last held job was released: heartbeat now (heartbeatLoop)
	handedBack bool          // the shutdown grace is over: jobs held from now on are handed back at once

	running                                    atomic.Bool
	draining                                   atomic.Bool
	active                                     atomic.Int64
	received, completed, failed, publishErrors atomic.Uint64
	refused, cancelled, timedOut               atomic.Uint64
	cpu                                        cpuMeter

	resultSubject, heartbeatSubject string // see Config.NamedSubjects

	// answers publishes results for a scheduler's answer (answers.go);
	// nil: plainly. Set by Run before it subscribes.
	answers *answers
}

// heldJob is a job the worker runs: its attempt, and its handler's context.
type heldJob struct {
	id       string
	attempt  int32
	reply    string // where to confirm it; "" once confirmed, or if nobody asked
	traceID  string
	started  time.Time
	deadline time.Time // zero: none

	prev, next *heldJob // in Worker.held; guarded by Worker.heldMu

	job Job // what the handler is given

	// result is the job's result and its packet, filled in by run: in the
	// held job's allocation, not one of its own. (A packet kept for a
	// scheduler's answer keeps the held job alive with it, out of the
	// list: a few hundred bytes, for at most answerTimeout.)
	result resultPacket

	mu           sync.Mutex
	base         context.Context         // Run's context, without its cancellation
	ctx          context.Context         // the handler's context, made on first use (see jobContext)
	cancel       context.CancelCauseFunc // ctx's
	stopDeadline context.CancelFunc      // ctx's deadline's, when it has one
	cause        error                   // why the job's context ended; nil while it runs
}

// heldList is the set of held jobs: a doubly linked list through the jobs
// themselves, so that holding and releasing a job is a few pointer writes
// where a map cost a hash and a probe each. Guarded by Worker.heldMu.
type heldList struct {
	head *heldJob
	n    int
}

func (l *heldList) add(h *heldJob) {
	h.prev, h.next = nil, l.head
	if l.head != nil {
		l.head.prev = h
	}
	l.head = h
	l.n++
}

func (l *heldList) remove(h *heldJob) {
	if h.prev == nil && l.head != h {
		return // not in the list
	}
	if h.prev != nil {
		h.prev.next = h.next
	} else {
		l.head = h.next
	}
	if h.next != nil {
		h.next.prev = h.prev
	}
	h.prev, h.next = nil, nil
	l.n--
}

// end ends the job's context with cause (nil: context.Canceled). The first
// cause stays, as with context.WithCancelCause. At the attempt's deadline
// (cause context.DeadlineExceeded) a context made with that deadline ends by
// itself, so that its Err is context.DeadlineExceeded: it is left to do so.
func (h *heldJob) end(cause error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cause != nil {
		return
	}
	if cause == nil {
		cause = context.Canceled
	}
	h.cause = cause
	if h.cancel != nil && (h.stopDeadline == nil || cause != context.DeadlineExceeded) {
		h.cancel(cause)
	}
}

// free ends the job's context, if it is still running, and stops its
// deadline's timer: the handler has returned.
func (h *heldJob) free() {
	h.end(nil)
	h.mu.Lock()
	stop := h.stopDeadline
	h.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// ended reports why the job's context ended; nil if it has not.
func (h *heldJob) ended() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cause
}

// jobContext is the context a handler is given: its heldJob. The context
// behind it is made the first time the handler asks for Done, Err, Deadline
// or Value, and then behaves as any context does: it carries the values of
// Run's context and the attempt's deadline, context.Cause gives why it
// ended, children are cancelled with it. A handler that never looks (a short
// computation) costs no context at all; making and cancelling one per job
// was a few percent of the worker's cost in cortex bench.
type jobContext heldJob

func (c *jobContext) made() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		// Run's context without its cancellation: a child registers with
		// its parent, a map write per job, and a handler must not end at
		// once when Run's context does (the shutdown grace lets it finish).
		// Shutdown reaches held jobs through cancelAll.
		parent := c.base
		if !c.deadline.IsZero() {
			// A timer, only for a handler that looks at its context: the
			// confirmation loop enforces the deadline for those that do not.
			parent, c.stopDeadline = context.WithDeadline(parent, c.deadline)
		}
		c.ctx, c.cancel = context.WithCancelCause(parent)
		if c.cause != nil && (c.stopDeadline == nil || c.cause != context.DeadlineExceeded) {
			c.cancel(c.cause)
		}
	}
	return c.ctx
}

func (c *jobContext) Deadline() (time.Time, bool) { return c.made().Deadline() }
func (c *jobContext) Done() <-chan struct{}       { return c.made().Done() }
func (c *jobContext) Err() error                  { return c.made().Err() }
func (c *jobContext) Value(key any) any           { return c.made().Value(key) }
func (c *jobContext) String() string              { return "worker job " + c.id }

// The causes a handler's context is cancelled with (context.Cause).
var (
	// ErrCancelled: the job was cancelled (cortex job cancel, or
	// Client.Cancel). The job ends CANCELLED.
	ErrCancelled = errors.New("job cancelled")
	// ErrShutdown: the worker is shutting down and the shutdown grace is
	// over. The attempt is handed back to the scheduler, which runs it
	// again elsewhere.
	ErrShutdown = errors.New("worker shutting down")
)

// New validates cfg, fills in its defaults and returns a worker that runs on
// nc, a connection the caller made and closes (after Run has returned). The
// worker reads nc through CortexOS's hardened bus code: packets over 1 MiB,
// or that do not decode, are dropped and logged; a panicking handler fails
// its job.
func New(nc *nats.Conn, cfg Config) (*Worker, error) {
	if nc == nil {
		return nil, errors.New("worker: a NATS connection is required")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if cfg.Blobs == nil {
		s, err := blob.New(nc, blob.Config{})
		if err != nil {
			return nil, fmt.Errorf("worker: %w", err)
		}
		cfg.Blobs = s
	}
	w := newWorker(bus.FromConn(nc, bus.Config{Logger: cfg.Logger}), cfg)
	if cfg.Metrics != nil {
		m, err := newWorkerMetrics(cfg.Metrics, cfg.Topic)
		if err != nil {
			return nil, fmt.Errorf("worker: metrics: %w", err)
		}
		w.metrics = m
	}
	w.setupTracing()
	return w, nil
}

// newWorker is New on any transport; cfg has its defaults.
func newWorker(t transport, cfg Config) *Worker {
	w := &Worker{
		cfg:   cfg,
		bus:   t,
		log:   cfg.Logger.With("component", "worker", "kind", cfg.Kind),
		slots: make(chan struct{}, cfg.Concurrency),
		idle:  make(chan struct{}, 1),
		base:  context.Background(),
		ready: make(chan struct{}),

		resultSubject:    wire.SubjectResult,
		heartbeatSubject: wire.HeartbeatSubject(cfg.Kind),
	}
	if cfg.NamedSubjects {
		w.resultSubject, w.heartbeatSubject = wire.ResultSubject(cfg.ID), wire.WorkerHeartbeatSubject(cfg.Kind, cfg.ID)
	}
	return w
}

// ID is the worker's id.
func (w *Worker) ID() string { return w.cfg.ID }

// Ready is closed once Run has subscribed to the worker's subjects and the
// NATS server has the subscriptions: a job dispatched from then on reaches
// this worker. (The scheduler learns of the worker from its heartbeats,
// the first of which Run sends at once; see the scheduler's
// docs/scheduling.md for when a strategy places jobs by them.)
func (w *Worker) Ready() <-chan struct{} { return w.ready }

// Run takes jobs until ctx ends, then stops taking jobs, lets in-flight jobs
// finish within ShutdownGrace (cancelling the rest, which are handed back to
// the scheduler), and returns. The handlers' contexts carry ctx's values but
// not its cancellation: a handler sees the end of ctx only when the grace is
// over (context.Cause: ErrShutdown).
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("worker: already running")
	}
	defer w.running.Store(false)
	w.work, w.quit, w.nrunners = make(chan queuedJob), make(chan struct{}), 0
	w.base = context.WithoutCancel(ctx) // set before the subscriptions start

	w.draining.Store(false)
	w.heldMu.Lock()
	w.handedBack = false
	w.heldMu.Unlock()
	w.answers = w.startAnswers()
	answersDone := make(chan struct{})
	var answersLoop sync.WaitGroup // Run returns only once the loop has
	stopAnswers := func() {
		if w.answers != nil {
			close(answersDone)
			answersLoop.Wait()
			w.answers.stop(answerWait)
		}
	}
	if w.answers != nil {
		answersLoop.Go(func() { w.answers.loop(answersDone) })
	}
	drainCancels, err := w.bus.Subscribe(wire.WorkerCancelSubject(w.cfg.ID), "", w.handleCancel)
	if err != nil {
		stopAnswers()
		return fmt.Errorf("worker: %w", err)
	}
	drain, err := w.subscribeJobs(w.cfg.Topic, w.cfg.QueueGroup)
	if err != nil {
		_ = drainCancels()
		stopAnswers()
		return fmt.Errorf("worker: %w", err)
	}
	if w.cfg.Direct {
		// Its own subject: the same handling as the topic's, no queue group.
		drainTopic := drain
		drainDirect, err := w.subscribeJobs(wire.WorkerJobSubject(w.cfg.ID), "")
		if err != nil {
			_ = drainTopic()
			_ = drainCancels()
			stopAnswers()
			return fmt.Errorf("worker: %w", err)
		}
		drain = func() error { return errors.Join(drainDirect(), drainTopic()) }
	}
	if f, ok := w.bus.(interface{ Flush(context.Context) error }); ok {
		// The server has the subscriptions once the flush returns: a job
		// dispatched after Ready reaches this worker.
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := f.Flush(flushCtx); err != nil {
			w.log.Warn("flushing the subscriptions failed; they reach the server when it is back", "err", err)
		}
		cancel()
	}
	w.readyOnce.Do(func() { close(w.ready) })
	w.log.Info("running", "worker_id", w.cfg.ID, "topic", w.cfg.Topic,
		"queue_group", w.cfg.QueueGroup, "capacity", w.cfg.Capacity, "inline", w.cfg.Inline, "direct", w.cfg.Direct,
		"capabilities", w.cfg.Capabilities, "labels", w.cfg.Labels, "pool", w.cfg.Pool)

	hbDone := make(chan struct{})
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(hbDone)
		w.heartbeatLoop(hbCtx)
	}()
	confirmDone := make(chan struct{})
	go func() {
		defer close(confirmDone)
		w.confirmLoop(hbCtx)
	}()

	<-ctx.Done()
	w.log.Info("shutting down", "worker_id", w.cfg.ID, "in_flight", w.active.Load())
	w.draining.Store(true)
	w.sendHeartbeat() // tell the schedulers at once: no more jobs here
	// The grace starts now, not after the drain: at full concurrency the
	// subscription's callback waits for a free slot, so the drain cannot end
	// before a running job does, and it is the grace that ends them.
	grace := time.AfterFunc(w.cfg.ShutdownGrace, func() {
		w.log.Warn("shutdown grace over, handing back unfinished jobs", "worker_id", w.cfg.ID, "in_flight", w.active.Load())
		w.heldMu.Lock()
		w.handedBack = true // and the jobs still waiting for a slot, when they get one
		w.heldMu.Unlock()
		w.cancelAll(ErrShutdown)
	})
	drainErr := drain() // no new jobs; the callback has handed off what it held
	w.jobs.Wait()       // every jobs.Add happened in the callback, before drain returned
	close(w.quit)       // the runners are idle: end them
	w.runners.Wait()
	stopAnswers() // every result is published: wait a moment for their answers
	grace.Stop()
	stopHB()
	<-hbDone
	<-confirmDone
	if err := drainCancels(); err != nil && drainErr == nil {
		drainErr = err
	}
	w.sendHeartbeat() // a last heartbeat with the final load
	w.log.Info("stopped", "worker_id", w.cfg.ID)
	return drainErr
}

// handlePacket takes a dispatched job. A job the scheduler dispatched
// (attempt >= 1) gets a slot within SlotWait or is refused (JobAnswer on the
// reply subject), as it is while the worker drains, so the scheduler offers
// it elsewhere; it is confirmed later (see AckDelay). A job published straight
// on the subject (attempt 0, as in the design document) waits for a slot.
// It keeps nothing of p past its return but p's JobRequest and strings
// (subscribeJobs: the packet may be pooled).
func (w *Worker) handlePacket(p *pb.BusPacket, reply string) {
	req := p.GetJobRequest()
	if req == nil {
		w.log.Warn("ignored packet that is not a job request", "sender_id", p.GetSenderId())
		return
	}
	w.received.Add(1)
	mayRefuse := req.GetAttempt() > 0 && reply != ""
	missing := w.lacks(req)
	if missing != "" && mayRefuse {
		// Delivered through the topic's queue group to a worker that cannot
		// run it: hand it back, so that it is placed again.
		w.refused.Add(1)
		out := wire.NewPacket(p.GetTraceId(), w.cfg.ID)
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Error: "worker " + w.cfg.ID + " lacks " + missing, Retryable: true}}
		if err := w.bus.Publish(reply, out); err != nil {
			w.log.Warn("refusing a job failed", "job_id", req.GetJobId(), "err", err)
		}
		return
	}
	if !w.acquire(mayRefuse, sentAt(p)) {
		w.refused.Add(1)
		reason := "at capacity"
		if w.draining.Load() {
			reason = "draining"
		}
		out := wire.NewPacket(p.GetTraceId(), w.cfg.ID)
		out.Payload = &pb.BusPacket_JobAnswer{JobAnswer: &pb.JobAnswer{Error: reason, Retryable: true}}
		if err := w.bus.Publish(reply, out); err != nil {
			w.log.Warn("refusing a job failed", "job_id", req.GetJobId(), "err", err)
		}
		return
	}
	w.active.Add(1)
	w.jobs.Add(1)
	ctx, h := w.hold(req, reply, p.GetTraceId())
	j := queuedJob{ctx: ctx, req: req, traceID: p.GetTraceId(), held: h}
	if w.cfg.Inline {
		w.run(j)
		return
	}
	w.dispatch(j)
}

// lacks names the first of the job's required capabilities or labels this
// worker does not have; "" when it has them all.
func (w *Worker) lacks(req *pb.JobRequest) string {
	for _, c := range req.GetRequiredCapabilities() {
		if !slices.Contains(w.cfg.Capabilities, c) {
			return "capability " + c
		}
	}
	for k, v := range req.GetRequiredLabels() {
		if got, ok := w.cfg.Labels[k]; !ok || got != v {
			return "label " + k + "=" + v
		}
	}
	return ""
}

// acquire takes a slot: at once if one is free; else, when the job may be
// refused, within what is left of SlotWait since the dispatch was sent, or
// whenever one frees when it may not.
//
// SlotWait counts from the sending (the packet's created_at), not from when
// this callback got to the dispatch. Dispatches are handled one at a time:
// at capacity, each queued one would otherwise wait a full SlotWait after the
// one before, and with a backlog larger than the workers' capacity the later
// ones were taken long after the scheduler had stopped waiting for them
// (ack_timeout) and offered them again, so every slot ran attempts whose
// results were fenced and no job completed any more.
func (w *Worker) acquire(mayRefuse bool, sent time.Time) bool {
	if w.draining.Load() && mayRefuse {
		return false
	}
	select {
	case w.slots <- struct{}{}:
		return true
	default:
	}
	if !mayRefuse {
		w.slots <- struct{}{} // at capacity, the next job waits here, in NATS's buffer
		return true
	}
	wait := w.cfg.SlotWait
	if !sent.IsZero() {
		wait -= max(time.Since(sent), 0)
	}
	if wait <= 0 {
		return false
	}
	t := slotTimers.Get().(*time.Timer)
	t.Reset(wait)
	defer func() {
		t.Stop() // since Go 1.23 a stopped timer's channel holds nothing stale
		slotTimers.Put(t)
	}()
	select {
	case w.slots <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// slotTimers are the timers of acquire's waits: at capacity every dispatch
// waits on one, and a timer per dispatch was a good part of the worker's
// allocations.
var slotTimers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// sentAt is when p was sent, by its sender's clock; zero if it does not say.
func sentAt(p *pb.BusPacket) time.Time {
	if ts := p.GetCreatedAt(); ts != nil {
		return ts.AsTime()
	}
	return time.Time{}
}

// hold records a job as held and returns its handler's context: cancelled by
// a JobCancel, at the attempt's timeout, or at the end of the shutdown grace.
// The timeout is enforced by the confirmation loop, not a timer per job.
func (w *Worker) hold(req *pb.JobRequest, reply, traceID string) (context.Context, *heldJob) {
	h := &heldJob{id: req.GetJobId(), attempt: req.GetAttempt(), reply: reply, traceID: traceID, started: time.Now(), base: w.base}
	h.job = Job{req: req, traceID: traceID, workerID: w.cfg.ID, blobs: w.cfg.Blobs}
	if ms := req.GetTimeoutMs(); ms > 0 {
		h.deadline = h.started.Add(time.Duration(ms) * time.Millisecond)
	}
	w.heldMu.Lock()
	w.held.add(h)
	if w.handedBack {
		h.end(ErrShutdown)
	}
	w.heldMu.Unlock()
	return (*jobContext)(h), h
}

// confirmLoop, every AckDelay/2, confirms the held jobs that have run for
// AckDelay and cancels those past their timeout.
func (w *Worker) confirmLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.AckDelay / 2)
	defer t.Stop()
	type ack struct {
		id, reply, traceID string
		attempt            int32
	}
	var acks []ack
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			acks = acks[:0]
			w.heldMu.Lock()
			for h := w.held.head; h != nil; h = h.next {
				if h.reply != "" && now.Sub(h.started) >= w.cfg.AckDelay {
					acks = append(acks, ack{h.id, h.reply, h.traceID, h.attempt})
					h.reply = ""
				}
				if !h.deadline.IsZero() && now.After(h.deadline) {
					h.end(context.DeadlineExceeded)
				}
			}
			w.heldMu.Unlock()
			for _, a := range acks {
				out := wire.NewPacket(a.traceID, w.cfg.ID)
				out.Payload = &pb.BusPacket_JobAck{JobAck: &pb.JobAck{JobId: a.id, Attempt: a.attempt, WorkerId: w.cfg.ID}}
				if err := w.bus.Publish(a.reply, out); err != nil {
					w.log.Warn("confirming a job failed", "job_id", a.id, "err", err)
				}
			}
		}
	}
}

func (w *Worker) release(h *heldJob) {
	w.heldMu.Lock()
	h.free()
	w.held.remove(h)
	idle := w.held.n == 0
	w.heldMu.Unlock()
	if idle {
		select {
		case w.idle <- struct{}{}:
		default:
		}
	}
}

// cancelAll cancels every held job with cause.
func (w *Worker) cancelAll(cause error) {
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	for h := w.held.head; h != nil; h = h.next {
		h.end(cause)
	}
}

// handleCancel cancels a held job (every attempt of it held here) on the
// scheduler's word.
func (w *Worker) handleCancel(p *pb.BusPacket) {
	c := p.GetJobCancel()
	if c == nil {
		return
	}
	w.heldMu.Lock()
	defer w.heldMu.Unlock()
	for h := w.held.head; h != nil; h = h.next {
		if h.id == c.GetJobId() {
			w.log.Info("cancelling job", "job_id", h.id, "attempt", h.attempt, "reason", c.GetReason())
			h.end(ErrCancelled)
		}
	}
}

// queuedJob is a job handed to a runner.
type queuedJob struct {
	ctx     context.Context
	req     *pb.JobRequest
	traceID string
	held    *heldJob
}

// dispatch hands j to an idle runner, or starts a runner while there are
// fewer than Concurrency, or else waits for one: the slot j holds was freed by
// a runner that is about to take the next job.
func (w *Worker) dispatch(j queuedJob) {
	select {
	case w.work <- j:
		return
	default:
	}
	if w.nrunners < w.cfg.Concurrency {
		w.nrunners++
		w.runners.Add(1)
		go w.runner(j)
		return
	}
	select {
	case w.work <- j:
	case <-w.quit: // Run is over (its drain timed out): run it on its own
		go w.run(j)
	}
}

// runner runs j, then the jobs handed to it, until Run ends.
func (w *Worker) runner(j queuedJob) {
	defer w.runners.Done()
	for {
		w.run(j)
		select {
		case j = <-w.work:
		case <-w.quit:
			return
		}
	}
}

func (w *Worker) run(j queuedJob) {
	req, traceID := j.req, j.traceID
	defer func() {
		w.release(j.held)
		w.active.Add(-1)
		<-w.slots
		w.jobs.Done()
	}()
	debug := w.log.Enabled(context.Background(), slog.LevelDebug)
	if debug {
		w.log.Debug("job", "job_id", req.GetJobId(), "topic", req.GetTopic(), "attempt", req.GetAttempt(),
			"context_ptr", req.GetContextPtr(), "trace_id", traceID)
	}
	start := j.held.started // inline, the job was held microseconds ago
	if !w.cfg.Inline {
		start = time.Now() // it may have waited for a runner
	}
	runCtx, span := w.startRun(j.ctx, req, traceID)
	out, err := w.call(runCtx, &j.held.job)
	if err == nil {
		out.Ptr, err = w.storeResult(j.ctx, req, out)
	}
	// One clock read per job for the result's execution_ms, the metric and
	// the packet's time stamp; the result and its packet live in the held
	// job (heldJob.result): no allocation of their own.
	end := time.Now()
	took := end.Sub(start)
	rp := &j.held.result
	*rp = resultPacket{res: pb.JobResult{
		JobId:       req.GetJobId(),
		Status:      pb.JobStatus_JOB_STATUS_COMPLETED,
		ResultPtr:   out.Ptr,
		WorkerId:    w.cfg.ID,
		ExecutionMs: took.Milliseconds(),
		Attempt:     req.GetAttempt(),
	}}
	res := &rp.res
	if err != nil {
		res.Error = err.Error()
		if d := j.held.deadline; !d.IsZero() && !time.Now().Before(d) {
			// Past its deadline: its context may have ended by itself
			// before the confirmation loop saw it.
			j.held.end(context.DeadlineExceeded)
		}
		switch cause := j.held.ended(); {
		case errors.Is(cause, ErrShutdown):
			res.Status = pb.JobStatus_JOB_STATUS_CANCELLED // handed back
			res.Error = ErrShutdown.Error()
			w.cancelled.Add(1)
		case errors.Is(cause, ErrCancelled):
			res.Status = pb.JobStatus_JOB_STATUS_CANCELLED
			res.Error = ErrCancelled.Error()
			w.cancelled.Add(1)
		case errors.Is(cause, context.DeadlineExceeded):
			res.Status = pb.JobStatus_JOB_STATUS_TIMEOUT
			res.Error = fmt.Sprintf("timed out after %dms: %v", req.GetTimeoutMs(), err)
			w.timedOut.Add(1)
		default:
			res.Status = pb.JobStatus_JOB_STATUS_FAILED
			w.failed.Add(1)
		}
		w.log.Warn("job did not complete", "job_id", req.GetJobId(), "status", res.Status.String(), "err", err, "trace_id", traceID, "span_id", spanID(span))
	} else {
		w.completed.Add(1)
	}
	w.metrics.observe(res.Status, took)
	traced := w.sendingResult(span, traceID, res)
	defer traced()
	rp.payload.JobResult = res
	wire.StampAt(&rp.packet, &rp.created, traceID, w.cfg.ID, end)
	rp.packet.Payload = &rp.payload
	if err := w.publishResult(&rp.packet, end); err != nil {
		w.publishErrors.Add(1)
		w.log.Error("publishing result failed", "job_id", req.GetJobId(), "err", err)
		return
	}
	if debug {
		w.log.Debug("result", "job_id", req.GetJobId(), "status", res.Status.String(),
			"execution_ms", res.ExecutionMs, "trace_id", traceID, "span_id", spanID(span))
	}
}

// resultPacket is a job's result and its packet in one piece.
type resultPacket struct {
	res     pb.JobResult
	packet  pb.BusPacket
	created timestamppb.Timestamp
	payload pb.BusPacket_JobResult
}

// publishResult publishes a result on the worker's result subject, for a
// scheduler's answer when it can (answers.go); now is the time it was
// stamped with.
func (w *Worker) publishResult(packet *pb.BusPacket, now time.Time) error {
	if w.answers != nil {
		return w.answers.publish(w.resultSubject, packet, now)
	}
	return w.bus.Publish(w.resultSubject, packet)
}

// answerWait is how long a stopping worker waits for the answers to its
// last results before it publishes them for the result stream.
const answerWait = time.Second

// DefaultResultInlineLimit is Config.ResultInlineLimit's default.
const DefaultResultInlineLimit = 2 << 10

// MaxResultPtr is the longest result_ptr the scheduler takes (its field
// limits, docs/security.md): a data: URL longer than this goes to Blobs.
const MaxResultPtr = 4096

// storeResult is the result_ptr of out: Ptr, or Data inline or stored.
func (w *Worker) storeResult(ctx context.Context, req *pb.JobRequest, out Result) (string, error) {
	switch {
	case out.Data == nil:
		return out.Ptr, nil
	case out.Ptr != "":
		return "", errors.New("worker: the handler's Result has both Data and Ptr: set one")
	case len(out.Data) <= w.cfg.ResultInlineLimit:
		if u := blob.DataURL(out.Data, out.MediaType); len(u) <= MaxResultPtr {
			return u, nil
		}
	}
	if w.cfg.Blobs == nil {
		return "", errors.New("worker: a result too large to go inline, and no blob store")
	}
	p, err := w.cfg.Blobs.PutBytes(ctx, blob.NewKey(fmt.Sprintf("results/%s/%d", req.GetJobId(), req.GetAttempt())), out.Data)
	if err != nil {
		return "", fmt.Errorf("storing the result: %w", err)
	}
	return p.String(), nil
}

// call runs the handler, turning a panic into a job failure.
func (w *Worker) call(ctx context.Context, job *Job) (out Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = Result{}, fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return w.cfg.Handler.HandleJob(ctx, job)
}

// heartbeatLoop heartbeats every LeaseInterval while the worker holds jobs
// (each heartbeat renews their leases) and every HeartbeatInterval otherwise.
// When the last job it holds is released after a heartbeat that listed jobs
// (and so said the next comes within LeaseInterval), it heartbeats at once:
// the schedulers learn that it is idle, and at which interval it now
// heartbeats, without waiting for a tick. At most one such heartbeat
// follows each one that listed jobs.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	last, busy := w.beat()
	t := time.NewTicker(w.cfg.LeaseInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.idle:
			if busy {
				last, busy = w.beat()
			}
		case now := <-t.C:
			if busy || w.active.Load() > 0 || now.Sub(last) >= w.cfg.HeartbeatInterval-w.cfg.LeaseInterval/2 {
				last, busy = w.beat()
			}
		}
	}
}

// beat sends a heartbeat and reports when, and whether it listed jobs.
func (w *Worker) beat() (time.Time, bool) {
	w.heldMu.Lock()
	busy := w.held.n > 0
	w.heldMu.Unlock()
	return w.sendHeartbeat(), busy
}

// gpuUtilization is Config.GPUUtilization's reading, within 0–100.
func (w *Worker) gpuUtilization() float32 {
	if w.cfg.GPUUtilization == nil {
		return 0
	}
	u := w.cfg.GPUUtilization()
	switch {
	case u != u || u < 0: // NaN, or below range
		return 0
	case u > 100:
		return 100
	}
	return u
}

func (w *Worker) sendHeartbeat() time.Time {
	hb := &pb.Heartbeat{
		WorkerId:       w.cfg.ID,
		Region:         w.cfg.Region,
		Type:           w.cfg.Type,
		CpuLoad:        w.cpu.load(),
		GpuUtilization: w.gpuUtilization(),
		ActiveJobs:     int32(w.active.Load()),
		Capabilities:   w.cfg.Capabilities,
		IntervalMs:     w.cfg.HeartbeatInterval.Milliseconds(),
		Draining:       w.draining.Load(),
		Topics:         []string{w.cfg.Topic},
		Confirms:       true,
		Capacity:       int32(w.cfg.Capacity),
		Labels:         w.cfg.Labels,
		Pool:           w.cfg.Pool,
		Direct:         w.cfg.Direct,
	}
	w.heldMu.Lock()
	if w.held.n > 0 {
		hb.IntervalMs = w.cfg.LeaseInterval.Milliseconds()
		hb.Held = make([]*pb.HeldJob, 0, w.held.n)
		for h := w.held.head; h != nil; h = h.next {
			hb.Held = append(hb.Held, &pb.HeldJob{JobId: h.id, Attempt: h.attempt})
		}
	}
	w.heldMu.Unlock()
	if err := w.bus.Publish(w.heartbeatSubject, wire.HeartbeatPacket("hb-"+w.cfg.ID, w.cfg.ID, hb)); err != nil {
		w.log.Warn("heartbeat failed", "err", err)
	}
	return time.Now()
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Received:      w.received.Load(),
		Completed:     w.completed.Load(),
		Failed:        w.failed.Load(),
		PublishErrors: w.publishErrors.Load(),
		Refused:       w.refused.Load(),
		Cancelled:     w.cancelled.Load(),
		TimedOut:      w.timedOut.Load(),
		Active:        w.active.Load(),
	}
}

// cpuMeter reports the process's CPU use since its last reading, in percent
// of the machine (0-100).
type cpuMeter struct {
	mu       sync.Mutex
	lastWall time.Time
	lastCPU  time.Duration
}

func (m *cpuMeter) load() float32 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	prevWall, prevCPU := m.lastWall, m.lastCPU
	m.lastWall, m.lastCPU = now, cpu
	if prevWall.IsZero() {
		return 0
	}
	wall := now.Sub(prevWall)
	if wall <= 0 {
		return 0
	}
	pct := float64(cpu-prevCPU) / float64(wall) / float64(runtime.NumCPU()) * 100
	return float32(min(max(pct, 0), 100))
}
