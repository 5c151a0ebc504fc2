package safety

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// ErrUnavailable is wrapped by every error of Remote.Check: no safety
// service answered in time (none runs, or it is too slow), or its answer
// decides nothing. The scheduler then fails closed, with the reason "safety
// kernel unavailable".
var ErrUnavailable = errors.New("safety kernel unavailable")

// DefaultRemoteTimeout bounds one remote check.
const DefaultRemoteTimeout = 500 * time.Millisecond

// Requester sends a request and waits for its answer; *bus.NatsBus is one.
// A subject nobody serves should fail at once (bus.NatsBus: an error
// wrapping wire.ErrNoResponders).
type Requester interface {
	Request(ctx context.Context, subject string, packet *pb.BusPacket) (*pb.BusPacket, error)
}

// RemoteConfig configures a Remote.
type RemoteConfig struct {
	// Bus carries the checks. Required.
	Bus Requester
	// Subject is where checks are sent. Default SubjectCheck.
	Subject string
	// Timeout bounds one check (and the context's deadline, if sooner,
	// does too). Default DefaultRemoteTimeout.
	Timeout time.Duration
	// SenderID signs the packets: the scheduler's id. Default "cortex-scheduler".
	SenderID string
}

// Remote asks a safety service (cortex safety) over the bus. It implements
// the scheduler's SafetyChecker: Check(ctx, req) (Verdict, error).
type Remote struct {
	cfg                 RemoteConfig
	checks, unavailable atomic.Uint64
}

// NewRemote returns a Remote.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	if cfg.Bus == nil {
		return nil, errors.New("safety: RemoteConfig.Bus is required")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("safety: RemoteConfig.Timeout %s is negative", cfg.Timeout)
	}
	if cfg.Subject == "" {
		cfg.Subject = SubjectCheck
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultRemoteTimeout
	}
	if cfg.SenderID == "" {
		cfg.SenderID = "cortex-scheduler"
	}
	return &Remote{cfg: cfg}, nil
}

// Check asks a safety service about req and waits at most Timeout. Any
// failure wraps ErrUnavailable. The trace id of ctx (WithTraceID) travels
// with the request.
func (r *Remote) Check(ctx context.Context, req *pb.JobRequest) (Verdict, error) {
	r.checks.Add(1)
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	answer, err := r.cfg.Bus.Request(ctx, r.cfg.Subject, wire.JobRequestPacket(TraceID(ctx), r.cfg.SenderID, req))
	if err != nil {
		r.unavailable.Add(1)
		switch {
		case errors.Is(err, wire.ErrNoResponders):
			return Verdict{}, fmt.Errorf("%w: no safety service is serving %s: %w", ErrUnavailable, r.cfg.Subject, err)
		case errors.Is(err, context.DeadlineExceeded):
			return Verdict{}, fmt.Errorf("%w: no answer on %s within %s: %w", ErrUnavailable, r.cfg.Subject, r.cfg.Timeout, err)
		}
		return Verdict{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	v, err := VerdictFromAnswer(answer)
	if err != nil {
		r.unavailable.Add(1)
		return Verdict{}, err
	}
	return v, nil
}

// RemoteStats counts what a Remote did.
type RemoteStats struct {
	Checks      uint64
	Unavailable uint64 // checks that ended in an error
}

// Stats returns the counters.
func (r *Remote) Stats() RemoteStats {
	return RemoteStats{Checks: r.checks.Load(), Unavailable: r.unavailable.Load()}
}

// VerdictFromAnswer reads the verdict in a safety service's answer. An
// answer that is not a verdict, or a verdict without a decision, is an
// error wrapping ErrUnavailable: it decides nothing.
func VerdictFromAnswer(p *pb.BusPacket) (Verdict, error) {
	sv := p.GetSafetyVerdict()
	if sv == nil {
		if a := p.GetJobAnswer(); a != nil && a.GetError() != "" {
			return Verdict{}, fmt.Errorf("%w: the safety service refused the check: %s", ErrUnavailable, a.GetError())
		}
		return Verdict{}, fmt.Errorf("%w: the answer carries no safety verdict", ErrUnavailable)
	}
	v, err := VerdictFromProto(sv)
	if err != nil {
		return Verdict{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return v, nil
}
