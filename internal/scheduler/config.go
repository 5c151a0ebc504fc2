package scheduler

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/tenancy"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// DefaultQueueGroup is the queue group (and durable consumer name) the
// scheduler replicas share submissions, results, queries and cancels through.
const DefaultQueueGroup = "cortex-scheduler"

// Config configures an Engine. Bus, Safety, Registry and Strategy are
// required; every other zero value is replaced by its default (WithDefaults).
// A negative duration or count is an error (Validate), not a default: TTL
// alone takes a negative value, meaning none.
type Config struct {
	Bus      Bus
	Safety   SafetyChecker
	Registry WorkerRegistry
	Strategy SchedulingStrategy
	// Store is the job store. Default: a new jobstore.Memory.
	Store JobStore
	// DeadLetters receives jobs that exhausted their attempts. Default: a
	// new jobstore.MemoryDeadLetters.
	DeadLetters DeadLetters

	// ID is this replica's sender_id. Default "cortex-scheduler-<host>-<random>".
	ID string
	// QueueGroup shared by the replicas. Default DefaultQueueGroup.
	QueueGroup string
	// Logger. Default slog.Default(). Per-job events are logged at debug.
	Logger *slog.Logger
	// Observer, if set, hears every job write and safety decision
	// (metrics, traces: observe.go). Default none.
	Observer Observer

	// AckTimeout is how long a dispatch waits for the worker's confirmation.
	// Default 1s.
	AckTimeout time.Duration
	// LeaseInterval is the heartbeat interval the scheduler expects of a
	// worker that holds jobs, until its heartbeats say otherwise. Default 500ms.
	LeaseInterval time.Duration
	// LeaseMisses is how many heartbeat intervals a worker holding jobs may
	// miss before it is dead and its jobs are dispatched again. Default 3.
	LeaseMisses int
	// MaxAttempts is the default for jobs that set none. Default 3.
	MaxAttempts int
	// Timeout is the default per-attempt timeout. Default 60s.
	Timeout time.Duration
	// TTL is the default time from submission by which a job must finish or
	// end TIMEOUT. Default 10m; negative means none.
	TTL time.Duration
	// RetryBackoff and RetryBackoffMax bound the exponential, jittered delay
	// before a failed attempt is retried. Defaults 100ms and 30s.
	RetryBackoff, RetryBackoffMax time.Duration
	// NoWorkerRetry is how often a job no worker took is offered again.
	// Default 250ms.
	NoWorkerRetry time.Duration
	// Tick is how often timers (retries, leases, timeouts) are checked.
	// Default 50ms.
	Tick time.Duration
	// Placement names the pools, tenants and strategies of placement (see
	// package placement). Default: the pools of the Registry when it places
	// (PlacingRegistry: a placement.Registry; MemoryRegistry does not), else
	// no pools and the naive strategy for every topic, the design document's
	// behaviour. Pools whose strategy looks at the workers (least-loaded)
	// queue their jobs and place them on workers with room, counted in the
	// Registry when it places (it should be over the same Pools), else in a
	// registry the engine keeps of its own, fed the same heartbeats.
	Placement *placement.Pools
	// SafetyUnavailable is what happens to a job the safety checker could
	// not decide on (a remote kernel that does not answer): SafetyUnavailablePending
	// (the default) keeps it PENDING and checks it again before dispatch;
	// SafetyUnavailableDeny ends it DENIED. Either way it fails closed.
	SafetyUnavailable string
	// RequireWorkerIdentity refuses heartbeats and results on subjects that
	// name no worker (the design document's bare sys.heartbeat.<kind> and
	// sys.job.result). A heartbeat or result whose subject names another
	// worker than its worker_id is refused either way. With it, a result
	// that asks for an answer is answered only in its worker's own inbox
	// (_INBOX.<worker id>.). See docs/security.md.
	RequireWorkerIdentity bool
	// Clients binds client identities to tenants (package tenancy): a
	// tenant's client submits for its tenant only and sees its tenant's jobs
	// only; with RequireIdentity, requests that name no bound identity are
	// refused. Nil: no bindings, every client acts on every tenant. Either
	// way every answer goes only to the requester's own inbox. See
	// docs/security.md.
	Clients *tenancy.Policy
	// DocumentWorkers says whether results that name no attempt (attempt 0:
	// workers built from the design document, which neither confirm nor
	// copy the attempt) are applied: DocumentWorkersTrust or
	// DocumentWorkersRefuse. Nothing tells such a result from a stale or a
	// forged one but the job's state. Default: trust, as the design
	// document's workers need; refuse with RequireWorkerIdentity, where every
	// worker names itself and reports its attempt. See docs/security.md.
	DocumentWorkers string
	// AdoptPlacements counts the jobs another scheduler placed (found
	// DISPATCHED or RUNNING in the store) against their tenants'
	// max_concurrent and their workers' capacity, as if placed here: for
	// the one active scheduler of an election, which takes over its
	// predecessor's jobs (docs/ARCHITECTURE.md). Off, each replica counts
	// its own placements only.
	AdoptPlacements bool
	// FollowTTL is how long a follower's announcement on
	// wire.SubjectJobFollow lasts: a job's events are published only while
	// someone follows it. Followers announce again every
	// wire.FollowInterval, so it should not be shorter than that. Default
	// DefaultFollowTTL.
	FollowTTL time.Duration
	// MaxFollows bounds the jobs followed one by one; an announcement
	// beyond them follows every job for FollowTTL instead (Stats.FollowOverflows).
	// Default DefaultMaxFollows.
	MaxFollows int
}

