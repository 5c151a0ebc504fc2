// Command cortex-scheduler runs the CortexOS scheduler: it takes jobs on
// sys.job.submit, checks them against the safety policy, dispatches them on
// job.<topic> and records results and heartbeats.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/internal/tracing"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cortex-scheduler:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var configPath, natsURL, logLevel, id, store, policy, placementFile, unavailable, metricsAddr string
	var requireIdentity, requireClientIdentity, remote bool
	var safetyTimeout time.Duration
	cmd := &cobra.Command{
		Use:           "cortex-scheduler",
		Short:         "Run the CortexOS scheduler",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := system.LoadConfig(configPath, natsURL, logLevel)
			if err != nil {
				return err
			}
			natsOpts, err := system.NatsOptions(cmd.Flags(), cfg)
			if err != nil {
				return err
			}
			log := system.Logger(cfg, os.Stderr)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			settings := cfg.Scheduler
			if store != "" {
				settings.Store = store
			}
			settings.RequireWorkerIdentity = settings.RequireWorkerIdentity || requireIdentity
			safetyCfg := cfg.Safety
			if policy != "" {
				safetyCfg.Policy = policy
			}
			safetyCfg.Remote = safetyCfg.Remote || remote
			if safetyTimeout > 0 {
				safetyCfg.Timeout = safetyTimeout
			}
			if unavailable != "" {
				safetyCfg.Unavailable = unavailable
			}
			placementCfg := cfg.Placement
			if placementFile != "" {
				if placementCfg, err = system.LoadPlacement(placementFile); err != nil {
					return err
				}
			}
			var clients tenancy.Config
			if cfg.Clients != nil {
				clients = *cfg.Clients
			}
			clients.RequireIdentity = clients.RequireIdentity || requireClientIdentity
			log.Info("CortexOS scheduler starting", "component", "scheduler", "nats_url", cfg.NatsURL, "credentials", cfg.NATS,
				"require_worker_identity", settings.RequireWorkerIdentity,
				"require_client_identity", clients.RequireIdentity, "client_identities", len(clients.Identities))
			stopTracing, err := tracing.Setup(ctx, "cortex-scheduler", log) // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }()
			reg, stopMetrics, err := metrics.ServeFlag(metricsAddr, log)
			if err != nil {
				return err
			}
			defer stopMetrics()
			return system.RunScheduler(ctx, system.SchedulerOptions{NatsURL: cfg.NatsURL, ID: id, Logger: log, Settings: settings,
				NatsOptions: natsOpts, Safety: safetyCfg, Placement: placementCfg, Clients: clients, Blobs: cfg.Blobs, Metrics: reg})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides CORTEX_LOG_LEVEL and the config file)")
	f.StringVar(&id, "id", "", "scheduler replica id (default: unique per process)")
	f.StringVar(&store, "store", "", "job store: auto (jetstream when the server has it), memory or jetstream (overrides the config file)")
	f.BoolVar(&requireIdentity, "require-worker-identity", false, "refuse heartbeats and results on subjects that name no worker (scheduler.require_worker_identity; docs/security.md)")
	f.BoolVar(&requireClientIdentity, "require-client-identity", false, "refuse requests that name no client identity bound in the clients section (clients.require_identity; docs/security.md)")
	f.StringVar(&policy, "policy", "", "safety policy file, reloaded when it changes (safety.policy; default: the shipped policy, config/policy.yaml's rules)")
	f.BoolVar(&remote, "safety-remote", false, "ask a cortex safety service over NATS instead of deciding in this process (safety.remote)")
	f.DurationVar(&safetyTimeout, "safety-timeout", 0, "how long a remote safety check may take (safety.timeout; default 500ms)")
	f.StringVar(&unavailable, "safety-unavailable", "", "what a job becomes when the remote kernel does not answer: pending (default) or deny (safety.unavailable)")
	f.StringVar(&placementFile, "placement", "", "placement config file: pools, tenants, strategies (the config's placement section; docs/scheduling.md)")
	f.StringVar(&metricsAddr, "metrics-addr", "", metrics.FlagUsage)
	config.RegisterCredentialFlags(f)
	return cmd
}
