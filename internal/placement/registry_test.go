package placement_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// A job that needs a capability or label runs only where it exists; one
// that nothing can run says why, as an error that is not "wait".
func TestCapabilityAndLabelRouting(t *testing.T) {
	t.Parallel()
	cfg := placement.Config{Pools: []placement.Pool{
		{Name: "gpu", Topics: []string{"job.llm.*"}, Capabilities: []string{"gpu"}},
		{Name: "eu", Topics: []string{"job.eu.>"}, Labels: map[string]string{"region": "eu"}},
	}}
	for _, tc := range []struct {
		name   string
		job    func(r *rig) *placement.Job
		worker string // the worker chosen; "" when err
		err    string
		is     error
	}{
		{name: "no requirement goes anywhere", job: func(r *rig) *placement.Job { return r.job("j", "job.echo") }, worker: "*"},
		{name: "capability", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needs("gpu")) }, worker: "w-gpu"},
		{name: "two capabilities", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needs("python", "gpu")) }, worker: "w-gpu"},
		{name: "label", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needsLabel("region", "eu")) }, worker: "w-gpu"},
		{name: "label value", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needsLabel("region", "us")) }, worker: "w-cpu"},
		{
			name: "missing capability", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needs("tpu")) },
			err: "no live worker with capability tpu", is: placement.ErrUnplaceable,
		},
		{
			name: "missing label", job: func(r *rig) *placement.Job { return r.job("j", "job.echo", needsLabel("region", "ap")) },
			err: "no live worker with label region=ap", is: placement.ErrUnplaceable,
		},
		{
			name: "requirements met only apart", job: func(r *rig) *placement.Job {
				return r.job("j", "job.echo", needs("gpu"), needsLabel("region", "us"))
			},
			err: "no live worker with capability gpu and label region=us", is: placement.ErrNoWorker,
		},
		{
			name: "topic nobody serves", job: func(r *rig) *placement.Job { return r.job("j", "job.x") },
			err: "no live worker serves job.x", is: placement.ErrNoWorker,
		},
		{name: "pool capability", job: func(r *rig) *placement.Job { return r.job("j", "job.llm.chat") }, worker: "w-gpu"},
		{name: "pool label", job: func(r *rig) *placement.Job { return r.job("j", "job.eu.a") }, worker: "w-gpu"},
		{
			name: "pool capability nobody has", job: func(r *rig) *placement.Job { return r.job("j", "job.llm.embed") },
			err: "no live worker with capability gpu", is: placement.ErrUnplaceable,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, cfg)
			r.beat(
				hb("w-cpu", 4, caps("echo", "python"), labels("region", "us"), topics("job.echo", "job.eu.a", "job.llm.chat", "job.llm.embed")),
				hb("w-gpu", 4, caps("echo", "python", "gpu"), labels("region", "eu", "gpu", "h100"), topics("job.echo", "job.eu.a", "job.llm.chat")),
			)
			job := tc.job(r)
			d, err := r.reg.Place(job, nil)
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("Place = %+v, %v; want error %q", d, err, tc.err)
				}
				if !errors.Is(err, tc.is) || errors.Is(err, placement.ErrWait) {
					t.Errorf("errors.Is(%v, %v) = false, or it is ErrWait", err, tc.is)
				}
				return
			}
			if err != nil {
				t.Fatalf("Place: %v", err)
			}
			if tc.worker != "*" && d.WorkerID != tc.worker {
				t.Errorf("placed on %q, want %q", d.WorkerID, tc.worker)
			}
			if d.Subject != job.Topic {
				t.Errorf("subject %q, want the topic %q (not direct)", d.Subject, job.Topic)
			}
			if w, _ := r.reg.Worker(d.WorkerID); w.Assigned != 1 {
				t.Errorf("%s has %d assigned, want 1 at once", d.WorkerID, w.Assigned)
			}
		})
	}
}

