// Package system assembles the CortexOS parts into the processes the binaries
// run: the scheduler, the echo worker, and both on an embedded NATS server.
package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/scheduler"
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
	return logging.New(w, Level(cfg))
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
	// NatsOptions are extra connection options (credentials, TLS).
	NatsOptions []nats.Option
	// Started, if set, is called once the scheduler is subscribed.
	Started func()
}

// RunScheduler connects to NATS and runs a scheduler until ctx ends.
func RunScheduler(ctx context.Context, opts SchedulerOptions) error {
	b, err := bus.Connect(bus.Config{URL: opts.NatsURL, Name: "cortex-scheduler", Logger: opts.Logger, Options: opts.NatsOptions})
	if err != nil {
		return err
	}
	defer b.Close()
	engine, err := scheduler.New(scheduler.Config{
		Bus:      b,
		Safety:   scheduler.NewSafetyStub(),
		Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(),
		ID:       opts.ID,
		Logger:   opts.Logger,
	})
	if err != nil {
		return err
	}
	if err := engine.Start(ctx); err != nil {
		return err
	}
	if opts.Started != nil {
		opts.Started()
	}
	<-ctx.Done()
	return engine.Stop(context.WithoutCancel(ctx))
}

// EchoWorkerOptions configures RunEchoWorker.
type EchoWorkerOptions struct {
	NatsURL           string
	ID                string // default: unique per process
	WorkTime          echo.WorkTime
	Concurrency       int
	HeartbeatInterval time.Duration
	ShutdownGrace     time.Duration
	Logger            *slog.Logger
	NatsOptions       []nats.Option
}

// RunEchoWorker connects to NATS and runs an echo worker until ctx ends.
func RunEchoWorker(ctx context.Context, opts EchoWorkerOptions) error {
	b, err := bus.Connect(bus.Config{URL: opts.NatsURL, Name: "cortex-worker-echo", Logger: opts.Logger, Options: opts.NatsOptions})
	if err != nil {
		return err
	}
	defer b.Close()
	w, err := worker.New(worker.Config{
		Bus:               b,
		Kind:              echo.Kind,
		Handler:           worker.HandlerFunc(echo.Handler(opts.WorkTime)),
		ID:                opts.ID,
		Concurrency:       opts.Concurrency,
		HeartbeatInterval: opts.HeartbeatInterval,
		ShutdownGrace:     opts.ShutdownGrace,
		Logger:            opts.Logger,
	})
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// IgnoreCanceled maps the context errors of an orderly shutdown to nil.
func IgnoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
