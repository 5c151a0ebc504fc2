package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/config"
)

// newServerCommand is cortex server: the embedded NATS server with
// JetStream and nothing else, for running the parts as their own processes
// (the per-binary way) where there is no nats-server and no Docker.
func newServerCommand() *cobra.Command {
	var (
		host, dataDir           string
		port, httpPort          int
		syncAlways, auth, reset bool
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run NATS (embedded, with JetStream) alone, for the scheduler and workers as their own processes",
		Long: `server starts the NATS server cortex dev embeds, with JetStream, and nothing
else: run cortex-scheduler, workers and clients against it, each in its own
shell. Ctrl-C stops it.

With --auth, it admits only the users of cortex dev --auth (client,
tenant-a, tenant-b, scheduler, safety, auditor, echo-1, echo-2, and
worker-1 and worker-2 on any job.* topic), with passwords generated for
this run, printed and written (mode 0600) to dev-credentials-<user>.env in
the data directory (the administrator client's to dev-credentials.env).
See docs/security.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if config.CredentialFlagsGiven(cmd.Flags()) {
				return errors.New("server is the NATS server: the --nats-* credential flags do not apply (--auth runs it with a user per role)")
			}
			out := cmd.OutOrStdout()
			if reset {
				if err := resetDataDir(out, dataDir); err != nil {
					return err
				}
			}
			if err := os.MkdirAll(dataDir, 0o755); err != nil {
				return fmt.Errorf("data dir: %w", err)
			}
			ncfg := embeddednats.Config{
				Host: host, Port: port, HTTPPort: httpPort,
				JetStream: true, StoreDir: dataDir, SyncAlways: syncAlways,
			}
			var roles *embeddednats.DevAuth
			if auth {
				var err error
				if roles, err = embeddednats.NewDevAuth(2, "echo", "job."+echo.Kind); err != nil {
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
				fmt.Fprintln(out, "CortexOS server stopped.")
			}()
			url := srv.ClientURL()
			abs, _ := filepath.Abs(dataDir)
			fmt.Fprintf(out, "CortexOS server: NATS listening on %s (JetStream data in %s)\n", url, abs)
			if mon := srv.MonitorAddr(); mon != nil {
				fmt.Fprintf(out, "  monitoring:  http://%s/\n", mon)
			}
			if roles == nil {
				fmt.Fprintf(out, "  then:        NATS_URL=%s ./bin/cortex-scheduler\n", url)
				fmt.Fprintf(out, "               NATS_URL=%s ./bin/cortex-worker-echo\n", url)
				fmt.Fprintf(out, "               NATS_URL=%s ./bin/cortex submit --topic job.echo --wait\n", url)
			} else if err := printServerAuth(out, roles, url, abs); err != nil {
				return err
			}
			fmt.Fprintln(out, "  Ctrl-C stops it.")
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&host, "host", "127.0.0.1", "address NATS listens on")
	f.IntVar(&port, "port", 4222, "NATS client port (-1 picks a free one)")
	f.IntVar(&httpPort, "http-port", 8222, "NATS monitoring port (0 disables it, -1 picks a free one)")
	f.StringVar(&dataDir, "data-dir", ".cortex/server", "JetStream data directory")
	f.BoolVar(&reset, "reset", false, "remove the data directory first: jobs of earlier runs are forgotten")
	f.BoolVar(&syncAlways, "sync-always", false, "fsync every JetStream write (see docs/guarantees.md)")
	f.BoolVar(&auth, "auth", false, "admit only a user per role, with generated passwords, printed and written to dev-credentials*.env (docs/security.md)")
	return cmd
}

// printServerAuth writes every user's credentials to its file in dataDir
// and prints them, with the commands that start the parts as those users.
func printServerAuth(out io.Writer, roles *embeddednats.DevAuth, url, dataDir string) error {
	users := append([]embeddednats.DevUser{roles.Client}, roles.Tenants...)
	users = append(users, roles.Scheduler, roles.Safety, roles.Auditor)
	users = append(users, roles.Workers...)
	users = append(users, roles.Outside...)
	fmt.Fprintln(out, "  auth:        a user per role, generated passwords (docs/security.md)")
	for _, u := range users {
		path, err := writeDevCredentials(u, url, dataDir)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "    %-10s %-9s . %s\n", u.User, u.Role, path)
	}
	dir := func(u embeddednats.DevUser) string { return filepath.Join(dataDir, devCredentialsFileOf(u)) }
	fmt.Fprintf(out, "  then:        . %s && ./bin/cortex-scheduler --require-worker-identity\n", dir(roles.Scheduler))
	fmt.Fprintf(out, "               . %s && ./bin/cortex-worker-echo\n", dir(roles.Workers[0]))
	fmt.Fprintf(out, "               . %s && ./bin/cortex submit --topic job.echo --wait\n", dir(roles.Client))
	return nil
}