// A burst spreads over a pool of equal workers, because each placement
// counts at once; past the pool's capacity it waits, saying so.
func TestBurstSpreads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		workers, capacity, jobs int
	}{
		{4, 2, 8},
		{4, 100, 8},
		{10, 1, 10},
		{3, 64, 180},
	} {
		t.Run(fmt.Sprintf("%dx%d-%d", tc.workers, tc.capacity, tc.jobs), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, placement.Config{})
			for i := range tc.workers {
				r.beat(hb(fmt.Sprintf("w%d", i), int32(tc.capacity)))
			}
			count := map[string]int{}
			for i := range tc.jobs {
				d, err := r.reg.Place(r.job(fmt.Sprint("j", i), "job.echo"), nil)
				if err != nil {
					t.Fatalf("job %d: %v", i, err)
				}
				count[d.WorkerID]++
			}
			want := tc.jobs / tc.workers
			for i := range tc.workers {
				if id := fmt.Sprintf("w%d", i); count[id] != want {
					t.Errorf("%s got %d jobs, want %d: %v", id, count[id], want, count)
				}
			}
		})
	}
	t.Run("full", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "gpu", Topics: []string{"job.echo"}}}})
		r.beat(hb("w0", 2), hb("w1", 2))
		for i := range 4 {
			if _, err := r.reg.Place(r.job(fmt.Sprint("j", i), "job.echo"), nil); err != nil {
				t.Fatal(err)
			}
		}
		_, err := r.reg.Place(r.job("j4", "job.echo"), nil)
		var full *placement.PoolFullError
		if !errors.As(err, &full) || err.Error() != "pool gpu full: 4 of 4 slots busy" {
			t.Fatalf("fifth job: %v, want pool gpu full: 4 of 4 slots busy", err)
		}
		if !errors.Is(err, placement.ErrWait) || !errors.Is(err, placement.ErrPoolFull) || errors.Is(err, placement.ErrUnplaceable) || !placement.PoolWide(err) {
			t.Errorf("%v: want ErrWait, ErrPoolFull, pool-wide, not ErrUnplaceable", err)
		}
		on, _ := r.reg.AssignedTo("j1")
		r.reg.Release(on, "j1")
		r.reg.Release("", "j3") // either worker: the registry knows
		for i := range 2 {
			if _, err := r.reg.Place(r.job(fmt.Sprint("k", i), "job.echo"), nil); err != nil {
				t.Errorf("after releases: %v", err)
			}
		}
	})
}

// Most free capacity first, then the lowest load; reported active jobs
// count when they exceed the placed ones; direct workers get their subject.
func TestLeastLoadedOrder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		hbs  []*pb.Heartbeat
		want string
	}{
		{"more free", []*pb.Heartbeat{hb("a", 4, active(3)), hb("b", 4, active(1)), hb("c", 2)}, "b"},
		{"bigger", []*pb.Heartbeat{hb("a", 4), hb("b", 8), hb("c", 2)}, "b"},
		{"lower load", []*pb.Heartbeat{hb("a", 4, load(80)), hb("b", 4, load(10)), hb("c", 4, load(50))}, "b"},
		{"gpu counts as load", []*pb.Heartbeat{hb("a", 4, func(h *pb.Heartbeat) { h.GpuUtilization = 90 }), hb("b", 4, load(30))}, "b"},
		{"free before load", []*pb.Heartbeat{hb("a", 4, load(90)), hb("b", 4, load(0), active(1))}, "a"},
		{"draining skipped", []*pb.Heartbeat{hb("a", 8, func(h *pb.Heartbeat) { h.Draining = true }), hb("b", 1)}, "b"},
		{"over capacity", []*pb.Heartbeat{hb("a", 2, active(5)), hb("b", 1)}, "b"},
		{"capacity 0 is 1", []*pb.Heartbeat{hb("a", 0, active(1)), hb("b", 0)}, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, placement.Config{})
			r.beat(tc.hbs...)
			d, err := r.reg.Place(r.job("j", "job.echo"), nil)
			if err != nil || d.WorkerID != tc.want {
				t.Fatalf("Place = %+v, %v; want %s", d, err, tc.want)
			}
		})
	}
	t.Run("direct", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{})
		r.beat(hb("w-1", 1, func(h *pb.Heartbeat) { h.Direct = true }))
		d, err := r.reg.Place(r.job("j", "job.echo"), nil)
		if err != nil || d.WorkerID != "w-1" || d.Subject != "sys.worker.w-1.job" {
			t.Fatalf("Place = %+v, %v; want w-1 on sys.worker.w-1.job", d, err)
		}
	})
}