// What becomes of results that name no attempt (Config.DocumentWorkers).
const (
	DocumentWorkersTrust  = "trust"
	DocumentWorkersRefuse = "refuse"
)

// What a job the safety checker could not decide on becomes.
const (
	SafetyUnavailablePending = "pending"
	SafetyUnavailableDeny    = "deny"
)

// SafetyUnavailableReason is the reason of a job the safety checker could not decide on.
const SafetyUnavailableReason = "safety kernel unavailable"

// The defaults of Config's zero values.
const (
	DefaultAckTimeout      = time.Second
	DefaultLeaseInterval   = 500 * time.Millisecond
	DefaultLeaseMisses     = 3
	DefaultMaxAttempts     = 3
	DefaultTimeout         = time.Minute
	DefaultTTL             = 10 * time.Minute
	DefaultRetryBackoff    = 100 * time.Millisecond
	DefaultRetryBackoffMax = 30 * time.Second
	DefaultNoWorkerRetry   = 250 * time.Millisecond
	DefaultTick            = 50 * time.Millisecond
	DefaultFollowTTL       = wire.FollowTTL
	DefaultMaxFollows      = 10000

	// DefaultSafetyUnavailable keeps a job the checker could not decide on
	// PENDING, checked again before dispatch.
	DefaultSafetyUnavailable = SafetyUnavailablePending
	// DefaultDocumentWorkers trusts results that name no attempt, as the
	// design document's workers need; with RequireWorkerIdentity the
	// default is DocumentWorkersRefuse.
	DefaultDocumentWorkers = DocumentWorkersTrust
)

// ErrInvalidConfig is what Validate's errors wrap.
var ErrInvalidConfig = errors.New("scheduler: invalid config")

