// Package workertest runs CortexOS inside a test: an embedded NATS server
// with JetStream in a temporary directory, and a scheduler with the
// shipped safety policy, as `cortex dev` runs them. Test a worker against it
// the way this repository tests its own:
//
//	func TestMyWorker(t *testing.T) {
//		env := workertest.Start(t)
//		if _, err := env.RunWorker(worker.Config{Kind: "resize", Handler: myHandler}); err != nil {
//			t.Fatal(err)
//		}
//		job, err := env.Client().Submit(ctx, &pb.JobRequest{Topic: "job.resize"})
//		...
//		job, err = env.Client().Wait(ctx, job.GetJobId())
//	}
//
// Everything stops when the test ends (Start) or at Close (New).
package workertest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/embeddednats"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

// waitFor bounds each wait of an Env: the scheduler starting, a worker
// being seen, everything stopping. Reaching it is a failure, not a timing.
const waitFor = 30 * time.Second

// Option changes what Start and New run.
type Option func(*options)

type options struct {
	logger      *slog.Logger
	policy      string
	maxAttempts int
	jobTimeout  time.Duration
	dir         string
}

// WithLogger sends the scheduler's log, and the log of workers started by
// RunWorker without a Logger of their own, to l. Default: discarded.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithPolicy runs the scheduler with the safety policy in file
// (docs/policy.md). Default: the shipped policy, which denies jobs on
// sys.destroy and allows the rest.
func WithPolicy(file string) Option { return func(o *options) { o.policy = file } }

// WithMaxAttempts sets the attempts of jobs that set none. Default: the
// scheduler's (3).
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = n } }

// WithJobTimeout sets the per-attempt timeout of jobs that set none.
// Default: the scheduler's.
func WithJobTimeout(d time.Duration) Option { return func(o *options) { o.jobTimeout = d } }

// Env is a running CortexOS: NATS and a scheduler, with a connection and a
// client on it.
type Env struct {
	srv    *server.Server
	dir    string // removed at Close, when New made it
	url    string
	nc     *nats.Conn
	client *client.Client
	logger *slog.Logger

	stopScheduler context.CancelFunc
	schedulerDone chan error

	mu      sync.Mutex
	workers []*runningWorker
	closed  bool
}

type runningWorker struct {
	w    *worker.Worker
	nc   *nats.Conn
	stop context.CancelFunc
	done chan error
}

// Start runs CortexOS for the test, with JetStream in t.TempDir(), and
// stops it when the test ends. It fails the test if CortexOS does not
// start.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	env, err := New(append(slices.Clip(opts), func(o *options) { o.dir = t.TempDir() })...)
	if err != nil {
		t.Fatalf("workertest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Close(); err != nil {
			t.Errorf("workertest: %v", err)
		}
	})
	return env
}

// New runs CortexOS, with JetStream in a new temporary directory, until
// Close: for an example or a TestMain, where there is no test to end.
func New(opts ...Option) (_ *Env, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.maxAttempts < 0 || o.jobTimeout < 0 {
		return nil, errors.New("max attempts and job timeout must not be negative")
	}
	env := &Env{logger: o.logger}
	defer func() {
		if err != nil {
			_ = env.Close()
		}
	}()
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "cortex-workertest-"); err != nil {
			return nil, err
		}
		env.dir = o.dir
	}
	if env.srv, err = embeddednats.Start(embeddednats.Config{Port: -1, JetStream: true, StoreDir: o.dir}); err != nil {
		return nil, err
	}
	env.url = env.srv.ClientURL()

	ctx, stop := context.WithCancel(context.Background())
	env.stopScheduler, env.schedulerDone = stop, make(chan error, 1)
	started := make(chan struct{})
	go func() {
		env.schedulerDone <- system.RunScheduler(ctx, system.SchedulerOptions{
			NatsURL:  env.url,
			ID:       "workertest-scheduler",
			Logger:   o.logger,
			Settings: config.Scheduler{MaxAttempts: o.maxAttempts, Timeout: o.jobTimeout},
			Safety:   config.Safety{Policy: o.policy},
			Started:  func() { close(started) },
		})
		close(env.schedulerDone)
	}()
	select {
	case <-started:
	case err := <-env.schedulerDone:
		return nil, fmt.Errorf("scheduler: %w", err)
	case <-time.After(waitFor):
		return nil, fmt.Errorf("the scheduler did not start within %s", waitFor)
	}

	if env.nc, err = nats.Connect(env.url, nats.Name("workertest")); err != nil {
		return nil, err
	}
	if env.client, err = client.New(env.nc, client.Options{Logger: o.logger}); err != nil {
		return nil, err
	}
	return env, nil
}

// URL is the NATS server's client URL, nats://127.0.0.1:<port>.
func (e *Env) URL() string { return e.url }

// Conn is a connection to the server, closed at the end.
func (e *Env) Conn() *nats.Conn { return e.nc }

// Client is a client on Conn.
func (e *Env) Client() *client.Client { return e.client }

// RunWorker runs a worker with cfg on a connection of its own until the end
// (or until its Run returns), and returns once the scheduler knows it: a
// job submitted from then on can be placed on it. A cfg without a Logger
// logs where the Env does.
func (e *Env) RunWorker(cfg worker.Config) (*worker.Worker, error) {
	if cfg.Logger == nil {
		cfg.Logger = e.logger
	}
	nc, err := nats.Connect(e.url, nats.Name("workertest-worker"))
	if err != nil {
		return nil, err
	}
	w, err := worker.New(nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &runningWorker{w: w, nc: nc, stop: stop, done: make(chan error, 1)}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		stop()
		nc.Close()
		return nil, errors.New("workertest: the Env is closed")
	}
	e.workers = append(e.workers, r)
	e.mu.Unlock()
	go func() {
		r.done <- w.Run(ctx)
		close(r.done)
	}()

	deadline := time.Now().Add(waitFor)
	for {
		select {
		case err := <-r.done:
			return nil, fmt.Errorf("worker %s: %w", w.ID(), err)
		default:
		}
		reqCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		ws, err := e.client.Workers(reqCtx)
		cancel()
		if err == nil && slices.ContainsFunc(ws, func(i *pb.WorkerInfo) bool { return i.GetHeartbeat().GetWorkerId() == w.ID() }) {
			return w, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the scheduler did not see worker %s within %s (last error: %v)", w.ID(), waitFor, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close stops the workers RunWorker started (their in-flight jobs finish
// within their shutdown grace), the scheduler and NATS, and removes what
// New made. It returns what went wrong stopping them.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	workers := e.workers
	e.mu.Unlock()

	var errs []error
	for _, r := range workers {
		r.stop()
	}
	for _, r := range workers {
		select {
		case err := <-r.done:
			if err != nil {
				errs = append(errs, fmt.Errorf("worker %s: %w", r.w.ID(), err))
			}
		case <-time.After(waitFor):
			errs = append(errs, fmt.Errorf("worker %s did not stop within %s", r.w.ID(), waitFor))
		}
		r.nc.Close()
	}
	if e.stopScheduler != nil {
		e.stopScheduler()
		select {
		case err := <-e.schedulerDone:
			if err != nil {
				errs = append(errs, fmt.Errorf("scheduler: %w", err))
			}
		case <-time.After(waitFor):
			errs = append(errs, fmt.Errorf("the scheduler did not stop within %s", waitFor))
		}
	}
	if e.nc != nil {
		e.nc.Close()
	}
	if e.srv != nil {
		e.srv.Shutdown()
		e.srv.WaitForShutdown()
	}
	if e.dir != "" {
		if err := os.RemoveAll(e.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
