// Command cortex-scheduler runs the CortexOS scheduler: it takes jobs on
// sys.job.submit, checks them against the safety policy, dispatches them on
// job.<topic> and records results and heartbeats.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/system"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cortex-scheduler:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var configPath, natsURL, logLevel, id, store string
	var requireIdentity bool
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
			log.Info("[SCHEDULER] 🧠 CortexOS scheduler starting", "nats_url", cfg.NatsURL, "credentials", cfg.NATS,
				"require_worker_identity", settings.RequireWorkerIdentity)
			return system.RunScheduler(ctx, system.SchedulerOptions{NatsURL: cfg.NatsURL, ID: id, Logger: log, Settings: settings, NatsOptions: natsOpts})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides CORTEX_LOG_LEVEL and the config file)")
	f.StringVar(&id, "id", "", "scheduler replica id (default: unique per process)")
	f.StringVar(&store, "store", "", "job store: auto (jetstream when the server has it), memory or jetstream (overrides the config file)")
	f.BoolVar(&requireIdentity, "require-worker-identity", false, "refuse heartbeats and results on subjects that name no worker (scheduler.require_worker_identity; docs/security.md)")
	config.RegisterCredentialFlags(f)
	return cmd
}
