package safety

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/logging"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// Server answers requests; *bus.NatsBus is one.
type Server interface {
	Serve(subject, queue string, handler func(*pb.BusPacket) *pb.BusPacket) (drain func() error, err error)
}

// ServiceConfig configures a Service.
type ServiceConfig struct {
	// Bus carries the checks. Required.
	Bus Server
	// Kernel decides. Required.
	Kernel *Kernel
	// Subject is where checks arrive. Default SubjectCheck.
	Subject string
	// Queue is the queue group: each check goes to one service of it.
	// Default QueueGroup.
	Queue string
	// Started, if set, is called once the service is subscribed (and, for
	// a bus with a Flush method, the server has the subscription).
	Started func()
}

// Service answers safety checks on the bus with its kernel's verdicts.
type Service struct {
	cfg ServiceConfig
}

// NewService returns a service; Run runs it.
func NewService(cfg ServiceConfig) (*Service, error) {
	switch {
	case cfg.Bus == nil:
		return nil, errors.New("safety: ServiceConfig.Bus is required")
	case cfg.Kernel == nil:
		return nil, errors.New("safety: ServiceConfig.Kernel is required")
	}
	if cfg.Subject == "" {
		cfg.Subject = SubjectCheck
	}
	if cfg.Queue == "" {
		cfg.Queue = QueueGroup
	}
	return &Service{cfg: cfg}, nil
}

// Run answers checks until ctx ends, then drains (the checks in hand are
// answered) and returns nil.
func (s *Service) Run(ctx context.Context) error {
	drain, err := s.cfg.Bus.Serve(s.cfg.Subject, s.cfg.Queue, s.Answer)
	if err != nil {
		return err
	}
	// Started means the server has the subscription: checks sent from now
	// on find the service.
	if f, ok := s.cfg.Bus.(interface{ Flush(context.Context) error }); ok {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f.Flush(fctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			_ = drain()
			return fmt.Errorf("safety: subscribing to %s: %w", s.cfg.Subject, err)
		}
	}
	if s.cfg.Started != nil {
		s.cfg.Started()
	}
	<-ctx.Done()
	return drain()
}

// Answer is the answer to one check packet: the verdict about its
// job_request, or, for a packet without one, a verdict without a decision
// whose reason says what was wrong.
func (s *Service) Answer(p *pb.BusPacket) *pb.BusPacket {
	k := s.cfg.Kernel
	out := wire.NewPacket(p.GetTraceId(), k.InstanceID())
	req := p.GetJobRequest()
	if req == nil {
		out.Payload = &pb.BusPacket_SafetyVerdict{SafetyVerdict: &pb.SafetyVerdict{
			Reason:    "a safety check carries a job_request",
			DecidedMs: time.Now().UnixMilli(), DecidedBy: k.InstanceID(),
		}}
		return out
	}
	ctx := context.Background()
	if id := p.GetTraceId(); id != "" {
		ctx = WithTraceID(ctx, id)
	}
	v, _ := k.Check(ctx, req)
	out.Payload = &pb.BusPacket_SafetyVerdict{SafetyVerdict: Record(req, v, k.InstanceID(), time.Now())}
	return out
}

// ServiceOptions configures RunService, the process cortex safety runs.
type ServiceOptions struct {
	// NatsURL is the NATS server. Default nats.DefaultURL.
	NatsURL string
	// NatsOptions are extra connection options (credentials, TLS).
	NatsOptions []nats.Option
	// ID names the service in audit records and on the bus. Default
	// safety-<host>-<pid>.
	ID string
	// PolicyFile is the policy, watched for changes. Empty: the shipped
	// default policy, not watched.
	PolicyFile string
	// WatchInterval is how often the policy file is read. Default
	// DefaultWatchInterval.
	WatchInterval time.Duration
	// SettleTime is how long a changed policy file must stay the same
	// before it is loaded. Default DefaultSettleTime.
	SettleTime time.Duration
	// AuditSubject is where audit records go. Default SubjectAudit.
	AuditSubject string
	// NoAudit turns the audit records off.
	NoAudit bool
	// Logger receives the safety lines (component=safety). Default slog.Default().
	Logger *slog.Logger
	// Started, if set, is called once the service answers checks.
	Started func()
	// Decided, if set, gets the record of every decision, synchronously
	// (metrics: it must not block).
	Decided func(*pb.SafetyVerdict)
}

// RunService connects to NATS and answers safety checks until ctx ends:
// a kernel with the policy (reloaded when its file changes), audit records
// on the bus, checks served in the queue group QueueGroup. A policy file
// that does not validate at start is an error; later, a broken edit is
// refused and the running policy stays.
func RunService(ctx context.Context, opts ServiceOptions) error {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ID == "" {
		host, _ := os.Hostname()
		opts.ID = "safety-" + host + "-" + strconv.Itoa(os.Getpid())
	}
	log := opts.Logger
	b, err := bus.Connect(bus.Config{URL: opts.NatsURL, Name: "cortex-safety", Logger: log, Options: opts.NatsOptions})
	if err != nil {
		return err
	}
	defer b.Close()

	var auditor *BusAuditor
	kcfg := Config{PolicyFile: opts.PolicyFile, Logger: log, InstanceID: opts.ID, WatchInterval: opts.WatchInterval, SettleTime: opts.SettleTime}
	if !opts.NoAudit {
		auditor, err = NewBusAuditor(AuditorConfig{Bus: b, Subject: opts.AuditSubject, SenderID: opts.ID, Logger: log})
		if err != nil {
			return err
		}
		kcfg.Audit = auditor.Record
	}
	if decided, audit := opts.Decided, kcfg.Audit; decided != nil {
		kcfg.Audit = func(v *pb.SafetyVerdict) {
			decided(v)
			if audit != nil {
				audit(v)
			}
		}
	}
	k, err := New(kcfg)
	if err != nil {
		return err
	}
	svc, err := NewService(ServiceConfig{Bus: b, Kernel: k, Started: opts.Started})
	if err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if opts.PolicyFile != "" {
		wg.Go(func() { _ = k.Watch(runCtx, opts.PolicyFile) })
	}
	if auditor != nil {
		auditor.Start()
	}

	st := k.Stats()
	log.With(logging.ComponentKey, logging.ComponentSafety).Info("safety service starting", "id", opts.ID, "subject", SubjectCheck, "queue", QueueGroup,
		"policy_version", st.PolicyVersion, "policy_file", st.PolicyFile, "audit", !opts.NoAudit)
	serveErr := svc.Run(ctx)
	cancel()
	wg.Wait()
	if auditor != nil {
		auditor.Stop()
	}
	if serveErr != nil {
		return fmt.Errorf("safety service: %w", serveErr)
	}
	log.With(logging.ComponentKey, logging.ComponentSafety).Info("safety service stopped", "id", opts.ID, "checks", k.Stats().Checks)
	return nil
}
