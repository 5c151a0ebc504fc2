// Package system assembles the CortexOS parts into the processes the binaries
// run: the scheduler, the echo worker, and both on an embedded NATS server.
package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/internal/tracing"
	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/worker"
)

// LoadConfig loads the config file (config/local.yaml when path is empty and
// it exists), then the environment, then the non-empty flag values, which win.
func LoadConfig(path, natsURL, logLevel string) (*config.Config, error) {
	cfg, err := config.LoadDefault(path)
	if err != nil {
		return nil, err
	}
	if natsURL != "" {
		cfg.NatsURL = natsURL
	}
	if logLevel != "" {
		cfg.LogLevel = logLevel
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return cfg, nil
}

// Logger returns a logger at the config's level writing to w.
func Logger(cfg *config.Config, w io.Writer) *slog.Logger {
	return slog.New(tracing.LogHandler(logging.New(w, Level(cfg)).Handler())) // trace_id, span_id of a context's span
}

// Level is the config's log level; LoadConfig has validated it.
func Level(cfg *config.Config) slog.Level {
	level, _ := config.ParseLevel(cfg.LogLevel)
	return level
}

// SchedulerOptions configures RunScheduler.
type SchedulerOptions struct {
	NatsURL string
	ID      string // default: unique per process
	Logger  *slog.Logger
	// Settings are the scheduler section of the config: store and timers.
	Settings config.Scheduler
	// Safety is the safety section: the policy, or the remote kernel.
	Safety config.Safety
	// Placement is the placement section; nil: placement's defaults
	// (placement.Config{}: least-loaded on the workers' reports, an
	// implicit pool per topic). `placement: {default_strategy: naive}`
	// gives the design document's queue-group dispatch.
	Placement *placement.Config
	// Clients is the clients section: identities bound to tenants, and
	// whether an identity is required. The zero value binds nobody.
	Clients tenancy.Config
	// NatsOptions are extra connection options (credentials, TLS).
	NatsOptions []nats.Option
	// Blobs is the blobs section: the blob store bucket the scheduler
	// creates (or updates) when it keeps jobs in JetStream.
	Blobs config.Blobs
	// Started, if set, is called once the scheduler is subscribed.
	Started func()
	// Metrics, if set, gets the scheduler's series (internal/metrics).
	Metrics prometheus.Registerer
}

// RunScheduler connects to NATS and runs a scheduler until ctx ends.
func RunScheduler(ctx context.Context, opts SchedulerOptions) error {
	b, err := bus.Connect(bus.Config{URL: opts.NatsURL, Name: "cortex-scheduler", Logger: opts.Logger, Options: opts.NatsOptions})
	if err != nil {
		return err
	}
	defer b.Close()
	store, dead, mode, err := OpenStoreReplicas(ctx, b, opts.Settings.Store, opts.Settings.Replicas)
	if err != nil {
		return err
	}
	if c, ok := store.(interface{ Close() error }); ok {
		// Once the engines have stopped (no write waits) and before the
		// connection drains: the key-value store's acknowledgement
		// subscription ends with the store, not with the connection.
		defer func() { _ = c.Close() }()
	}
	replicas := bus.DefaultReplicas(b.Conn(), opts.Settings.Replicas)
	if mode == config.StoreJetStream {
		blobs := opts.Blobs
		if blobs.Replicas == 0 {
			blobs.Replicas = replicas
		}
		EnsureBlobs(ctx, b, blobs, opts.Logger)
	}
	id := opts.ID
	if id == "" {
		id = scheduler.UniqueID("cortex-scheduler")
	}
	if opts.Settings.LeaderElection {
		return runElected(ctx, b, store, dead, mode, id, replicas, opts)
	}
	return runEngine(ctx, b, store, dead, mode, id, opts, nil, nil, nil)
}

// runEngine runs one scheduler engine on b until ctx ends, the bus closes
// for good, or lost (when not nil) is closed: the leader's lease lapsed.
// onStart, when not nil, is called once the engine has started.
// obs, when not nil, is the metrics of an earlier engine of this process.
func runEngine(ctx context.Context, b *bus.NatsBus, store scheduler.JobStore, dead scheduler.DeadLetters, mode, id string, opts SchedulerOptions, lost <-chan struct{}, onStart func(*scheduler.Engine), obs *metrics.Scheduler) error {
	var err error
	checker, stopSafety, err := openSafety(ctx, b, id, opts)
	if err != nil {
		return err
	}
	defer stopSafety()
	pcfg := placement.Config{} // no placement section: the defaults place
	if opts.Placement != nil {
		pcfg = *opts.Placement
	}
	pools, err := placement.NewPools(pcfg)
	if err != nil {
		return fmt.Errorf("placement: %w", err)
	}
	registry := placement.NewRegistry(placement.RegistryOptions{Pools: pools})
	var clients *tenancy.Policy
	if opts.Clients.RequireIdentity || len(opts.Clients.Identities) > 0 {
		if clients, err = tenancy.New(opts.Clients); err != nil {
			return fmt.Errorf("clients: %w", err)
		}
	}
	var observer scheduler.Observer
	if opts.Metrics != nil {
		if obs == nil { // an elected scheduler makes one for all its terms: the registry takes it once
			obs = metrics.NewScheduler(opts.Metrics)
		}
		observer = obs
	}
	if tracing.Enabled() { // OTEL_EXPORTER_OTLP_ENDPOINT set (tracing.Setup), or a test's provider
		b.EnableTraceHeaders()
		observer = scheduler.Observers(observer, tracing.NewScheduler(b))
	}
	engine, err := scheduler.New(scheduler.Config{
		Observer:          observer,
		Bus:               b,
		Safety:            checker,
		Registry:          registry,
		Placement:         pools,
		SafetyUnavailable: opts.Safety.Unavailable,
		Strategy:          scheduler.NewNaiveStrategy(),
		Store:             store,
		DeadLetters:       dead,
		ID:                id,
		Logger:            opts.Logger,
		AckTimeout:        opts.Settings.AckTimeout,
		LeaseInterval:     opts.Settings.LeaseInterval,
		LeaseMisses:       opts.Settings.LeaseMisses,
		MaxAttempts:       opts.Settings.MaxAttempts,
		Timeout:           opts.Settings.Timeout,
		TTL:               opts.Settings.TTL,

		RequireWorkerIdentity: opts.Settings.RequireWorkerIdentity,
		Clients:               clients,
		DocumentWorkers:       documentWorkers(opts.Settings.Results),
		AdoptPlacements:       opts.Settings.LeaderElection,
	})
	if err != nil {
		return err
	}
	if obs != nil {
		obs.Attach(engine, b.Stats, dead)
	}
	if err := engine.Start(ctx); err != nil {
		return fmt.Errorf("%w: %w", errEngineStart, err)
	}
	if onStart != nil {
		onStart(engine)
	}
	opts.Logger.Info("job store", logging.ComponentKey, logging.ComponentScheduler, "store", mode)
	if opts.Started != nil {
		opts.Started()
	}
	select {
	case <-ctx.Done():
		return engine.Stop(context.WithoutCancel(ctx))
	case <-lost:
		return errors.Join(errLeadershipLost, engine.Stop(context.WithoutCancel(ctx)))
	case <-b.Closed():
		// The server closed the connection for good (nats.go does not
		// reconnect after a protocol error or refused credentials): a
		// scheduler that went on would hear nothing. Exit, so that a
		// supervisor starts it again.
		_ = engine.Stop(context.WithoutCancel(ctx))
		return fmt.Errorf("scheduler: %w", closeError(b))
	}
}

// closeError is why the bus closed when nobody asked it to.
func closeError(b *bus.NatsBus) error {
	if err := b.CloseError(); err != nil {
		return err
	}
	return bus.ErrClosedByServer
}

// documentWorkers maps scheduler.results.trust_document_workers to the
// engine's setting; absent, the engine decides by require_worker_identity.
func documentWorkers(r config.Results) string {
	switch {
	case r.TrustDocumentWorkers == nil:
		return ""
	case *r.TrustDocumentWorkers:
		return scheduler.DocumentWorkersTrust
	default:
		return scheduler.DocumentWorkersRefuse
	}
}

// LoadPlacement reads a placement config file (the schema of the config's
// placement section) and validates it.
func LoadPlacement(path string) (*placement.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("placement: %w", err)
	}
	cfg, err := placement.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("placement %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("placement %s: %w", path, err)
	}
	return &cfg, nil
}

