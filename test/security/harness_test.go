// Package security tests the locked-down bus: the whole system under the
// shipped nats-server configuration, config/nats-auth.conf, loaded as is into
// an in-process server, and what each role is refused.
package security

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cortex-os/core/internal/logging"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/internal/tenancy"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// waitFor bounds every wait. Waits poll; nothing sleeps to synchronise and
// nothing asserts how long something took.
const waitFor = 15 * time.Second

// The users of config/nats-auth.conf and the variables their passwords come from.
var passwordVars = map[string]string{
	"client":    "CORTEX_CLIENT_PASSWORD",
	"tenant-a":  "CORTEX_TENANT_A_PASSWORD",
	"tenant-b":  "CORTEX_TENANT_B_PASSWORD",
	"scheduler": "CORTEX_SCHEDULER_PASSWORD",
	"safety":    "CORTEX_SAFETY_PASSWORD",
	"auditor":   "CORTEX_AUDITOR_PASSWORD",
	"echo-1":    "CORTEX_ECHO_1_PASSWORD",
	"echo-2":    "CORTEX_ECHO_2_PASSWORD",
}

// passwords are this run's, set in the environment before any test runs (so
// that the tests can be parallel) for the server to read.
var passwords = map[string]string{}

func TestMain(m *testing.M) {
	for user, name := range passwordVars {
		b := make([]byte, 12)
		if _, err := rand.Read(b); err != nil {
			panic(err)
		}
		passwords[user] = hex.EncodeToString(b)
		if err := os.Setenv(name, passwords[user]); err != nil {
			panic(err)
		}
	}
	os.Exit(m.Run())
}

// shippedConfig is the path of config/nats-auth.conf.
func shippedConfig(t testing.TB) string {
	return filepath.Join(systest.RepoRoot(t), "config", "nats-auth.conf")
}

// startServer runs a server configured by config/nats-auth.conf, as shipped.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	return natstest.RunServerWith(t, embeddednats.Config{ConfigFile: shippedConfig(t)})
}

// creds are the credentials of a user of the shipped configuration.
func creds(user string) bus.Credentials {
	return bus.Credentials{User: user, Password: passwords[user]}
}

