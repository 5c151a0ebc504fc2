// Command cortex-worker-echo runs the example echo worker: it takes jobs on
// job.echo in the workers-echo queue group, waits its simulated work time,
// and publishes each result on sys.job.result (with NATS credentials, on
// sys.job.result.<id>: docs/security.md).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tracing"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cortex-worker-echo:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath, natsURL, logLevel, id, metricsAddr string
		concurrency, capacity                          int
		heartbeat, lease, grace                        time.Duration
		capabilities                                   echo.Capabilities
		labels                                         echo.Labels
		pool                                           string
		direct, inline                                 bool
	)
	work := echo.DefaultWorkTime
	cmd := &cobra.Command{
		Use:           "cortex-worker-echo",
		Short:         "Run the CortexOS echo worker",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := placementFlags(cmd, &concurrency, capacity, &capabilities, pool); err != nil {
				return err
			}
			cfg, err := system.LoadConfig(configPath, natsURL, logLevel)
			if err != nil {
				return err
			}
			// Credentials: the worker's NATS user is its identity.
			natsOpts, err := system.NatsOptions(cmd.Flags(), cfg)
			if err != nil {
				return err
			}
			if !cfg.NATS.IsZero() {
				cfg.Worker.NamedSubjects = true // heartbeats and results on subjects that name it
			}
			if id == "" {
				id = cfg.NATS.User // a server that ties the user to its subjects wants them named so
			}

			log := system.Logger(cfg, os.Stderr)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			log.Info("CortexOS echo worker starting", "component", "worker", "kind", "echo", "nats_url", cfg.NatsURL, "work_time", work.String(),
				"credentials", cfg.NATS, "named_subjects", cfg.Worker.NamedSubjects)
			settings := cfg.Worker
			if f := cmd.Flags(); f.Changed("heartbeat-interval") || settings.HeartbeatInterval == 0 {
				settings.HeartbeatInterval = heartbeat
			}
			if f := cmd.Flags(); f.Changed("lease-interval") || settings.LeaseInterval == 0 {
				settings.LeaseInterval = lease
			}
			if f := cmd.Flags(); f.Changed("shutdown-grace") || settings.ShutdownGrace == 0 {
				settings.ShutdownGrace = grace
			}
			stopTracing, err := tracing.Setup(ctx, "cortex-worker-echo", log) // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }()
			reg, stopMetrics, err := metrics.ServeFlag(metricsAddr, log)
			if err != nil {
				return err
			}
			defer stopMetrics()
			return system.RunEchoWorker(ctx, system.EchoWorkerOptions{
				NatsURL: cfg.NatsURL, ID: id, WorkTime: work, Capacity: concurrency,
				Capabilities: capabilities, Labels: labels, Pool: pool, Direct: direct, Inline: inline,
				Settings: settings, Logger: log, NatsOptions: natsOpts, Metrics: reg,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides CORTEX_LOG_LEVEL and the config file)")
	f.StringVar(&id, "id", "", "worker id (default: the NATS user if any, else worker-echo-<host>-<random>, unique per process)")
	f.Var(&work, "work-time", `simulated work per job: "0", "250ms" or "100ms-500ms"`)
	f.IntVar(&concurrency, "concurrency", 64, "jobs run at once (the same setting as --capacity)")
	f.IntVar(&capacity, "capacity", 64, "jobs run at once, reported in heartbeats: the scheduler places no more here")
	f.Var(&capabilities, "capabilities", `capabilities reported, comma separated ("gpu,python"; echo is always one)`)
	f.Var(&labels, "labels", `labels reported, comma separated key=value ("gpu=h100,region=eu")`)
	f.StringVar(&pool, "pool", "", "the placement pool this worker is reserved for (default: any)")
	f.BoolVar(&inline, "inline", false, "run each job on the delivery goroutine instead of a runner: no hand-off per job, but one job at a time in arrival order (for --work-time 0; a job that takes time holds back the ones behind it)")
	f.BoolVar(&direct, "direct", true, "also take jobs on this worker's own subject, sys.worker.<id>.job, so that placement reaches the worker it chose (--direct=false: only the topic's queue group)")
	f.DurationVar(&heartbeat, "heartbeat-interval", 5*time.Second, "time between heartbeats while idle")
	f.DurationVar(&lease, "lease-interval", 500*time.Millisecond, "time between heartbeats while holding jobs (they renew the jobs' leases)")
	f.StringVar(&metricsAddr, "metrics-addr", "", metrics.FlagUsage)
	f.DurationVar(&grace, "shutdown-grace", 10*time.Second, "how long in-flight jobs may finish after SIGINT/SIGTERM; the rest are handed back")

	// NATS credentials (docs/security.md). With any, the worker names itself
	// in its subjects (sys.heartbeat.echo.<id>, sys.job.result.<id>).
	config.RegisterCredentialFlags(f)
	return cmd
}

// placementFlags checks what the worker will report for placement and
// settles --capacity and --concurrency (one setting, two names) into
// concurrency.
func placementFlags(cmd *cobra.Command, concurrency *int, capacity int, capabilities *echo.Capabilities, pool string) error {
	f := cmd.Flags()
	if f.Changed("capacity") {
		if capacity < 1 {
			return fmt.Errorf("--capacity %d: must be at least 1", capacity)
		}
		if f.Changed("concurrency") && *concurrency != capacity {
			return fmt.Errorf("--capacity %d and --concurrency %d differ: they are one setting, give one", capacity, *concurrency)
		}
		*concurrency = capacity
	}
	if *concurrency < 1 {
		return fmt.Errorf("--concurrency %d: must be at least 1", *concurrency)
	}
	if err := echo.ValidatePool(pool); err != nil {
		return fmt.Errorf("--pool: %w", err)
	}
	if len(*capabilities) > 0 && !slices.Contains(*capabilities, echo.Kind) {
		// Its kind stays a capability: jobs that require "echo" still fit.
		*capabilities = append(echo.Capabilities{echo.Kind}, *capabilities...)
	}
	return nil
}