// openSafety returns the scheduler's safety checker: a remote kernel (cortex
// safety) when the config says so, else a kernel in this process with the
// policy file (reloaded when it changes) or the shipped default policy, its
// every decision published on sys.safety.audit. stop ends what it started.
func openSafety(ctx context.Context, b *bus.NatsBus, id string, opts SchedulerOptions) (scheduler.SafetyChecker, func(), error) {
	if opts.Safety.Remote {
		r, err := safety.NewRemote(safety.RemoteConfig{Bus: b, Timeout: opts.Safety.Timeout, SenderID: id})
		if err != nil {
			return nil, nil, err
		}
		opts.Logger.Info("decisions by the remote safety kernel", logging.ComponentKey, logging.ComponentSafety, "subject", safety.SubjectCheck,
			"timeout", opts.Safety.Timeout, "unavailable", opts.Safety.Unavailable)
		return r, func() {}, nil
	}
	auditor, err := safety.NewBusAuditor(safety.AuditorConfig{Bus: b, SenderID: id, Logger: opts.Logger})
	if err != nil {
		return nil, nil, err
	}
	kernel, err := safety.New(safety.Config{PolicyFile: opts.Safety.Policy, Logger: opts.Logger, Auditor: auditor, InstanceID: id})
	if err != nil {
		return nil, nil, err
	}
	auditor.Start()
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if opts.Safety.Policy != "" {
			_ = kernel.Watch(watchCtx, "")
		}
	}()
	p := kernel.Policy()
	opts.Logger.Info("policy in force", logging.ComponentKey, logging.ComponentSafety, "file", opts.Safety.Policy, "version", p.Version, "rules", p.NumRules())
	return kernel, func() {
		stopWatch()
		<-done
		auditor.Stop()
	}, nil
}

