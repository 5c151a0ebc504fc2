package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/tracing"
)

func newDevCommand() *cobra.Command {
	var (
		host, dataDir, logLevel string
		port, httpPort, workers int
		syncAlways, auth, reset bool
		codePython              bool
		policy, placementFile   string
		apiAddr, metricsAddr    string
	)
	work := echo.DefaultWorkTime
	cluster := &devClusterFlags{} // dev_cluster.go
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run NATS (embedded, with JetStream), the scheduler and an echo worker in one process",
		Long: `dev starts an embedded NATS server with JetStream, a scheduler and echo
workers, each on its own connection, and logs every job's way through them.
Ctrl-C stops the workers (in-flight jobs finish), the scheduler, then NATS.

With --auth, NATS admits only a user per role (client, scheduler, safety,
one per worker) with the permissions of config/nats-auth.conf and passwords
generated for this run; the scheduler and each worker connect as their own
user. Three clients are printed: client, the administrator, who sees every
job, and tenant-a and tenant-b, bound to tenants a and b, who each see
their own tenant's jobs only (their credentials are also written, mode
0600, to dev-credentials*.env in the data directory). Two more workers,
worker-1 and worker-2, are for worker processes started outside dev (any
job.* topic): their credentials go to dev-credentials-worker-*.env. See
docs/security.md.

It also serves the HTTP API and the dashboard on --api-addr (default
127.0.0.1:8080; port 0 picks a free one, "" none) and prints the URL. With
--auth the API asks for keys: an administrator's and one per tenant client
are printed and added (CORTEX_API_URL, CORTEX_API_KEY) to the clients'
dev-credentials*.env. Without --auth it serves loopback only. docs/api.md.
Its /metrics serves the scheduler's, the workers' and the gateway's
Prometheus series (with --auth, to the administrator's key);
--metrics-addr serves them on an address of their own too.

The data directory keeps jobs across runs (a job no worker took stays
PENDING); --reset removes it first.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config.CredentialFlagsGiven(cmd.Flags()) {
				return errors.New("dev runs its own NATS server: the --nats-* credential flags do not apply (--auth runs it with a user per role)")
			}
			if handled, err := cluster.control(cmd.OutOrStdout(), host, port); handled {
				return err
			}
			if err := checkDevAPIAddr(apiAddr, auth); err != nil {
				return err
			}
			level, err := config.ParseLevel(logLevel)
			if err != nil {
				return err
			}
			log := logging.NewDev(os.Stderr, level) // [SCHEDULER], [SAFETY], [WORKER echo] prefixes
			log = slog.New(tracing.LogHandler(log.Handler()))
			if reset {
				if err := resetDataDir(cmd.OutOrStdout(), dataDir); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			if cluster.size > 1 {
				return cluster.run(cmd, devClusterArgs{host: host, dataDir: dataDir, policy: policy, placementFile: placementFile,
					port: port, httpPort: httpPort, workers: workers, syncAlways: syncAlways, auth: auth, work: work, log: log, apiAddr: apiAddr})
			}
			ncfg := embeddednats.Config{
				Host: host, Port: port, HTTPPort: httpPort,
				JetStream: true, StoreDir: dataDir, SyncAlways: syncAlways,
			}
			var roles *embeddednats.DevAuth
			if auth {
				if roles, err = embeddednats.NewDevAuth(workers, "echo", "job."+echo.Kind); err != nil {
					return err
				}
				ncfg.Users = append(roles.Users(), roles.OutsideUsers()...)
			}
			srv, err := embeddednats.Start(ncfg)
			if err != nil {
				return err
			}
			defer func() {
				srv.Shutdown()
				srv.WaitForShutdown()
				fmt.Fprintln(cmd.OutOrStdout(), "CortexOS dev stopped.")
			}()
			url := srv.ClientURL()
			abs, _ := filepath.Abs(dataDir)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "CortexOS dev: NATS listening on %s (JetStream data in %s)\n", url, abs)
			if mon := srv.MonitorAddr(); mon != nil {
				fmt.Fprintf(out, "  monitoring:  http://%s/\n", mon)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			stopTracing, err := tracing.Setup(ctx, "cortex-dev", log) // OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
			if err != nil {
				return err
			}
			defer func() { _ = stopTracing(context.WithoutCancel(ctx)) }()
			waitCode, waitGateway := func() {}, func() {}
			defer func() { stop(); waitCode(); waitGateway() }() // the code worker and the gateway stop with ctx
			parts := system.SchedulerOptions{Safety: config.Safety{Policy: policy}}
			// One registry for the scheduler's, the workers' and the
			// gateway's series, served on the gateway's /metrics and on
			// --metrics-addr.
			var reg *prometheus.Registry
			if apiAddr != "" || metricsAddr != "" {
				reg = metrics.NewRegistry()
				parts.Metrics = reg
			}
			msrv, err := metrics.ListenIf(metricsAddr, reg, log)
			if err != nil {
				return fmt.Errorf("metrics: %w", err)
			}
			defer func() { _ = metrics.CloseIf(msrv) }()
			if placementFile != "" {
				if parts.Placement, err = system.LoadPlacement(placementFile); err != nil {
					return err
				}
			}
			// How to send a job is printed once the scheduler takes
			// submissions: one sent before would find no intake.
			ready := func() error {
				if roles == nil {
					fmt.Fprintf(out, "  send a job:  ./bin/cortex submit --nats-url %s --topic job.echo --wait\n", url)
					fmt.Fprintf(out, "          or:  NATS_URL=%s go run ./tools/scripts/send_echo_job.go\n", url)
				} else if err := printDevAuth(out, roles, url, abs); err != nil {
					return err
				}
				if apiAddr != "" {
					if waitGateway, err = startDevGateway(ctx, out, apiAddr, url, abs, log, roles, reg); err != nil {
						return err
					}
				}
				if codePython {
					waitCode = startCodePython(ctx, out, url, log, roles, parts.Metrics)
				}
				fmt.Fprintln(out, "  Ctrl-C stops everything.")
				return nil
			}
			return runParts(ctx, url, log, workers, work, roles, parts, ready)
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "127.0.0.1", "address NATS listens on")
	f.IntVar(&port, "port", 4222, "NATS client port (-1 picks a free one)")
	f.IntVar(&httpPort, "http-port", 8222, "NATS monitoring port (0 disables it, -1 picks a free one)")
	f.StringVar(&dataDir, "data-dir", ".cortex/dev", "JetStream data directory")
	f.BoolVar(&reset, "reset", false, "remove the data directory first: jobs of earlier runs are forgotten")
	f.BoolVar(&syncAlways, "sync-always", false, "fsync every JetStream write (see docs/guarantees.md)")
	f.IntVar(&workers, "workers", 1, "echo workers to run")
	f.Var(&work, "work-time", `simulated work per echo job: "0", "250ms" or "100ms-500ms"`)
	f.StringVar(&logLevel, "log-level", "debug", "debug shows every job; info shows none")
	f.StringVar(&policy, "policy", "", "safety policy file, reloaded when it changes (default: the shipped policy, config/policy.yaml's rules)")
	f.StringVar(&placementFile, "placement", "", "placement config file: pools, tenants, strategies (docs/scheduling.md; default: least-loaded placement on the workers' heartbeats)")
	f.BoolVar(&codePython, "code-python", true, "also run a job.code.python worker (Python in a sandbox) when bubblewrap works here (docs/code-python.md)")
	f.StringVar(&apiAddr, "api-addr", defaultAPIAddr, "address the HTTP API and dashboard listen on (port 0 picks a free one; \"\" runs no gateway; docs/api.md)")
	f.StringVar(&metricsAddr, "metrics-addr", "", metrics.FlagUsage)
	cluster.register(f)
	f.BoolVar(&auth, "auth", false, "admit only a user per role, with generated passwords, and print the client's (docs/security.md)")
	return cmd
}

// devCredentialsFile is where dev --auth writes the administrator client's
// credentials, in the data directory; a tenant's client's go to
// dev-credentials-<user>.env.
const devCredentialsFile = "dev-credentials.env"

// devCredentialsFileOf is the credentials file of a dev client.
func devCredentialsFileOf(u embeddednats.DevUser) string {
	if u.Tenant == "" && u.Role == embeddednats.RoleClient {
		return devCredentialsFile
	}
	return "dev-credentials-" + u.User + ".env"
}

// writeDevCredentials writes u's credentials to its file in dataDir,
// readable by its owner only, and returns the file's path.
func writeDevCredentials(u embeddednats.DevUser, url, dataDir string) (string, error) {
	env := fmt.Sprintf("export NATS_URL=%s NATS_USER=%s NATS_PASSWORD=%s\n", url, u.User, u.Password)
	path := filepath.Join(dataDir, devCredentialsFileOf(u))
	if err := os.WriteFile(path, []byte(env), 0o600); err != nil {
		return "", fmt.Errorf("writing the dev credentials: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil { // an older file keeps its mode on write
		return "", fmt.Errorf("writing the dev credentials: %w", err)
	}
	return path, nil
}

// printDevAuth prints the users of a dev --auth run and writes the
// clients' credentials to dev-credentials*.env in dataDir, readable by
// their owner only.
func printDevAuth(out io.Writer, roles *embeddednats.DevAuth, url, dataDir string) error {
	path, err := writeDevCredentials(roles.Client, url, dataDir)
	if err != nil {
		return err
	}
	for _, c := range append(append([]embeddednats.DevUser(nil), roles.Tenants...), roles.Outside...) {
		if _, err := writeDevCredentials(c, url, dataDir); err != nil {
			return err
		}
	}
	fmt.Fprintln(out, "  auth:        a user per role, generated passwords (docs/security.md)")
	fmt.Fprintf(out, "    client     --nats-user %s --nats-password %s  (administrator: every tenant's jobs)\n", roles.Client.User, roles.Client.Password)
	for _, c := range roles.Tenants {
		fmt.Fprintf(out, "    %-10s --nats-user %s --nats-password %s  (tenant %s only; %s)\n", c.User, c.User, c.Password, c.Tenant,
			filepath.Join(dataDir, devCredentialsFileOf(c)))
	}
	fmt.Fprintf(out, "    safety     --nats-user %s --nats-password %s  (for cortex safety)\n", roles.Safety.User, roles.Safety.Password)
	fmt.Fprintf(out, "    auditor    --nats-user %s --nats-password %s  (reads sys.safety.audit)\n", roles.Auditor.User, roles.Auditor.Password)
	fmt.Fprintf(out, "    scheduler  %s, workers", roles.Scheduler.User)
	for _, w := range roles.Workers {
		fmt.Fprintf(out, " %s", w.User)
	}
	fmt.Fprintln(out, ": run in this process")
	printOutsideWorkers(out, roles, dataDir)
	fmt.Fprintf(out, "  send a job:  ./bin/cortex submit --nats-url %s --nats-user %s --nats-password %s --topic job.echo --wait\n",
		url, roles.Client.User, roles.Client.Password)
	fmt.Fprintf(out, "          or:  . %s && ./bin/cortex submit --topic job.echo --wait\n", path)
	return nil
}

// printOutsideWorkers prints the outside workers' credentials and how to
// start one; printDevAuth has written their files.
func printOutsideWorkers(out io.Writer, roles *embeddednats.DevAuth, dataDir string) {
	for _, w := range roles.Outside {
		fmt.Fprintf(out, "    %-10s --nats-user %s --nats-password %s  (a worker you start, on %s; %s)\n", w.User, w.User, w.Password,
			embeddednats.OutsideTopics, filepath.Join(dataDir, devCredentialsFileOf(w)))
	}
	if len(roles.Outside) > 0 {
		fmt.Fprintf(out, "  a worker:    . %s && ./bin/cortex-worker-echo\n", filepath.Join(dataDir, devCredentialsFileOf(roles.Outside[0])))
	}
}

// resetDataDir removes dataDir and says so; a directory that is not there
// is already reset. It refuses the root, the working directory and the home
// directory, which no data directory should be.
func resetDataDir(out io.Writer, dataDir string) error {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("--reset: %w", err)
	}
	wd, _ := os.Getwd()
	home, _ := os.UserHomeDir()
	if abs == filepath.Dir(abs) || abs == wd || (home != "" && abs == home) {
		return fmt.Errorf("--reset: refusing to remove %s: give a data directory of its own with --data-dir", abs)
	}
	if _, err := os.Stat(abs); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "CortexOS: --reset: %s does not exist yet; starting empty\n", abs)
		return nil
	}
	if err := os.RemoveAll(abs); err != nil {
		return fmt.Errorf("--reset: removing %s: %w", abs, err)
	}
	fmt.Fprintf(out, "CortexOS: --reset: removed %s (the jobs of earlier runs)\n", abs)
	return nil
}

// runParts runs the scheduler and the workers until ctx ends or one of them
// fails. The workers stop first, so the results of their in-flight jobs still
// reach the scheduler; then the scheduler stops.
//
// With roles (dev --auth), the scheduler and each worker connect as their
// own user; workers name themselves in their subjects and the scheduler
// requires them to.
func runParts(ctx context.Context, url string, log *slog.Logger, workers int, work echo.WorkTime, roles *embeddednats.DevAuth, parts system.SchedulerOptions, ready func() error) error {
	var (
		schedOpts []nats.Option
		settings  config.Scheduler
	)
	workerOpts := make([]system.EchoWorkerOptions, workers)
	for i := range workerOpts {
		workerOpts[i] = system.EchoWorkerOptions{NatsURL: url, WorkTime: work, Logger: log, Direct: true, Metrics: parts.Metrics}
	}
	if roles != nil {
		var err error
		if schedOpts, err = roles.Scheduler.Credentials().Options(); err != nil {
			return err
		}
		settings.RequireWorkerIdentity = true
		parts.Clients = roles.Clients()
		for i, w := range roles.Workers {
			o := &workerOpts[i]
			if o.NatsOptions, err = w.Credentials().Options(); err != nil {
				return err
			}
			o.ID, o.Settings.NamedSubjects = w.User, true
		}
	}
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSched()
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()

	errs := make(chan error, workers+1)
	started := make(chan struct{})
	var sched sync.WaitGroup
	sched.Go(func() {
		err := system.RunScheduler(schedCtx, system.SchedulerOptions{
			NatsURL: url, Logger: log, Started: func() { close(started) },
			Settings: settings, NatsOptions: schedOpts, Safety: parts.Safety, Placement: parts.Placement, Clients: parts.Clients,
			Metrics: parts.Metrics,
		})
		if err != nil {
			errs <- fmt.Errorf("scheduler: %w", err)
			stopWork()
		}
	})
	select {
	case <-started:
	case err := <-errs:
		sched.Wait()
		return err
	}
	if ready != nil {
		if err := ready(); err != nil {
			stopSched()
			sched.Wait()
			return err
		}
	}
	var pool sync.WaitGroup
	for _, opts := range workerOpts {
		pool.Go(func() {
			if err := system.RunEchoWorker(workCtx, opts); err != nil {
				errs <- fmt.Errorf("echo worker: %w", err)
				stopWork()
			}
		})
	}
	<-workCtx.Done()
	pool.Wait()
	stopSched()
	sched.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}
