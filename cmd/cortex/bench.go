package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/bench"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/system"
)

func newBenchCommand() *cobra.Command {
	var (
		o                      bench.Options
		asJSON                 bool
		cpuProfile, memProfile string
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the system against the raw-NATS floor, in one run",
		Long: `bench first measures the floor: the same message path with no control-plane
logic (client -> relay -> worker -> client over core NATS, the same connections,
packet bytes, window or rate). Then it measures the complete system: the
scheduler as cortex-scheduler runs by default (placement by the workers'
reports, least-loaded; the shipped policy through the safety kernel, every
decision audited) and direct echo workers (work time 0), each on its own
connection, with the same load generator. --strategy naive and --safety-stub
measure without placement or without the kernel.

It reports jobs/s, submit->dispatch and submit->result latency (p50, p90,
p99, p99.9, max), CPU seconds per 1,000 jobs of the whole process, and peak
RSS, for the floor and the system side by side.

By default everything runs in one process on an embedded NATS server;
--nats-url uses an existing server (with no other scheduler on it).
See docs/BENCHMARKS.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if o.Window == 0 && o.Rate == 0 {
				return errors.New("--window 0 (no cap) needs --rate")
			}
			switch {
			case o.NatsURL != "":
				// Credentials for that server: NATS_* variables, then --nats-* flags.
				cfg, err := config.Load("")
				if err != nil {
					return err
				}
				if o.NatsOptions, err = system.NatsOptions(cmd.Flags(), cfg); err != nil {
					return err
				}
			case config.CredentialFlagsGiven(cmd.Flags()):
				return errors.New("the --nats-* credentials are for a server given with --nats-url: the embedded one takes none")
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("cpu profile: %w", err)
				}
				defer func() { err = errors.Join(err, f.Close()) }()
				o.CPUProfile = f
			}
			if memProfile != "" {
				f, err := os.Create(memProfile)
				if err != nil {
					return fmt.Errorf("memory profile: %w", err)
				}
				defer func() { err = errors.Join(err, f.Close()) }()
				o.MemProfile = f
			}
			if bench.IsTerminal(os.Stderr) {
				o.Progress = os.Stderr
			}
			o.Commit = bench.Commit()

			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			rep, err := bench.Run(ctx, o)
			if err != nil {
				if errors.Is(ctx.Err(), context.Canceled) {
					return fmt.Errorf("interrupted: %w", err)
				}
				return err
			}
			if asJSON {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteTable(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.Jobs, "jobs", bench.DefaultJobs, "jobs measured, in the floor and in the system each")
	f.IntVar(&o.Window, "window", bench.DefaultWindow, "jobs in flight (1 measures latency); with --rate, a cap on them (0: none)")
	f.Float64Var(&o.Rate, "rate", 0, "jobs per second, open loop: latency is measured from each job's intended send time (0: closed loop, --window)")
	f.IntVar(&o.Workers, "workers", bench.DefaultWorkers, "echo workers (floor: worker subscribers), each on its own connection")
	f.IntVar(&o.Payload, "payload", 0, "bytes carried in each job, as a string in JobRequest.context_ptr")
	f.StringVar(&o.Store, "store", bench.StoreMemory, "job store: memory, or jetstream (a key-value bucket and durable intake, as deployed)")
	f.StringVar(&o.Strategy, "strategy", bench.StrategyLeastLoaded, "placement strategy of every topic: least-loaded (the default, as cortex-scheduler runs) or naive (the queue group picks)")
	f.StringVar(&o.Policy, "policy", "", "safety policy file for the kernel (default: the shipped policy)")
	f.BoolVar(&o.SafetyStub, "safety-stub", false, "use the allow-all stub instead of the safety kernel")
	f.IntVar(&o.Warmup, "warmup", bench.DefaultWarmup, "jobs run before each measurement and not counted")
	f.BoolVar(&o.WorkerRunners, "worker-runners", false, "run the system's echo handler on worker runner goroutines (as a blocking handler runs) instead of inline on the delivery goroutine")
	f.IntVar(&o.Rounds, "rounds", bench.DefaultRounds, "rounds the measured jobs are split into, floor and system alternating")
	f.BoolVar(&o.SyncAlways, "sync-always", false, "the embedded server fsyncs every JetStream write (sync_interval: always), as `cortex dev --sync-always`; matters with --store jetstream")
	f.StringVar(&o.NatsURL, "nats-url", "", "use this NATS server instead of an embedded one")
	f.IntVar(&o.Replicas, "replicas", 0, "with --store jetstream: replicas of the bench's bucket and streams (default 3 on a cluster of three or more servers, else 1)")
	f.DurationVar(&o.IdleTimeout, "timeout", bench.DefaultIdleTimeout, "abort when no result arrives for this long")
	f.BoolVar(&o.Metrics, "metrics", false, "run the system with its Prometheus metrics on (gathered every second), to measure their cost")
	f.BoolVar(&o.Traces, "traces", false, "run the system with its OpenTelemetry spans recorded (batched, then dropped: no collector), to measure their cost")
	f.BoolVar(&asJSON, "json", false, "print one JSON object on stdout instead of the table")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a pprof CPU profile of the system's measured run to this file")
	f.StringVar(&memProfile, "memprofile", "", "write a pprof allocation profile, taken after the system's measured run, to this file")
	return cmd
}
