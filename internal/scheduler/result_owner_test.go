package scheduler_test

import (
	"strings"
	"testing"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// forged is a result for job id, as worker from, completing it with from's
// result_ptr.
func forged(id string, attempt int32, from string) *pb.BusPacket {
	res := completed(id, attempt, from)
	res.ResultPtr = "forged://" + from
	return wire.JobResultPacket("forged", from, res)
}

// Finding 3: w1, on its own subject, publishes a result for a job running on
// w2, at its current attempt or at attempt 0. Both are refused, counted and
// logged; w2's real result then completes the job with w2's result_ptr.
func TestResultFromAnotherWorkerIsRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	runningOn(r, "j1", "w2")

	for _, attempt := range []int32{1, 0} {
		if err := r.bus.resultOn(t, wire.ResultSubject("w1"), forged("j1", attempt, "w1")); err != nil {
			t.Fatalf("a refused result asked for redelivery: %v", err)
		}
	}
	st := r.e.Stats()
	if st.ForeignResults != 2 || st.Completed != 0 || st.IdentityRejected != 0 {
		t.Errorf("stats %+v: want 2 foreign results refused", st)
	}
	if j := r.job("j1"); j.GetState() != lifecycle.Running || j.GetWorkerId() != "w2" {
		t.Errorf("job %s after forged results, want RUNNING on w2", describe(j))
	}
	if logs := r.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "does not hold the attempt") ||
		!strings.Contains(logs, "holder=w2") {
		t.Errorf("no warning naming the holder:\n%s", logs)
	}

	// A stale attempt's result is fenced as before, whoever sends it.
	r.result(completed("j1", 7, "w2"))
	if st := r.e.Stats(); st.StaleResults != 1 {
		t.Errorf("stats %+v: want the stale result fenced", st)
	}

	r.result(completed("j1", 1, "w2"))
	j := r.waitState("j1", lifecycle.Completed, 1)
	if j.GetResultPtr() != "memory://echo/j1" || j.GetWorkerId() != "w2" {
		t.Errorf("job %s result %q, want w2's", describe(j), j.GetResultPtr())
	}
}

// A topic dispatch names no worker until one confirms it: the queue group
// picked one, and the first result for the current attempt is that
// worker's word. (A worker of pkg/worker confirms a job that runs longer
// than AckDelay; from then on only it can finish the job.)
func TestUnconfirmedTopicDispatchTakesItsFirstResult(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.bus.fallback("", silence())
	r.submit(request("j1", "job.echo"), "t", "")
	if j := r.waitState("j1", lifecycle.Dispatched, 1); j.GetWorkerId() != "" {
		t.Fatalf("a topic dispatch names worker %q", j.GetWorkerId())
	}
	r.result(completed("j1", 1, "w1"))
	if j := r.waitState("j1", lifecycle.Completed, 1); j.GetWorkerId() != "w1" {
		t.Errorf("job %s, want completed by w1", describe(j))
	}
}

