package pyworker

// The one file that uses pkg/worker: the runtime that takes jobs, confirms,
// heartbeats and reports. Everything else here is the handler.

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/sandbox"
	"github.com/cortex-os/core/pkg/blob"
	"github.com/cortex-os/core/pkg/worker"
)

// Kind is the worker's kind: heartbeats on sys.heartbeat.code-python.
const Kind = "code-python"

// Options configure Run.
type Options struct {
	NatsURL     string
	NatsOptions []nats.Option
	ID          string // default: unique per process
	// Capacity is how many programs run at once. Default 2.
	Capacity int
	Direct   bool
	// NamedSubjects: heartbeats and results on subjects that name the
	// worker (docs/security.md); on whenever it has credentials.
	NamedSubjects                                   bool
	HeartbeatInterval, LeaseInterval, ShutdownGrace time.Duration
	Sandbox                                         *sandbox.Sandbox
	Logger                                          *slog.Logger
	// Started, if set, is called once the worker is connected.
	Started func(id string)
	// Metrics, if set, gets the worker's series (worker.Config.Metrics).
	Metrics prometheus.Registerer
}

// Run connects and takes job.code.python jobs until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Sandbox == nil {
		return fmt.Errorf("pyworker: Options.Sandbox is required")
	}
	if o.Capacity <= 0 {
		o.Capacity = 2
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	b, err := bus.Connect(bus.Config{URL: o.NatsURL, Name: "cortex-worker-python", Logger: o.Logger, Options: o.NatsOptions})
	if err != nil {
		return err
	}
	defer b.Close()
	blobs, err := blob.New(b.Conn(), blob.Config{MaxBytes: MaxSource})
	if err != nil {
		return err
	}
	h := &Handler{Sandbox: o.Sandbox, Blobs: blobs}
	w, err := worker.New(b.Conn(), worker.Config{
		Kind:  Kind,
		Topic: Topic,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			ptr, err := h.HandleJob(ctx, job.Request())
			return worker.Result{Ptr: ptr}, err
		}),
		ID:                o.ID,
		Capacity:          o.Capacity,
		Capabilities:      []string{Kind, "python"},
		Direct:            o.Direct,
		HeartbeatInterval: o.HeartbeatInterval,
		LeaseInterval:     o.LeaseInterval,
		ShutdownGrace:     o.ShutdownGrace,
		NamedSubjects:     o.NamedSubjects,
		Logger:            o.Logger,
		Metrics:           o.Metrics,
	})
	if err != nil {
		return err
	}
	if o.Started != nil {
		o.Started(w.ID())
	}
	return w.Run(ctx)
}