// WithDefaults returns a copy of c whose zero values are replaced by their
// defaults (DefaultQueueGroup and the other Default* constants, a new
// in-memory store and dead-letter store, a unique ID, slog.Default()); c
// itself is not changed. Values that are set, bad ones
// included, are kept: Validate judges them.
func (c Config) WithDefaults() Config {
	if c.Store == nil {
		c.Store = jobstore.NewMemory()
	}
	if c.DeadLetters == nil {
		c.DeadLetters = jobstore.NewMemoryDeadLetters()
	}
	if c.ID == "" {
		c.ID = UniqueID("cortex-scheduler")
	}
	if c.QueueGroup == "" {
		c.QueueGroup = DefaultQueueGroup
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	orDefault(&c.AckTimeout, DefaultAckTimeout)
	orDefault(&c.LeaseInterval, DefaultLeaseInterval)
	orDefault(&c.LeaseMisses, DefaultLeaseMisses)
	orDefault(&c.MaxAttempts, DefaultMaxAttempts)
	orDefault(&c.Timeout, DefaultTimeout)
	orDefault(&c.TTL, DefaultTTL)
	orDefault(&c.RetryBackoff, DefaultRetryBackoff)
	orDefault(&c.RetryBackoffMax, DefaultRetryBackoffMax)
	orDefault(&c.NoWorkerRetry, DefaultNoWorkerRetry)
	orDefault(&c.Tick, DefaultTick)
	orDefault(&c.FollowTTL, DefaultFollowTTL)
	orDefault(&c.MaxFollows, DefaultMaxFollows)
	if c.DocumentWorkers == "" {
		c.DocumentWorkers = DefaultDocumentWorkers
		if c.RequireWorkerIdentity {
			c.DocumentWorkers = DocumentWorkersRefuse
		}
	}
	if c.SafetyUnavailable == "" {
		c.SafetyUnavailable = DefaultSafetyUnavailable
	}
	return c
}

func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Validate reports the first bad value of c, wrapping ErrInvalidConfig: a
// missing dependency, an ID that cannot name a subject, a negative duration
// or count (TTL excepted: negative means none), an unknown mode. Zero values
// are bad too: call it on WithDefaults' copy (New does).
func (c Config) Validate() error {
	switch {
	case c.Bus == nil:
		return fmt.Errorf("%w: Config.Bus is required", ErrInvalidConfig)
	case c.Safety == nil:
		return fmt.Errorf("%w: Config.Safety is required", ErrInvalidConfig)
	case c.Registry == nil:
		return fmt.Errorf("%w: Config.Registry is required", ErrInvalidConfig)
	case c.Strategy == nil:
		return fmt.Errorf("%w: Config.Strategy is required", ErrInvalidConfig)
	case c.Store == nil:
		return fmt.Errorf("%w: Config.Store is required", ErrInvalidConfig)
	case c.DeadLetters == nil:
		return fmt.Errorf("%w: Config.DeadLetters is required", ErrInvalidConfig)
	case c.Logger == nil:
		return fmt.Errorf("%w: Config.Logger is required", ErrInvalidConfig)
	case c.QueueGroup == "":
		return fmt.Errorf("%w: Config.QueueGroup is required", ErrInvalidConfig)
	}
	if err := validSchedulerID("Config.ID", c.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err) // it names the subjects of its dispatches' replies
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"AckTimeout", c.AckTimeout}, {"LeaseInterval", c.LeaseInterval}, {"Timeout", c.Timeout},
		{"RetryBackoff", c.RetryBackoff}, {"RetryBackoffMax", c.RetryBackoffMax},
		{"NoWorkerRetry", c.NoWorkerRetry}, {"Tick", c.Tick}, {"FollowTTL", c.FollowTTL},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%w: Config.%s %v: want a positive duration", ErrInvalidConfig, d.name, d.v)
		}
	}
	if c.TTL == 0 {
		return fmt.Errorf("%w: Config.TTL 0: want a positive duration, or negative for none", ErrInvalidConfig)
	}
	if c.LeaseMisses <= 0 {
		return fmt.Errorf("%w: Config.LeaseMisses %d: want at least 1", ErrInvalidConfig, c.LeaseMisses)
	}
	if c.MaxFollows <= 0 {
		return fmt.Errorf("%w: Config.MaxFollows %d: want at least 1", ErrInvalidConfig, c.MaxFollows)
	}
	if c.MaxAttempts <= 0 {
		return fmt.Errorf("%w: Config.MaxAttempts %d: want at least 1", ErrInvalidConfig, c.MaxAttempts)
	}
	switch c.DocumentWorkers {
	case DocumentWorkersTrust, DocumentWorkersRefuse:
	default:
		return fmt.Errorf("%w: Config.DocumentWorkers %q: want %q or %q", ErrInvalidConfig, c.DocumentWorkers, DocumentWorkersTrust, DocumentWorkersRefuse)
	}
	switch c.SafetyUnavailable {
	case SafetyUnavailablePending, SafetyUnavailableDeny:
	default:
		return fmt.Errorf("%w: Config.SafetyUnavailable %q: want %q or %q", ErrInvalidConfig, c.SafetyUnavailable, SafetyUnavailablePending, SafetyUnavailableDeny)
	}
	return nil
}

// UniqueID returns prefix-host-random, distinct for every call and usable as
// a subject token.
func UniqueID(prefix string) string {
	host, _ := os.Hostname()
	host = strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").Replace(host)
	if host == "" {
		host = "local"
	}
	if len(host) > 64 {
		host = host[:64] // ids are bounded (MaxWorkerIDLength)
	}
	return fmt.Sprintf("%s-%s-%s", prefix, host, uuid.NewString()[:8])
}

// leaseTTL is how long a RUNNING job's lease lasts without a heartbeat of
// its worker naming it.
func (c Config) leaseTTL() time.Duration {
	return time.Duration(c.LeaseMisses) * c.LeaseInterval
}

// jobTimes is what the config says of a job's times where its request says
// nothing; the parts that need them hold a copy.
type jobTimes struct {
	timeoutDefault time.Duration // Config.Timeout
	ttlDefault     time.Duration // Config.TTL; negative: none
}

func (c Config) jobTimes() jobTimes { return jobTimes{timeoutDefault: c.Timeout, ttlDefault: c.TTL} }

// ttl is how long from its submission req may take to finish; 0: no limit.
func (t jobTimes) ttl(req *pb.JobRequest) time.Duration {
	if req.GetTtlMs() > 0 {
		return time.Duration(req.GetTtlMs()) * time.Millisecond
	}
	if t.ttlDefault > 0 {
		return t.ttlDefault
	}
	return 0
}

// timeout is req's attempt timeout.
func (t jobTimes) timeout(req *pb.JobRequest) time.Duration {
	if req.GetTimeoutMs() > 0 {
		return time.Duration(req.GetTimeoutMs()) * time.Millisecond
	}
	return t.timeoutDefault
}