// Reasons that are not about capacity or requirements.
func TestUnplaceableReasons(t *testing.T) {
	t.Parallel()
	t.Run("draining", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{})
		r.beat(hb("a", 4, func(h *pb.Heartbeat) { h.Draining = true }))
		_, err := r.reg.Place(r.job("j", "job.echo"), nil)
		if err == nil || err.Error() != "every live worker serving job.echo is draining" || !errors.Is(err, placement.ErrUnplaceable) || !placement.PoolWide(err) {
			t.Fatalf("Place: %v", err)
		}
	})
	t.Run("reserved for another pool", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "echo", Topics: []string{"job.echo"}}}})
		r.beat(hb("a", 4, func(h *pb.Heartbeat) { h.Pool = "gpu" }))
		_, err := r.reg.Place(r.job("j", "job.echo"), nil)
		if err == nil || err.Error() != "no live worker of pool echo serves job.echo" {
			t.Fatalf("Place: %v", err)
		}
	})
	t.Run("only the job's workers are full", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{})
		r.beat(hb("a", 1, caps("gpu")), hb("b", 4))
		if _, err := r.reg.Place(r.job("j1", "job.echo", needs("gpu")), nil); err != nil {
			t.Fatal(err)
		}
		_, err := r.reg.Place(r.job("j2", "job.echo", needs("gpu")), nil)
		if err == nil || err.Error() != "pool job.echo full: 1 of 1 slots busy on workers with capability gpu" ||
			!errors.Is(err, placement.ErrWait) || placement.PoolWide(err) {
			t.Fatalf("Place: %v", err)
		}
	})
	t.Run("only the topic's workers are full", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "llm", Topics: []string{"job.llm.*"}}}})
		r.beat(hb("a", 1, topics("job.llm.chat")), hb("b", 1, topics("job.llm.embed")))
		if _, err := r.reg.Place(r.job("j1", "job.llm.chat"), nil); err != nil {
			t.Fatal(err)
		}
		_, err := r.reg.Place(r.job("j2", "job.llm.chat"), nil)
		if err == nil || err.Error() != "pool llm full for job.llm.chat: 1 of 1 slots busy" || placement.PoolWide(err) {
			t.Fatalf("Place: %v", err)
		}
		if _, err := r.reg.Place(r.job("j3", "job.llm.embed"), nil); err != nil {
			t.Fatal(err)
		}
		_, err = r.reg.Place(r.job("j4", "job.llm.chat"), nil)
		if err == nil || err.Error() != "pool llm full: 2 of 2 slots busy" || !placement.PoolWide(err) {
			t.Fatalf("Place: %v", err)
		}
	})
	t.Run("a topic of a served pool", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "llm", Topics: []string{"job.llm.*"}}}})
		r.beat(hb("a", 1, topics("job.llm.chat")))
		_, err := r.reg.Place(r.job("j", "job.llm.embed"), nil)
		if err == nil || err.Error() != "no live worker serves job.llm.embed" || placement.PoolWide(err) {
			t.Fatalf("Place: %v (pool-wide %v)", err, placement.PoolWide(err))
		}
	})
}

// Workers serving wildcard topics take jobs of every topic they match.
func TestWildcardWorkers(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("wild", 4, topics("job.llm.>")))
	d, err := r.reg.Place(r.job("j1", "job.llm.chat.fast"), nil)
	if err != nil || d.WorkerID != "wild" {
		t.Fatalf("Place = %+v, %v", d, err)
	}
	// A topic set built before the worker joined learns of it.
	if _, err := r.reg.Place(r.job("j2", "job.llm.embed"), nil); err != nil {
		t.Fatal(err)
	}
	r.beat(hb("wild2", 8, topics("job.*.embed")))
	if d, err := r.reg.Place(r.job("j3", "job.llm.embed"), nil); err != nil || d.WorkerID != "wild2" {
		t.Fatalf("Place = %+v, %v; want wild2 (more free)", d, err)
	}
	if _, err := r.reg.Place(r.job("j4", "job.echo"), nil); err == nil {
		t.Fatal("job.echo placed on a job.llm.> worker")
	}
}