func natsOptions(t testing.TB, c bus.Credentials) []nats.Option {
	t.Helper()
	opts, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// logBuffer collects the log lines of every part of a test's system.
type logBuffer struct{ logging.Buffer }

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// captureLogs returns a log buffer that, when the test ends, fails it if
// any part was refused anything by the server, and shows the logs of a
// failed test.
func captureLogs(t testing.TB) *logBuffer {
	t.Helper()
	logs := &logBuffer{}
	t.Cleanup(func() {
		logs.noViolations(t)
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	return logs
}

// noViolations fails the test if any part was refused anything by the server.
func (l *logBuffer) noViolations(t testing.TB) {
	t.Helper()
	for _, line := range strings.Split(l.String(), "\n") {
		lower := strings.ToLower(line)
		if strings.Contains(lower, "permissions violation") || strings.Contains(lower, "authorization") {
			t.Errorf("the server refused a part of the system: %s", line)
		}
	}
}

// connectAs opens a bus as user, with its credentials.
func connectAs(t testing.TB, url, user string, log *slog.Logger) *bus.NatsBus {
	t.Helper()
	return systest.ConnectWith(t, bus.Config{URL: url, Name: user, Logger: log, Options: natsOptions(t, creds(user)), DrainTimeout: 5 * time.Second})
}

// newClient is a client connected as user, naming itself by its user, as
// the cortex commands do.
func newClient(t testing.TB, url, user string, log *slog.Logger) *client.Client {
	t.Helper()
	// A tenant's client follows its tenant's job events only
	// (shippedClients): it says which tenant it is.
	return systest.Client(t, connectAs(t, url, user, log), client.Options{SenderID: "security-test", Identity: user, Tenant: shippedClients.Identities[user].Tenant})
}

// list lists up to limit jobs in state (UNSPECIFIED: any), newest first,
// reading as many pages as it takes.
func list(ctx context.Context, c *client.Client, state pb.JobState, limit int) ([]*pb.JobInfo, error) {
	l, err := c.ListAll(ctx, client.ListOptions{State: state, Limit: limit})
	if err != nil {
		return nil, err
	}
	return l.Jobs, nil
}

// deadLetters lists up to limit dead letters, oldest first.
func deadLetters(ctx context.Context, c *client.Client, limit int) ([]*pb.JobInfo, error) {
	l, err := c.DeadLetters(ctx, client.ListOptions{Limit: limit})
	if err != nil {
		return nil, err
	}
	return l.Jobs, nil
}

// submitted is what a Submit answered, with a refusal's job (a DENIED one)
// as the job: job, err := submitted(c.Submit(ctx, req)).
func submitted(job *pb.JobInfo, err error) (*pb.JobInfo, error) {
	var re *client.RefusedError
	if errors.As(err, &re) {
		return re.Job, err
	}
	return job, err
}

// runScheduler runs the scheduler as the binary does (system.RunScheduler),
// as user scheduler, with worker identity required and the given store and
// safety settings, until the test ends.
func runScheduler(t testing.TB, url, store string, sc config.Safety, log *slog.Logger) {
	t.Helper()
	runSchedulerWith(t, url, store, sc, nil, log)
}

// runSchedulerWith is runScheduler with a placement section.
func runSchedulerWith(t testing.TB, url, store string, sc config.Safety, pc *placement.Config, log *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- system.RunScheduler(ctx, system.SchedulerOptions{
			NatsURL: url, ID: "sched-" + strings.ReplaceAll(t.Name(), "/", "-"), Logger: log, NatsOptions: natsOptions(t, creds("scheduler")),
			Settings: config.Scheduler{Store: store, RequireWorkerIdentity: true, MaxAttempts: 1},
			Safety:   sc, Placement: pc, Clients: shippedClients,
			Started: func() { close(started) },
		})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("scheduler: %v", err)
	case <-time.After(waitFor):
		t.Fatal("the scheduler did not start")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})
}

// shippedClients is the scheduler's clients section for the client users
// of config/nats-auth.conf, as docs/security.md gives it: identities
// required, client an administrator, tenant-a and tenant-b bound to
// tenants a and b.
var shippedClients = tenancy.Config{RequireIdentity: true, Identities: map[string]tenancy.Binding{
	"client": {Admin: true}, "tenant-a": {Tenant: "a"}, "tenant-b": {Tenant: "b"},
}}

// runWorker runs an echo worker as the binary does with credentials: user is
// its id and it names itself in its subjects. It returns a function that
// stops it.
func runWorker(t testing.TB, url, user string, work echo.WorkTime, log *slog.Logger) (stop func()) {
	t.Helper()
	return runWorkerWith(t, url, user, work, false, log)
}

// runWorkerWith is runWorker; a direct worker also takes jobs on its own
// subject, sys.worker.<id>.job.
func runWorkerWith(t testing.TB, url, user string, work echo.WorkTime, direct bool, log *slog.Logger) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- system.RunEchoWorker(ctx, system.EchoWorkerOptions{
			NatsURL: url, ID: user, WorkTime: work, Logger: log, NatsOptions: natsOptions(t, creds(user)), Direct: direct,
			Settings: config.Worker{NamedSubjects: true, HeartbeatInterval: 100 * time.Millisecond, ShutdownGrace: time.Second},
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker %s: %v", user, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// engine is a scheduler engine connected as user scheduler, whose counters
// a test reads.
func engine(t testing.TB, url string, log *slog.Logger) *scheduler.Engine {
	t.Helper()
	b := connectAs(t, url, "scheduler", log)
	ctx := context.Background()
	store, dead, _, err := system.OpenStore(ctx, b, config.StoreJetStream)
	if err != nil {
		t.Fatal(err)
	}
	clients, err := tenancy.New(shippedClients)
	if err != nil {
		t.Fatal(err)
	}
	e, err := scheduler.New(scheduler.Config{
		Bus: b, Safety: scheduler.NewSafetyStub(), Registry: scheduler.NewMemoryRegistry(),
		Strategy: scheduler.NewNaiveStrategy(), Store: store, DeadLetters: dead, Logger: log,
		ID: "sched-" + strings.ReplaceAll(t.Name(), "/", "-"), RequireWorkerIdentity: true, Clients: clients,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(ctx) })
	return e
}

// rawConn is a plain nats.go connection as user ("" for none) whose
// asynchronous errors (the server's permission violations) arrive on errs.
type rawConn struct {
	*nats.Conn
	errs chan error
}

func dialRaw(t testing.TB, url, user string) (*rawConn, error) {
	t.Helper()
	rc := &rawConn{errs: make(chan error, 64)}
	opts := []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case rc.errs <- err:
		default:
		}
	})}
	if user != "" {
		opts = append(opts, natsOptions(t, creds(user))...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(nc.Close)
	rc.Conn = nc
	return rc, nil
}

func raw(t testing.TB, url, user string) *rawConn {
	t.Helper()
	rc, err := dialRaw(t, url, user)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	return rc
}

// refused waits for the server's permission violation naming subject.
func (rc *rawConn) refused(t testing.TB, what, subject string) {
	t.Helper()
	deadline := time.After(waitFor)
	for {
		select {
		case err := <-rc.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), fmt.Sprintf("%q", subject)) &&
				strings.Contains(strings.ToLower(err.Error()), what) {
				return
			}
		case <-deadline:
			t.Fatalf("no permissions violation for %s on %s", what, subject)
		}
	}
}
