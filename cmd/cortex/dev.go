package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/system"
)

func newDevCommand() *cobra.Command {
	var (
		host, dataDir, logLevel string
		port, httpPort, workers int
		syncAlways              bool
	)
	work := echo.DefaultWorkTime
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run NATS (embedded, with JetStream), the scheduler and an echo worker in one process",
		Long: `dev starts an embedded NATS server with JetStream, a scheduler and echo
workers, each on its own connection, and logs every job's way through them.
Ctrl-C stops the workers (in-flight jobs finish), the scheduler, then NATS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level, err := config.ParseLevel(logLevel)
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, level)
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			srv, err := embeddednats.Start(embeddednats.Config{
				Host: host, Port: port, HTTPPort: httpPort,
				JetStream: true, StoreDir: dataDir, SyncAlways: syncAlways,
			})
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
			fmt.Fprintf(out, "  send a job:  ./bin/cortex submit --nats-url %s --topic job.echo --wait\n", url)
			fmt.Fprintf(out, "          or:  NATS_URL=%s go run ./tools/scripts/send_echo_job.go\n", url)
			fmt.Fprintln(out, "  Ctrl-C stops everything.")

			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runParts(ctx, url, log, workers, work)
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "127.0.0.1", "address NATS listens on")
	f.IntVar(&port, "port", 4222, "NATS client port (-1 picks a free one)")
	f.IntVar(&httpPort, "http-port", 8222, "NATS monitoring port (0 disables it, -1 picks a free one)")
	f.StringVar(&dataDir, "data-dir", ".cortex/dev", "JetStream data directory")
	f.BoolVar(&syncAlways, "sync-always", false, "fsync every JetStream write (see docs/guarantees.md)")
	f.IntVar(&workers, "workers", 1, "echo workers to run")
	f.Var(&work, "work-time", `simulated work per echo job: "0", "250ms" or "100ms-500ms"`)
	f.StringVar(&logLevel, "log-level", "debug", "debug shows every job; info shows none")
	return cmd
}

// runParts runs the scheduler and the workers until ctx ends or one of them
// fails. The workers stop first, so the results of their in-flight jobs still
// reach the scheduler; then the scheduler stops.
func runParts(ctx context.Context, url string, log *slog.Logger, workers int, work echo.WorkTime) error {
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
	var pool sync.WaitGroup
	for range workers {
		pool.Go(func() {
			if err := system.RunEchoWorker(workCtx, system.EchoWorkerOptions{NatsURL: url, WorkTime: work, Logger: log}); err != nil {
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