// Placement that dispatches on a worker's own subject names the worker from
// the start: another worker's result is refused even before it confirms.
// Placement on a topic (a worker that is not direct) names nobody until the
// confirmation, since the queue group may hand the job to another worker.
func TestPlacedDispatchNamesItsWorkerOnlyWhenDirect(t *testing.T) {
	t.Parallel()
	pools, err := placement.NewPools(placement.Config{Pools: []placement.Pool{
		{Name: "direct", Topics: []string{"job.direct"}, Strategy: placement.StrategyLeastLoaded},
		{Name: "shared", Topics: []string{"job.shared"}, Strategy: placement.StrategyLeastLoaded},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r := newRig(t, withConfig(func(c *scheduler.Config) { c.Placement = pools }))
	r.bus.fallback("", silence())
	r.heartbeat(&pb.Heartbeat{WorkerId: "w2", Topics: []string{"job.direct"}, Capacity: 4, Direct: true})
	r.heartbeat(&pb.Heartbeat{WorkerId: "w3", Topics: []string{"job.shared"}, Capacity: 4})

	r.submit(request("d1", "job.direct"), "t", "")
	if j := r.waitState("d1", lifecycle.Dispatched, 1); j.GetWorkerId() != "w2" {
		t.Fatalf("direct dispatch recorded worker %q, want w2", j.GetWorkerId())
	}
	if err := r.bus.resultOn(t, wire.ResultSubject("w1"), forged("d1", 1, "w1")); err != nil {
		t.Fatal(err)
	}
	if st := r.e.Stats(); st.ForeignResults != 1 {
		t.Errorf("stats %+v: want w1's result for w2's direct dispatch refused", st)
	}
	r.result(completed("d1", 1, "w2"))
	r.waitState("d1", lifecycle.Completed, 1)

	r.submit(request("s1", "job.shared"), "t", "")
	if j := r.waitState("s1", lifecycle.Dispatched, 1); j.GetWorkerId() != "" {
		t.Fatalf("a dispatch on the topic recorded worker %q", j.GetWorkerId())
	}
	if d := r.bus.dispatchesOf("s1"); len(d) != 1 || d[0].subject != "job.shared" {
		t.Fatalf("dispatches %+v, want one on job.shared", d)
	}
	r.result(completed("s1", 1, "w4")) // the queue group gave it to w4
	r.waitState("s1", lifecycle.Completed, 1)
}

// Results that name no attempt (the design document's workers) are applied
// by default without required identities, refused with them (or with
// DocumentWorkers refuse), and counted.
func TestDocumentWorkerResults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cfg     func(*scheduler.Config)
		subject string
		trusted bool
	}{
		{"default", func(*scheduler.Config) {}, wire.SubjectResult, true},
		{"refuse", func(c *scheduler.Config) { c.DocumentWorkers = scheduler.DocumentWorkersRefuse }, wire.SubjectResult, false},
		{"identity required", func(c *scheduler.Config) { c.RequireWorkerIdentity = true }, wire.ResultSubject("doc"), false},
		{"identity required, trusted", func(c *scheduler.Config) {
			c.RequireWorkerIdentity, c.DocumentWorkers = true, scheduler.DocumentWorkersTrust
		}, wire.ResultSubject("doc"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, withConfig(tc.cfg))
			r.bus.fallback("", silence()) // document workers do not confirm
			r.submit(request("j1", "job.echo"), "t", "")
			r.waitState("j1", lifecycle.Dispatched, 1)
			if err := r.bus.resultOn(t, tc.subject, wire.JobResultPacket("t", "doc", completed("j1", 0, "doc"))); err != nil {
				t.Fatal(err)
			}
			if tc.trusted {
				r.waitState("j1", lifecycle.Completed, 1)
				return
			}
			if st := r.e.Stats(); st.UntrustedResults != 1 || st.Completed != 0 {
				t.Errorf("stats %+v: want the attempt-0 result refused", st)
			}
			if !strings.Contains(r.logs.String(), "names no attempt") {
				t.Errorf("refusal not logged:\n%s", r.logs.String())
			}
			r.result(completed("j1", 1, "doc"))
			r.waitState("j1", lifecycle.Completed, 1)
		})
	}
}

func TestDocumentWorkersConfigIsChecked(t *testing.T) {
	t.Parallel()
	cfg := fastConfig()
	cfg.Bus, cfg.Safety, cfg.Registry, cfg.Strategy = &fakeBus{}, scheduler.NewSafetyStub(), scheduler.NewMemoryRegistry(), scheduler.NewNaiveStrategy()
	cfg.DocumentWorkers = "maybe"
	if _, err := scheduler.New(cfg); err == nil || !strings.Contains(err.Error(), "DocumentWorkers") {
		t.Errorf("New with DocumentWorkers %q: %v", cfg.DocumentWorkers, err)
	}
	cfg.DocumentWorkers, cfg.ID = "", "a b"
	if _, err := scheduler.New(cfg); err == nil || !strings.Contains(err.Error(), "Config.ID") {
		t.Errorf("New with ID %q: %v", cfg.ID, err)
	}
}