// Silent workers expire after three of their intervals; their jobs go with them.
func TestExpiry(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		interval int64 // ms; 0: the default 5s
		lives    time.Duration
	}{
		{"1s interval", 1000, 3 * time.Second},
		{"500ms interval", 500, 1500 * time.Millisecond},
		{"no interval", 0, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, placement.Config{})
			r.beat(hb("a", 1, func(h *pb.Heartbeat) { h.IntervalMs = tc.interval }))
			if _, err := r.reg.Place(r.job("j", "job.echo"), nil); err != nil {
				t.Fatal(err)
			}
			r.reg.Release("a", "j")
			v := r.reg.Version()
			r.clock.Advance(tc.lives - time.Millisecond)
			if got := r.reg.Expire(); len(got) != 0 || r.reg.Len() != 1 {
				t.Fatalf("just before %s: expired %v, live %d", tc.lives, got, r.reg.Len())
			}
			r.clock.Advance(time.Millisecond)
			_, err := r.reg.Place(r.job("j2", "job.echo"), nil)
			if err == nil || err.Error() != "no live worker serves job.echo" {
				t.Errorf("a silent worker took a job: %v", err)
			}
			if r.reg.Len() != 0 || len(r.reg.Workers()) != 0 {
				t.Error("a silent worker is listed as live")
			}
			if got := r.reg.Expire(); len(got) != 1 || got[0] != "a" {
				t.Errorf("Expire = %v, want [a]", got)
			}
			if r.reg.Version() == v {
				t.Error("expiry did not change the version")
			}
			// It comes back with its next heartbeat.
			r.beat(hb("a", 1))
			if d, err := r.reg.Place(r.job("j3", "job.echo"), nil); err != nil || d.WorkerID != "a" {
				t.Errorf("after it came back: %+v, %v", d, err)
			}
		})
	}
}

// A job counted against a worker stops counting when its heartbeats do not
// list it past the grace; held jobs keep counting.
func TestReconcileWithHeldJobs(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("a", 4))
	for _, id := range []string{"j1", "j2", "j3"} {
		if !r.reg.Assign("a", id) {
			t.Fatal("Assign to a known worker failed")
		}
	}
	held := func(ids ...string) func(*pb.Heartbeat) {
		return func(h *pb.Heartbeat) {
			for _, id := range ids {
				h.Held = append(h.Held, &pb.HeldJob{JobId: id, Attempt: 1})
			}
		}
	}
	assigned := func() int { w, _ := r.reg.Worker("a"); return w.Assigned }
	r.clock.Advance(time.Second)
	r.beat(hb("a", 4, held("j1")))
	if got := assigned(); got != 3 {
		t.Fatalf("within the grace: %d assigned, want 3", got)
	}
	r.clock.Advance(1500 * time.Millisecond)
	r.beat(hb("a", 4, held("j1", "j2")))
	if got := assigned(); got != 2 {
		t.Fatalf("after the grace: %d assigned, want 2 (j1, j2 held)", got)
	}
	if _, ok := r.reg.AssignedTo("j3"); ok {
		t.Error("j3 still assigned")
	}
	if r.reg.Assign("nobody", "j9") {
		t.Error("Assign to an unknown worker succeeded")
	}
	// A job moves when assigned elsewhere.
	r.beat(hb("b", 4))
	r.reg.Assign("b", "j1")
	if id, _ := r.reg.AssignedTo("j1"); id != "b" || assigned() != 1 {
		t.Errorf("j1 on %s, a has %d", id, assigned())
	}
	// Releasing from the wrong worker does nothing.
	r.reg.Release("a", "j1")
	if id, _ := r.reg.AssignedTo("j1"); id != "b" {
		t.Error("released from the wrong worker")
	}
}

