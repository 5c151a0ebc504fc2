// Command cortex-worker-python runs the Python source of job.code.python
// jobs in a bubblewrap sandbox: no network, a read-only Python runtime and
// nothing else of the host's files, a private /tmp, resource limits, a
// seccomp filter, the job's timeout as its wall time (docs/code-python.md).
// It refuses to start when the sandbox does not work on the machine, unless
// --unsafe-no-sandbox.
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
	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/internal/sandbox/pyworker"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tracing"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cortex-worker-python:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	var (
		configPath, natsURL, logLevel, id, metricsAddr string
		python, bwrap                                  string
		capacity, processes, openFiles                 int
		uid, gid                                       int
		memoryMiB, fileMiB, tmpMiB                     int64
		outputKiB                                      int
		cpu, wall                                      time.Duration
		heartbeat, lease, grace                        time.Duration
		direct, noSeccomp, unsafe                      bool
	)
	cmd := &cobra.Command{
		Use:           "cortex-worker-python",
		Short:         "Run job.code.python jobs: Python source in a sandbox",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if capacity < 1 {
				return fmt.Errorf("--capacity %d: must be at least 1", capacity)
			}
			cfg, err := system.LoadConfig(configPath, natsURL, logLevel)
			if err != nil {
				return err
			}
			natsOpts, err := system.NatsOptions(cmd.Flags(), cfg)
			if err != nil {
				return err
			}
			if id == "" {
				id = cfg.NATS.User // a server that ties the user to its subjects wants them named so
			}
			log := system.Logger(cfg, os.Stderr)
			sb, err := sandbox.New(sandbox.Config{
				Bwrap: bwrap, Python: python, UID: uid, GID: gid, NoSeccomp: noSeccomp, Unsafe: unsafe, Logger: log,
				Limits: sandbox.Limits{
					CPUTime: cpu, Memory: memoryMiB << 20, Processes: processes, FileSize: fileMiB << 20,
					OpenFiles: openFiles, TmpSize: tmpMiB << 20, Output: outputKiB << 10, Wall: wall,
				},
			})
			if err != nil {
				return fmt.Errorf("%w (--unsafe-no-sandbox runs without one: see docs/code-python.md)", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			if unsafe {
				for range 3 {
					log.Error("UNSAFE: --unsafe-no-sandbox: job code runs WITHOUT a sandbox, with this process's access to files and network", "component", "worker", "kind", "code-python")
				}
			} else if err := sb.Probe(ctx); err != nil {
				return fmt.Errorf("%w; refusing to run code without it (docs/code-python.md)", err)
			}
			l := sb.Limits()
			log.Info("sandbox ready", "component", "worker", "kind", "code-python", "nats_url", cfg.NatsURL, "python", python, "seccomp", sb.Seccomp(),
				"cpu", l.CPUTime, "memory_mib", l.Memory>>20, "processes", l.Processes, "tmp_mib", l.TmpSize>>20,
				"output_kib", l.Output>>10, "credentials", cfg.NATS)
			stopTracing, err := tracing.Setup(ctx, "cortex-worker-python", log) // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }()
			reg, stopMetrics, err := metrics.ServeFlag(metricsAddr, log)
			if err != nil {
				return err
			}
			defer stopMetrics()
			return pyworker.Run(ctx, pyworker.Options{
				NatsURL: cfg.NatsURL, NatsOptions: natsOpts, ID: id, Capacity: capacity, Direct: direct,
				NamedSubjects:     !cfg.NATS.IsZero() || cfg.Worker.NamedSubjects,
				HeartbeatInterval: heartbeat, LeaseInterval: lease, ShutdownGrace: grace,
				Sandbox: sb, Logger: log, Metrics: reg,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "config file (default config/local.yaml if present)")
	f.StringVar(&natsURL, "nats-url", "", "NATS server URL (overrides NATS_URL and the config file)")
	f.StringVar(&logLevel, "log-level", "", "debug, info, warn or error (overrides CORTEX_LOG_LEVEL and the config file)")
	f.StringVar(&id, "id", "", "worker id (default: the NATS user if any, else worker-code-python-<host>-<random>)")
	f.IntVar(&capacity, "capacity", 2, "programs run at once")
	f.BoolVar(&direct, "direct", true, "also take jobs on this worker's own subject, sys.worker.<id>.job")
	f.StringVar(&python, "python", "/usr/bin/python3", "the interpreter run in the sandbox; its installation is mounted read-only (keep it outside home directories)")
	f.StringVar(&bwrap, "bwrap", "", "the bubblewrap binary (default: bwrap on $PATH)")
	f.DurationVar(&cpu, "cpu-time", 30*time.Second, "CPU time per process (RLIMIT_CPU)")
	f.Int64Var(&memoryMiB, "memory", 512, "address space per process, MiB (RLIMIT_AS)")
	f.IntVar(&processes, "processes", 32, "processes and threads at once (RLIMIT_NPROC, in the sandbox's user namespace)")
	f.Int64Var(&fileMiB, "file-size", 16, "largest file written, MiB (RLIMIT_FSIZE)")
	f.IntVar(&openFiles, "open-files", 256, "open files per process (RLIMIT_NOFILE)")
	f.Int64Var(&tmpMiB, "tmp-size", 64, "size of the private /tmp, MiB")
	f.IntVar(&outputKiB, "output", 64, "stdout and stderr kept, KiB each; the rest is dropped and the result says truncated")
	f.DurationVar(&wall, "max-wall", 5*time.Minute, "wall time of a run whose job has no timeout (the job's timeout bounds it otherwise)")
	f.IntVar(&uid, "sandbox-uid", 65534, "when run as root: the host user the sandbox runs as (not root: the kernel applies no process limit to root)")
	f.IntVar(&gid, "sandbox-gid", 65534, "when run as root: the host group the sandbox runs as")
	f.BoolVar(&noSeccomp, "no-seccomp", false, "leave out the seccomp filter")
	f.BoolVar(&unsafe, "unsafe-no-sandbox", false, "run job code WITHOUT a sandbox (limits only): for machines where bubblewrap cannot run, knowingly")
	f.DurationVar(&heartbeat, "heartbeat-interval", 5*time.Second, "time between heartbeats while idle")
	f.DurationVar(&lease, "lease-interval", 500*time.Millisecond, "time between heartbeats while holding jobs")
	f.DurationVar(&grace, "shutdown-grace", 10*time.Second, "how long running programs may finish after SIGINT/SIGTERM; the rest are handed back")
	f.StringVar(&metricsAddr, "metrics-addr", "", metrics.FlagUsage)
	config.RegisterCredentialFlags(f)
	return cmd
}
