// Package bench measures CortexOS against the floor NATS itself allows, in one
// run: the same message path (client -> relay -> worker -> client) over core
// NATS without control-plane logic, then the complete system (client ->
// scheduler -> echo worker -> client), with the same connections, the same
// packet bytes, the same window or rate, and the same measurement code.
//
// `cortex bench` and `make bench` run it; docs/BENCHMARKS.md shows how and
// what it measured.
package bench

import (
	"context"
	"errors"
	"fmt"
	"github.com/nats-io/nats.go"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/cortex-os/core/internal/embeddednats"
)

// Stores the --store flag names.
const (
	StoreMemory    = "memory"
	StoreJetStream = "jetstream"
)

// How the load generator submits (SubmitMode).
const (
	// SubmitPlain: published on sys.job.submit, nobody answers (as the
	// design document's sender does).
	SubmitPlain = "plain"
	// SubmitAnswered: as client.Submit does, published for an answer
	// (bus.PublishAnsweredSubmit, which the intake stream does not store)
	// and published again plainly when the answer is retryable.
	SubmitAnswered = "answered"
)

// SubmitMode is how the system's submissions are made: SubmitAnswered with
// StoreJetStream, where it saves the intake stream's write, as it does
// for a pkg/client user; SubmitPlain with StoreMemory, whose intake stores
// nothing (and the floor always submits plainly).
func SubmitMode(o Options) string {
	if o.Store == StoreJetStream {
		return SubmitAnswered
	}
	return SubmitPlain
}

// PayloadField names where the --payload bytes travel: a string of that many
// bytes in JobRequest.context_ptr.
const PayloadField = "context_ptr"

// Defaults of Options.
//
// DefaultJobs is three times the finished jobs the system's store keeps
// (jobstore.DefaultMemoryRetain), so that most of the system's rounds run
// with the store full, as a long-running scheduler's is: with 100,000 jobs
// the store is still filling (its ring and index growing, the heap and the
// collector's pace with them) during most of the measurement. DefaultRounds
// splits them into rounds of 20,000 jobs, floor and system alternating.
const (
	DefaultJobs        = 300_000
	DefaultWindow      = 1000
	DefaultWorkers     = 1
	DefaultWarmup      = 2000
	DefaultRounds      = 15
	DefaultIdleTimeout = 30 * time.Second
)

// Options configures a run. The zero value of a field means its default,
// except Payload, Rate and Warmup, whose zero is meaningful.
type Options struct {
	// Jobs measured in each of the two runs (floor and system). Default DefaultJobs.
	Jobs int
	// Window is the number of jobs in flight. 1 measures latency. With Rate, it
	// caps the jobs in flight (0: no cap). Default DefaultWindow without Rate.
	Window int
	// Rate, in jobs per second, makes the load an open loop: job i is due at
	// start + i/Rate, and its latencies are measured from that intended time,
	// so a stall is not hidden (coordinated omission). 0: closed loop.
	Rate float64
	// Workers is the number of echo workers (floor: worker subscribers), each on
	// its own connection. Default DefaultWorkers.
	Workers int
	// Payload is the number of bytes carried in each job (in context_ptr).
	Payload int
	// WorkerRunners runs the system's echo handler on the worker's runner
	// goroutines, as a handler that blocks must run. By default it runs
	// inline (worker.Config.Inline) on the delivery goroutine, as the
	// floor's worker does: the echo handler returns in microseconds.
	WorkerRunners bool
	// Strategy is the placement strategy every topic gets
	// (placement.Config.DefaultStrategy): StrategyLeastLoaded, the
	// default, places each job on a worker by its heartbeats, as
	// cortex-scheduler does with no placement section; StrategyNaive
	// publishes it on the topic for the queue group. Default
	// StrategyLeastLoaded.
	Strategy string
	// Policy is a policy file for the safety kernel; "" is the shipped
	// default policy.
	Policy string
	// SafetyStub replaces the safety kernel (and its audit) with the stub
	// that allows everything, to measure the kernel's cost.
	SafetyStub bool
	// Store is the job store: StoreMemory (the control plane's own cost) or
	// StoreJetStream (a key-value bucket and durable intake, as deployed).
	// Default StoreMemory.
	Store string
	// Warmup jobs run before each measurement and are not counted. Negative: none.
	Warmup int
	// Rounds splits the measured jobs of each path into this many rounds,
	// run alternately (floor, system, floor, system, ...), so that both
	// paths meet the same changes in the machine's speed. Default
	// DefaultRounds; at most Jobs.
	Rounds int
	// SyncAlways makes the embedded server fsync every JetStream write
	// (sync_interval: always; see docs/guarantees.md). It matters only with
	// StoreJetStream; it is an error with NatsURL (configure that server).
	SyncAlways bool
	// NatsURL uses an existing server; empty starts an embedded one.
	NatsURL string
	// Replicas of the JetStream store's bucket and streams (StoreJetStream).
	// 0: 3 on a cluster of three or more servers, else 1, as the scheduler.
	Replicas int
	// NatsOptions are connection options (credentials, TLS) for NatsURL's
	// server, used by every connection of the run.
	NatsOptions []nats.Option
	// IdleTimeout aborts a run in which no result arrived for this long
	// (core NATS may drop a message). Default DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Progress, if set, receives a progress bar (meant for a terminal).
	Progress io.Writer
	// CPUProfile, if set, receives a pprof CPU profile of the system's first
	// measured round (not the floor, not the warm-up; with Rounds 1, all of
	// the system's measured jobs).
	CPUProfile io.Writer
	// MemProfile, if set, receives a pprof allocation profile written after
	// the system's last round (allocations since the process started, so
	// the floor's too: compare with -diff_base or look at the system's code).
	MemProfile io.Writer
	// Commit is reported as is (see Commit()).
	Commit string
	// Metrics runs the system with its Prometheus metrics on (the
	// scheduler's and the workers', gathered every ScrapeInterval), to
	// measure what they cost.
	Metrics bool
	// Traces runs the system with its spans recorded (the scheduler's and
	// the workers', trace headers on the bus), batched into an exporter
	// that drops them, to measure what tracing costs.
	Traces bool
}