// Version changes when a parked or blocked job might now be placed.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	steps := []struct {
		name   string
		do     func()
		change bool
	}{
		{"a worker joins", func() { r.beat(hb("a", 1)) }, true},
		{"the same heartbeat", func() { r.beat(hb("a", 1)) }, false},
		{"placement fills it", func() { _, _ = r.reg.Place(r.job("j", "job.echo"), nil) }, false},
		{"release frees it", func() { r.reg.Release("", "j") }, true},
		{"draining", func() { r.beat(hb("a", 1, func(h *pb.Heartbeat) { h.Draining = true })) }, false},
		{"not draining", func() { r.beat(hb("a", 1)) }, true},
		{"a capability", func() { r.beat(hb("a", 1, caps("gpu"))) }, true},
		{"more capacity", func() { r.beat(hb("a", 2, caps("gpu"))) }, true},
	}
	for _, s := range steps {
		v := r.reg.Version()
		s.do()
		if changed := r.reg.Version() != v; changed != s.change {
			t.Errorf("%s: version changed %v, want %v", s.name, changed, s.change)
		}
	}
}

// `cortex workers` lists the live workers with what they reported and
// the jobs placed on them.
func TestWorkersList(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("b", 2, caps("gpu"), labels("region", "eu")), hb("a", 4, load(42)))
	r.reg.Assign("b", "j1")
	infos := r.reg.Workers()
	if len(infos) != 2 || infos[0].GetHeartbeat().GetWorkerId() != "a" || infos[1].GetHeartbeat().GetWorkerId() != "b" {
		t.Fatalf("Workers = %v", infos)
	}
	b := infos[1]
	if b.GetAssigned() != 1 || b.GetLastSeenMs() != r.clock.Now().UnixMilli() || b.GetHeartbeat().GetLabels()["region"] != "eu" || b.GetHeartbeat().GetCapacity() != 2 {
		t.Errorf("worker b = %v", b)
	}
	if snap := r.reg.Snapshot(); len(snap) != 2 || snap["a"].GetCpuLoad() != 42 {
		t.Errorf("Snapshot = %v", snap)
	}
}

// A v1.0 worker reports no topics: least-loaded falls back to the queue
// group when no topic-aware worker serves the topic.
func TestLegacyWorkersFallBackToNaive(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(&pb.Heartbeat{WorkerId: "worker-echo-1", Capabilities: []string{"echo"}, ActiveJobs: 0})
	d, err := r.reg.Place(r.job("j", "job.echo"), nil)
	if err != nil || d.WorkerID != "" || d.Subject != "job.echo" {
		t.Fatalf("Place = %+v, %v; want the topic, no worker", d, err)
	}
	r.reg.Forget("worker-echo-1")
	if _, err := r.reg.Place(r.job("j2", "job.echo"), nil); err == nil {
		t.Fatal("placed with no worker at all")
	}
}

func TestNaiveStrategy(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{DefaultStrategy: placement.StrategyNaive})
	d, err := r.reg.Place(r.job("j", "job.anything"), nil)
	if err != nil || d != (placement.Decision{Subject: "job.anything"}) {
		t.Fatalf("Place = %+v, %v", d, err)
	}
}

// pinned is a strategy registered from outside the package: it places every
// job on the candidate whose id comes first.
type pinned struct{}

func (pinned) Place(job *placement.Job, c placement.Candidates) (placement.Decision, error) {
	best := -1
	for i := range c.Len() {
		if c.Free(i) > 0 && c.Fits(i) && (best < 0 || c.Worker(i).ID < c.Worker(best).ID) {
			best = i
		}
	}
	if best < 0 {
		return placement.Decision{}, c.Explain()
	}
	return placement.Decision{WorkerID: c.Worker(best).ID, Subject: c.Worker(best).Subject(job)}, nil
}

var (
	registerPinned    sync.Once
	registerPinnedErr error
)

