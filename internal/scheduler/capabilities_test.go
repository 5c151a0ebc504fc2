package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// traceSeeingSafety records the trace id each check's context carried.
type traceSeeingSafety struct {
	mu   sync.Mutex
	seen []string
}

func (s *traceSeeingSafety) Check(ctx context.Context, req *pb.JobRequest) (safety.Verdict, error) {
	s.mu.Lock()
	s.seen = append(s.seen, safety.TraceID(ctx))
	s.mu.Unlock()
	return safety.Verdict{}, nil
}

// traceBlindSafety declares that it reads no trace id.
type traceBlindSafety struct{ traceSeeingSafety }

func (*traceBlindSafety) TraceBlind() bool { return true }

// The engine learns what a safety checker needs from what it declares
// (TraceBlind), not from its type: a checker that declares nothing is given
// the trace id, one that declares it reads none is not.
func TestSafetyCheckerDeclaresTraceBlind(t *testing.T) {
	t.Parallel()
	plain, blind := &traceSeeingSafety{}, &traceBlindSafety{}
	for _, c := range []struct {
		checker scheduler.SafetyChecker
		seen    *traceSeeingSafety
		want    string
	}{{plain, plain, "trace-1"}, {blind, &blind.traceSeeingSafety, ""}} {
		r := newRig(t, withConfig(func(cfg *scheduler.Config) { cfg.Safety = c.checker }))
		r.submit(request("j-1", "job.echo"), "trace-1", "")
		c.seen.mu.Lock()
		got := append([]string(nil), c.seen.seen...)
		c.seen.mu.Unlock()
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%T saw trace ids %q, want [%q]", c.checker, got, c.want)
		}
	}
}

// tracedSafety takes the trace id and the time as arguments
// (TracedChecker); its Check must not be called then.
type tracedSafety struct {
	traceSeeingSafety
	traced []string
	at     []time.Time
}

func (s *tracedSafety) CheckTraced(_ context.Context, _ *pb.JobRequest, traceID string, now time.Time) (safety.Verdict, error) {
	s.mu.Lock()
	s.traced, s.at = append(s.traced, traceID), append(s.at, now)
	s.mu.Unlock()
	return safety.Verdict{}, nil
}

// A checker that declares CheckTraced is asked through it, with the
// submission's trace id and the admission's time (the job's created_ms),
// and never through Check.
func TestSafetyCheckerDeclaresTraced(t *testing.T) {
	t.Parallel()
	s := &tracedSafety{}
	r := newRig(t, withConfig(func(cfg *scheduler.Config) { cfg.Safety = s }))
	r.submit(request("j-1", "job.echo"), "trace-1", "")
	s.mu.Lock()
	traced, at, seen := append([]string(nil), s.traced...), append([]time.Time(nil), s.at...), len(s.seen)
	s.mu.Unlock()
	if len(traced) != 1 || traced[0] != "trace-1" || seen != 0 {
		t.Fatalf("CheckTraced saw trace ids %q and Check was called %d times; want [trace-1] and none", traced, seen)
	}
	if job := r.job("j-1"); at[0].UnixMilli() != job.GetCreatedMs() {
		t.Errorf("checked at %d ms, job created at %d ms; want the admission's one clock read", at[0].UnixMilli(), job.GetCreatedMs())
	}
}

// listingRegistry is a WorkerRegistry that declares nothing more.
type listingRegistry struct{ scheduler.WorkerRegistry }

// placingRegistry is a registry of another type than placement.Registry
// that declares it places (PlacingRegistry).
type placingRegistry struct {
	scheduler.WorkerRegistry
	preg *placement.Registry
}

func (p placingRegistry) PlacementRegistry() *placement.Registry { return p.preg }

// The engine takes its pools from a registry that declares it places, of
// whatever type, and from no other.
func TestRegistryDeclaresPlacement(t *testing.T) {
	t.Parallel()
	pools, err := placement.NewPools(placement.Config{Pools: []placement.Pool{{Name: "gpu", Topics: []string{"job.gpu.*"}}}})
	if err != nil {
		t.Fatal(err)
	}
	preg := placement.NewRegistry(placement.RegistryOptions{Pools: pools})
	for _, c := range []struct {
		name     string
		registry scheduler.WorkerRegistry
		pools    bool
	}{
		{"placement.Registry", preg, true},
		{"declared by another type", placingRegistry{preg, preg}, true},
		{"a registry that declares nothing", listingRegistry{preg}, false},
		{"MemoryRegistry", scheduler.NewMemoryRegistry(), false},
	} {
		cfg := requiredConfig()
		cfg.Registry = c.registry
		e, err := scheduler.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, got := e.Load()["gpu"]; got != c.pools {
			t.Errorf("%s: the engine has the registry's pools: %v, want %v", c.name, got, c.pools)
		}
	}
}

// decisionLoggingStub is the stub declaring that it logs its decisions, as
// safety.Kernel does.
type decisionLoggingStub struct{ *scheduler.SafetyStub }

func (decisionLoggingStub) LogsDecisions() bool { return true }

// A denial is one info line: when the checker logs its decisions itself
// (DecisionLogger), the engine's own refusal line is at debug; with one that
// does not (the stub, a remote kernel), the engine's line is the info line.
func TestDeniedJobIsOneInfoLine(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		checker scheduler.SafetyChecker
		want    string
	}{
		{scheduler.NewSafetyStub(), `level=INFO msg="job blocked"`},
		{decisionLoggingStub{scheduler.NewSafetyStub()}, `level=DEBUG msg="job blocked"`},
	} {
		r := newRig(t, withLevel(slog.LevelDebug), withConfig(func(cfg *scheduler.Config) { cfg.Safety = c.checker }))
		r.submit(request("destroy-1", scheduler.ForbiddenTopic), "trace-d", "")
		systest.Eventually(t, waitLimit, "the refusal logged", func() bool { return strings.Contains(r.logs.String(), `msg="job blocked"`) })
		if logs := r.logs.String(); !strings.Contains(logs, c.want) {
			t.Errorf("%T: log lacks %s:\n%s", c.checker, c.want, logs)
		}
	}
}

var _ scheduler.DecisionLogger = (*safety.Kernel)(nil)

// downSafety cannot decide: a remote kernel that does not answer.
type downSafety struct{}

func (downSafety) Check(context.Context, *pb.JobRequest) (safety.Verdict, error) {
	return safety.Verdict{}, errors.New("no answer")
}

// A job admitted while the safety checker cannot decide is asked about again
// with a growing delay (as a job no worker takes), not every NoWorkerRetry:
// a kernel down for long costs few store writes.
func TestSafetyRecheckBacksOff(t *testing.T) {
	t.Parallel()
	r := newRig(t, withConfig(func(cfg *scheduler.Config) { cfg.Safety = downSafety{} }))
	r.submit(request("j-1", "job.echo"), "trace-1", "")
	want := 8 * r.cfg.NoWorkerRetry
	systest.Eventually(t, waitLimit, fmt.Sprintf("a recheck delay of %s", want), func() bool {
		for _, j := range r.store.history("j-1") {
			if j.GetAwaitingSafety() && j.GetNextAttemptMs()-j.GetUpdatedMs() >= want.Milliseconds() {
				return true
			}
		}
		return false
	})
}