// OpenStore opens the job store and dead-letter queue for mode (auto,
// memory or jetstream) and makes the bus's intake durable with JetStream.
// auto is jetstream when the server has JetStream, memory otherwise.
func OpenStore(ctx context.Context, b *bus.NatsBus, mode string) (scheduler.JobStore, scheduler.DeadLetters, string, error) {
	return OpenStoreReplicas(ctx, b, mode, 0)
}

// OpenStoreReplicas is OpenStore with the replication factor of the
// streams and buckets it creates or updates (0: bus.DefaultReplicas).
func OpenStoreReplicas(ctx context.Context, b *bus.NatsBus, mode string, replicas int) (scheduler.JobStore, scheduler.DeadLetters, string, error) {
	if mode == "" || mode == config.StoreAuto {
		mode = config.StoreMemory
		if b.HasJetStream(ctx) {
			mode = config.StoreJetStream
		}
	}
	switch mode {
	case config.StoreMemory:
		return jobstore.NewMemory(), jobstore.NewMemoryDeadLetters(), mode, nil
	case config.StoreJetStream:
	default:
		return nil, nil, "", fmt.Errorf("store %q: want auto, memory or jetstream", mode)
	}
	js, err := b.JetStream()
	if err != nil {
		return nil, nil, "", err
	}
	replicas = bus.DefaultReplicas(b.Conn(), replicas)
	b.SetReplicas(replicas)
	var store *kvstore.Store
	err = retryCreate(ctx, func(ctx context.Context) (err error) {
		// SkipOwnWrites: the scheduler holds what it wrote. An elected
		// scheduler's engines share this Store one term after another,
		// never two at once, and a watch's end forgets what it skipped.
		store, err = kvstore.New(ctx, js, kvstore.Config{Replicas: replicas, SkipOwnWrites: true})
		return err
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("job store (replicas %d; to change an existing bucket by hand: nats kv edit CORTEX_JOBS --replicas %d): %w (is JetStream enabled on the server?)", replicas, replicas, err)
	}
	var dead *kvstore.DeadLetters
	err = retryCreate(ctx, func(ctx context.Context) (err error) {
		dead, err = kvstore.NewDeadLetters(ctx, js, kvstore.DLConfig{Replicas: replicas})
		return err
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("dead letters (replicas %d): %w", replicas, err)
	}
	b.SetDurable(true)
	return store, dead, mode, nil
}

// EnsureBlobs creates the blob store bucket, or updates it to cfg
// (docs/blobs.md). A server that refuses is logged, not fatal: jobs run
// without the blob store, and a pointer into it fails its job.
func EnsureBlobs(ctx context.Context, b *bus.NatsBus, cfg config.Blobs, log *slog.Logger) {
	err := retryCreate(ctx, func(ctx context.Context) error {
		return blob.EnsureBucket(ctx, b.Conn(), blob.BucketConfig{Bucket: cfg.Bucket, TTL: cfg.TTL, Replicas: cfg.Replicas, MaxBytes: cfg.MaxBytes})
	})
	if err != nil {
		log.With(logging.ComponentKey, logging.ComponentScheduler).Warn("blob store bucket not created: obj:// inputs and results will fail", "err", err)
	}
}

// EchoWorkerOptions configures RunEchoWorker.
type EchoWorkerOptions struct {
	NatsURL     string
	ID          string // default: unique per process
	WorkTime    echo.WorkTime
	Concurrency int
	// What the worker reports for placement (worker.Config): Capacity (the
	// same setting as Concurrency: set one), Capabilities (default [echo]),
	// Labels, the Pool it reserves itself for, and Direct (it takes jobs on
	// its own subject too).
	Capacity     int
	Capabilities []string
	Labels       map[string]string
	Pool         string
	Direct       bool
	// Inline runs each job on the delivery goroutine (worker.Config.Inline):
	// for WorkTime 0 only.
	Inline bool
	// Settings are the worker section of the config.
	Settings    config.Worker
	Logger      *slog.Logger
	NatsOptions []nats.Option
	// Metrics, if set, gets the worker's series (worker.Config.Metrics).
	Metrics prometheus.Registerer
}

// RunEchoWorker connects to NATS and runs an echo worker until ctx ends, on
// pkg/worker's public runtime, as a worker outside this repository would. The
// connection is the hardened bus's, so that a connection the server closes
// for good is seen and ends the worker.
func RunEchoWorker(ctx context.Context, opts EchoWorkerOptions) error {
	b, err := bus.Connect(bus.Config{URL: opts.NatsURL, Name: "cortex-worker-echo", Logger: opts.Logger, Options: opts.NatsOptions, DrainTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer b.Close() // drains: the last heartbeat and results go out
	w, err := worker.New(b.Conn(), worker.Config{
		Kind:              echo.Kind,
		Handler:           echo.Handler(opts.WorkTime),
		ID:                opts.ID,
		Concurrency:       opts.Concurrency,
		Capacity:          opts.Capacity,
		Capabilities:      opts.Capabilities,
		Labels:            opts.Labels,
		Pool:              opts.Pool,
		Direct:            opts.Direct,
		Inline:            opts.Inline,
		HeartbeatInterval: opts.Settings.HeartbeatInterval,
		LeaseInterval:     opts.Settings.LeaseInterval,
		ShutdownGrace:     opts.Settings.ShutdownGrace,
		NamedSubjects:     opts.Settings.NamedSubjects,
		Logger:            opts.Logger,
		Metrics:           opts.Metrics,
	})
	if err != nil {
		return err
	}
	// A connection the server closed for good ends the worker too: it
	// would otherwise heartbeat into nothing and take no jobs, alive and deaf.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		select {
		case <-b.Closed():
			stop()
		case <-runCtx.Done():
		}
	}()
	err = w.Run(runCtx)
	select {
	case <-b.Closed():
		if ctx.Err() == nil {
			return errors.Join(fmt.Errorf("echo worker: %w", closeError(b)), err)
		}
	default:
	}
	return err
}