func TestRegisterStrategy(t *testing.T) {
	t.Parallel()
	registerPinned.Do(func() { registerPinnedErr = placement.RegisterStrategy("test-pinned", pinned{}) })
	if registerPinnedErr != nil { // registered once per process: -count runs the test again
		t.Fatal(registerPinnedErr)
	}
	if err := placement.RegisterStrategy("test-pinned", pinned{}); err == nil {
		t.Error("registered a name twice")
	}
	if err := placement.RegisterStrategy(placement.StrategyNaive, pinned{}); err == nil {
		t.Error("replaced a built-in strategy")
	}
	r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "p", Topics: []string{"job.echo"}, Strategy: "test-pinned"}}})
	r.beat(hb("b", 4), hb("a", 1), hb("c", 4))
	if d, err := r.reg.Place(r.job("j1", "job.echo"), nil); err != nil || d.WorkerID != "a" {
		t.Fatalf("Place = %+v, %v; want a", d, err)
	}
	if d, err := r.reg.Place(r.job("j2", "job.echo"), nil); err != nil || d.WorkerID != "b" {
		t.Fatalf("Place = %+v, %v; want b (a is full)", d, err)
	}
	names := strings.Join(placement.StrategyNames(), ",")
	if !strings.Contains(names, "least-loaded") || !strings.Contains(names, "naive") || !strings.Contains(names, "test-pinned") {
		t.Errorf("StrategyNames = %s", names)
	}
}

// Many goroutines placing and releasing at once (run with -race).
func TestRegistryConcurrent(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	for i := range 8 {
		r.beat(hb(fmt.Sprint("w", i), 4))
	}
	done := make(chan struct{})
	for g := range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				id := fmt.Sprintf("g%d-%d", g, i)
				if d, err := r.reg.Place(r.job(id, "job.echo"), nil); err == nil {
					r.reg.Release(d.WorkerID, id)
				}
				if i%50 == 0 {
					r.beat(hb(fmt.Sprint("w", g), 4))
					_ = r.reg.Workers()
				}
			}
		}()
	}
	for range 8 {
		<-done
	}
	for _, w := range r.reg.Workers() {
		if w.GetAssigned() != 0 {
			t.Errorf("%s: %d assigned after every release", w.GetHeartbeat().GetWorkerId(), w.GetAssigned())
		}
	}
}

func held(ids ...string) func(*pb.Heartbeat) {
	return func(h *pb.Heartbeat) {
		h.ActiveJobs = int32(len(ids))
		for _, id := range ids {
			h.Held = append(h.Held, &pb.HeldJob{JobId: id, Attempt: 1})
		}
	}
}

// A slot freed here (a result, a refusal, a lost lease) is free at once,
// not at the worker's next heartbeat, and a heartbeat sent before the
// release that arrives after it does not take the slot again. Jobs a worker
// holds that were not placed here still fill its slots.
func TestReleasedSlotIsFreeAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("w1", 1, topics("job.echo")))
	if _, err := r.reg.Place(r.job("j1", "job.echo"), nil); err != nil {
		t.Fatal(err)
	}
	r.beat(hb("w1", 1, topics("job.echo"), held("j1")))
	if _, err := r.reg.Place(r.job("j2", "job.echo"), nil); err == nil || err.Error() != "worker w1 full: 1 of 1 slots busy" {
		t.Fatalf("Place on a full worker: %v", err)
	}
	v := r.reg.Version()
	r.reg.Release("", "j1")
	if r.reg.Version() == v {
		t.Error("a release that frees a slot does not change the version")
	}
	if w, _ := r.reg.Worker("w1"); w.Free() != 1 {
		t.Fatalf("free after the release: %d, want 1", w.Free())
	}
	r.beat(hb("w1", 1, topics("job.echo"), held("j1"))) // sent before the result
	if w, _ := r.reg.Worker("w1"); w.Free() != 1 {
		t.Fatalf("a late heartbeat took the released slot again: free %d", w.Free())
	}
	// A job the worker holds that this registry never placed fills a slot
	// until the worker stops listing it, or it is released here.
	r.beat(hb("w1", 1, topics("job.echo"), held("other")))
	if w, _ := r.reg.Worker("w1"); w.Free() != 0 || w.Unplaced != 1 {
		t.Fatalf("held elsewhere: free %d unplaced %d, want 0 and 1", w.Free(), w.Unplaced)
	}
	r.reg.Release("", "other")
	if w, _ := r.reg.Worker("w1"); w.Free() != 1 {
		t.Fatalf("free after releasing the unplaced job: %d", w.Free())
	}
	// A worker that reports a count but no list is taken at its word.
	r.beat(hb("w2", 2, topics("job.x"), active(2)))
	if w, _ := r.reg.Worker("w2"); w.Free() != 0 {
		t.Fatalf("count-only worker: free %d, want 0", w.Free())
	}
}

