package main

// cortex safety: the safety kernel as its own service on the bus.

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/system"
)

func newSafetyCommand() *cobra.Command {
	var (
		configPath, natsURL, logLevel, metricsAddr string
		opts                                       safety.ServiceOptions
	)
	cmd := &cobra.Command{
		Use:   "safety",
		Short: "Serve safety checks over NATS, apart from the scheduler",
		Long: `safety runs the safety kernel as a service: it answers checks sent to
sys.safety.check (a BusPacket with a job_request, answered with a
safety_verdict) in the queue group cortex-safety, so that several of them
share the load, and publishes every decision on sys.safety.audit.

The policy is --policy FILE, read again whenever the file changes; an edit
that does not validate is logged and refused, and the running policy stays.
Without --policy the shipped default policy (config/policy.yaml) decides.
A policy that does not validate at start is an error.

Ctrl-C or SIGTERM stops it: the checks in hand are answered and the audit
records still buffered are published first.`,
		Example: `  cortex safety --policy config/policy.yaml --nats-url nats://localhost:4222`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := system.LoadConfig(configPath, natsURL, logLevel)
			if err != nil {
				return oneLine(err)
			}
			// Credentials: the config file's, the environment's, then the flags'.
			if err := config.ApplyCredentialFlags(cmd.Flags(), cfg); err != nil {
				return err
			}
			if opts.NatsOptions, err = cfg.NATS.Options(); err != nil {
				return err
			}
			opts.NatsURL = cfg.NatsURL
			opts.Logger = system.Logger(cfg, os.Stderr)
			ctx, stop := signalContext(cmd)
			defer stop()
			reg, stopMetrics, err := metrics.ServeFlag(metricsAddr, opts.Logger)
			if err != nil {
				return err
			}
			defer stopMetrics()
			if reg != nil {
				opts.Decided = metrics.NewSafetyDecisions(reg).Record
			}
			if err := safety.RunService(ctx, opts); err != nil {
				return fmt.Errorf("safety service: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides the config file)")
	f.StringVar(&opts.PolicyFile, "policy", "", "policy file, reloaded when it changes (default: the shipped default policy)")
	f.StringVar(&opts.ID, "id", "", "this service's name in audit records (default safety-<host>-<pid>)")
	f.StringVar(&opts.AuditSubject, "audit-subject", safety.SubjectAudit, "subject of the audit records")
	f.BoolVar(&opts.NoAudit, "no-audit", false, "publish no audit records")
	f.DurationVar(&opts.WatchInterval, "watch-interval", safety.DefaultWatchInterval, "how often the policy file is read for changes")
	f.DurationVar(&opts.SettleTime, "settle-time", safety.DefaultSettleTime, "how long a changed policy file must stay the same before it is loaded")
	f.StringVar(&metricsAddr, "metrics-addr", "", metrics.FlagUsage)
	config.RegisterCredentialFlags(f)
	return cmd
}