func (o *Options) setDefaults() error {
	if o.Jobs == 0 {
		o.Jobs = DefaultJobs
	}
	if o.Workers == 0 {
		o.Workers = DefaultWorkers
	}
	if o.Window == 0 && o.Rate == 0 {
		o.Window = DefaultWindow
	}
	if o.Warmup < 0 {
		o.Warmup = 0
	}
	if o.Rounds == 0 {
		o.Rounds = DefaultRounds
	}
	if o.Store == "" {
		o.Store = StoreMemory
	}
	if o.Strategy == "" {
		o.Strategy = StrategyLeastLoaded
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	switch {
	case o.Jobs < 0:
		return fmt.Errorf("bench: --jobs must be positive, not %d", o.Jobs)
	case o.Window < 0:
		return fmt.Errorf("bench: --window must be positive, not %d", o.Window)
	case o.Rate < 0:
		return fmt.Errorf("bench: --rate must be positive, not %g", o.Rate)
	case o.Rounds < 0:
		return fmt.Errorf("bench: --rounds must be positive, not %d", o.Rounds)
	case o.Workers < 0:
		return fmt.Errorf("bench: --workers must be positive, not %d", o.Workers)
	case o.Payload < 0:
		return fmt.Errorf("bench: --payload must be 0 or more, not %d", o.Payload)
	case o.Payload > maxPayload:
		return fmt.Errorf("bench: --payload %d is over %d bytes; large inputs belong behind context_ptr", o.Payload, maxPayload)
	}
	if o.SyncAlways && o.NatsURL != "" {
		return errors.New("bench: --sync-always sets the embedded server; configure sync_interval: always on the server of --nats-url instead")
	}
	switch o.Store {
	case StoreMemory, StoreJetStream:
	default:
		return fmt.Errorf("bench: --store %q: want memory or jetstream", o.Store)
	}
	switch o.Strategy {
	case StrategyLeastLoaded, StrategyNaive:
	default:
		return fmt.Errorf("bench: --strategy %q: want %s or %s", o.Strategy, StrategyLeastLoaded, StrategyNaive)
	}
	o.Rounds = min(o.Rounds, o.Jobs)
	return nil
}

// maxPayload keeps a packet well under NATS's default max_payload of 1 MB.
const maxPayload = 512 << 10

// Run sets up the floor and the system, warms each up, then measures them
// in alternating rounds and reports both. Everything it starts is stopped
// before it returns, also when ctx is cancelled.
func Run(ctx context.Context, opts Options) (rep *Report, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	url := opts.NatsURL
	natsDesc := "external " + redact(url)
	if url == "" {
		dir, err := os.MkdirTemp("", "cortex-bench-*")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer os.RemoveAll(dir)
		srv, err := embeddednats.Start(embeddednats.Config{Port: -1, JetStream: true, StoreDir: dir, SyncAlways: opts.SyncAlways})
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer func() {
			srv.Shutdown()
			srv.WaitForShutdown()
		}()
		url = srv.ClientURL()
		natsDesc = "embedded"
		if opts.SyncAlways {
			natsDesc = "embedded, sync_always"
		}
	}

	env := &env{opts: opts, url: url, runID: newRunID()}
	env.topic = "job.bench." + env.runID
	env.payload = strings.Repeat("x", opts.Payload)

	phases := make([]*phase, 0, 2)
	defer func() {
		for _, ph := range phases {
			if cerr := ph.close(); cerr != nil && err == nil {
				err = fmt.Errorf("bench: %s: %w", ph.pa.name, cerr)
			}
		}
	}()
	for _, pa := range []path{floorPath, systemPath} {
		ph, err := env.setup(ctx, pa)
		if err != nil {
			return nil, fmt.Errorf("bench: %s: %w", pa.name, err)
		}
		phases = append(phases, ph)
	}
	// Measured jobs are [Warmup, Warmup+Jobs), round k the k-th slice.
	o := env.opts
	for k := range o.Rounds {
		lo, hi := o.Warmup+k*o.Jobs/o.Rounds, o.Warmup+(k+1)*o.Jobs/o.Rounds
		for _, ph := range phases {
			if err := ph.round(ctx, k, lo, hi); err != nil {
				return nil, fmt.Errorf("bench: %s: round %d of %d: %w", ph.pa.name, k+1, o.Rounds, err)
			}
		}
	}
	floor, system := phases[0].result(), phases[1].result()
	return newReport(opts, natsDesc, floor, system), nil
}

// profile starts a CPU profile into w, if set, and returns its stop.
func profile(w io.Writer) (stop func(), err error) {
	if w == nil {
		return func() {}, nil
	}
	if err := pprof.StartCPUProfile(w); err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return pprof.StopCPUProfile, nil
}

// redact drops credentials from a URL for the report.
func redact(url string) string {
	if at := strings.LastIndex(url, "@"); at >= 0 {
		if scheme := strings.Index(url, "://"); scheme >= 0 && scheme < at {
			return url[:scheme+3] + "***" + url[at:]
		}
	}
	return url
}

func goVersion() string { return runtime.Version() }