// The same for a direct worker, whose released jobs are remembered by the
// worker's own entry until its heartbeats stop listing them.
func TestReleasedSlotIsFreeAtOnceDirect(t *testing.T) {
	t.Parallel()
	direct := func(h *pb.Heartbeat) { h.Direct = true }
	r := newRig(t, placement.Config{})
	r.beat(hb("w1", 1, topics("job.echo"), direct))
	if _, err := r.reg.Place(r.job("j1", "job.echo"), nil); err != nil {
		t.Fatal(err)
	}
	r.beat(hb("w1", 1, topics("job.echo"), direct, held("j1")))
	r.reg.Release("", "j1")
	r.beat(hb("w1", 1, topics("job.echo"), direct, held("j1"))) // sent before the result
	if w, _ := r.reg.Worker("w1"); w.Free() != 1 || w.Assigned != 0 || w.Unplaced != 0 {
		t.Fatalf("a late heartbeat: free %d assigned %d unplaced %d, want 1, 0, 0", w.Free(), w.Assigned, w.Unplaced)
	}
	r.beat(hb("w1", 1, topics("job.echo"), direct)) // it no longer holds it
	// Placed again (a retry), released again: counted once, then not.
	if _, err := r.reg.Place(r.job("j1", "job.echo"), nil); err != nil {
		t.Fatal(err)
	}
	if w, _ := r.reg.Worker("w1"); w.Assigned != 1 || w.Free() != 0 {
		t.Fatalf("placed again: assigned %d free %d", w.Assigned, w.Free())
	}
	r.reg.Release("w1", "j1")
	if w, _ := r.reg.Worker("w1"); w.Assigned != 0 || w.Free() != 1 {
		t.Fatalf("released again: assigned %d free %d", w.Assigned, w.Free())
	}
}

// PlaceAt places at the time it is given, not at its clock's: a worker is
// live until then or not, whatever the clock says. Place and PlaceAt of the
// zero time read the clock. WallClock says whose clock a registry reads.
func TestPlaceAt(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	if r.reg.WallClock() {
		t.Error("a registry with RegistryOptions.Now says it reads the wall clock")
	}
	if !placement.NewRegistry(placement.RegistryOptions{}).WallClock() {
		t.Error("a registry without RegistryOptions.Now says it does not read the wall clock")
	}
	r.beat(hb("a", 4, func(h *pb.Heartbeat) { h.IntervalMs = 1000 })) // live for 3 s
	start := r.clock.Now()
	if d, err := r.reg.PlaceAt(r.job("j1", "job.echo"), nil, start.Add(2*time.Second)); err != nil || d.WorkerID != "a" {
		t.Fatalf("PlaceAt within the worker's life = %+v, %v; want a", d, err)
	}
	if _, err := r.reg.PlaceAt(r.job("j2", "job.echo"), nil, start.Add(3*time.Second)); err == nil || err.Error() != "no live worker serves job.echo" {
		t.Errorf("PlaceAt past the worker's life placed, or said %v", err)
	}
	if d, err := r.reg.PlaceAt(r.job("j3", "job.echo"), nil, time.Time{}); err != nil || d.WorkerID != "a" {
		t.Errorf("PlaceAt of the zero time (the clock's: the worker is live) = %+v, %v; want a", d, err)
	}
	r.clock.Advance(3 * time.Second)
	if _, err := r.reg.Place(r.job("j4", "job.echo"), nil); err == nil {
		t.Error("Place placed on a worker its clock says is gone")
	}
}
