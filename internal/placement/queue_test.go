package placement_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/placement"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

func push(t testing.TB, r *rig, jobs ...*placement.Job) {
	t.Helper()
	for _, j := range jobs {
		if err := r.qs.Push(j); err != nil {
			t.Fatalf("Push %s: %v", j.ID, err)
		}
	}
}

func ids(jobs []*placement.Job) string {
	s := make([]string, len(jobs))
	for i, j := range jobs {
		s[i] = j.ID
	}
	return strings.Join(s, " ")
}

// On a saturated single-slot worker, queued jobs leave in priority order,
// each priority first in, first out; UNSPECIFIED counts as INTERACTIVE.
func TestPriorityOrderOnSingleSlotWorker(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("w", 1))
	push(t, r,
		r.job("b1", "job.echo", prio(batch)),
		r.job("i1", "job.echo", prio(interactive)),
		r.job("c1", "job.echo", prio(critical)),
		r.job("u1", "job.echo"), // unspecified
		r.job("b2", "job.echo", prio(batch)),
		r.job("c2", "job.echo", prio(critical)),
		r.job("i2", "job.echo", prio(interactive)),
	)
	var order []*placement.Job
	for range 10 {
		started := r.dispatch(t, "job.echo")
		if len(started) > 1 {
			t.Fatalf("a single-slot worker took %d jobs at once", len(started))
		}
		if len(started) == 0 {
			break
		}
		order = append(order, started[0])
		if reason := r.qs.Reason("b2"); started[0].ID != "b2" && reason != "worker w full: 1 of 1 slots busy" {
			t.Errorf("b2 waits because %q", reason)
		}
		r.clock.Advance(time.Millisecond)
		r.finish(started[0])
	}
	if got, want := ids(order), "c1 c2 i1 u1 i2 b1 b2"; got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if r.qs.Len() != 0 {
		t.Errorf("%d jobs left", r.qs.Len())
	}
}

// Aging: BATCH work under a steady flood of CRITICAL work gets through,
// after two aging steps and the CRITICAL work queued before that.
func TestAgingLetsBatchThrough(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{AgingStep: 10 * time.Second})
	r.beat(hb("w", 1, func(h *pb.Heartbeat) { h.IntervalMs = 3_600_000 }))
	push(t, r, r.job("batch", "job.echo", prio(batch)))
	start := r.clock.Now()
	n := 0
	var ranAt time.Duration
	for sec := 0; sec < 200 && ranAt == 0; sec++ {
		// Two CRITICAL jobs arrive per second; one runs per second.
		push(t, r, r.job(fmt.Sprint("c", n), "job.echo", prio(critical)), r.job(fmt.Sprint("c", n+1), "job.echo", prio(critical)))
		n += 2
		started := r.dispatch(t, "job.echo")
		if len(started) != 1 {
			t.Fatalf("second %d: started %d jobs on one slot", sec, len(started))
		}
		if started[0].ID == "batch" {
			ranAt = r.clock.Now().Sub(start)
		}
		r.clock.Advance(time.Second)
		r.finish(started[0])
	}
	if ranAt == 0 {
		t.Fatal("the BATCH job never ran under a flood of CRITICAL jobs")
	}
	// It is CRITICAL after 20s, behind the ~40 CRITICAL jobs queued by then.
	if ranAt < 20*time.Second || ranAt > 45*time.Second {
		t.Errorf("the BATCH job ran after %s, want between 20s and 45s", ranAt)
	}
}

// With no_aging, priority is strict: a BATCH job waits as long as CRITICAL
// work keeps coming, however long that is.
func TestNoAgingKeepsPriorityStrict(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{NoAging: true})
	if step := r.pools.AgingStep(); step != 0 {
		t.Fatalf("aging step %s with no_aging, want 0", step)
	}
	r.beat(hb("w", 1, func(h *pb.Heartbeat) { h.IntervalMs = 3_600_000 }))
	push(t, r, r.job("batch", "job.echo", prio(batch)))
	for sec := 0; sec < 300; sec++ { // ten times the default aging step
		push(t, r, r.job(fmt.Sprint("c", sec), "job.echo", prio(critical)))
		started := r.dispatch(t, "job.echo")
		if len(started) != 1 || started[0].ID == "batch" {
			t.Fatalf("second %d: started %v; want the CRITICAL job", sec, ids(started))
		}
		r.clock.Advance(time.Second)
		r.finish(started[0])
	}
	if started := r.dispatch(t, "job.echo"); len(started) != 1 || started[0].ID != "batch" {
		t.Fatalf("with the CRITICAL work done, started %v; want batch", ids(started))
	}
}

// no_aging and aging_step exclude each other.
func TestNoAgingWithAgingStepIsAnError(t *testing.T) {
	t.Parallel()
	if _, err := placement.NewPools(placement.Config{NoAging: true, AgingStep: time.Second}); err == nil || !strings.Contains(err.Error(), "no_aging") {
		t.Fatalf("NewPools: %v, want an error naming no_aging", err)
	}
}

// Without waiting, priority holds: aging does not reorder fresh jobs.
func TestAgingOneLevelPerStep(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{AgingStep: 10 * time.Second})
	push(t, r, r.job("b", "job.echo", prio(batch)))
	r.clock.Advance(5 * time.Second)
	push(t, r, r.job("i", "job.echo", prio(interactive)))
	q := r.qs.Queue("job.echo")
	if got := q.Next().ID; got != "i" {
		t.Fatalf("after 5s: next %s, want i", got)
	}
	r.clock.Advance(5 * time.Second) // b is INTERACTIVE since 0+10s, i since 5s
	if got := q.Next().ID; got != "i" {
		t.Fatalf("after 10s: next %s, want i (at the level longer)", got)
	}
	push(t, r, r.job("i2", "job.echo", prio(interactive)))
	r.qs.Start(q.Next())
	if got := q.Next().ID; got != "b" {
		t.Fatalf("next %s, want b (INTERACTIVE since 10s, i2 since now)", got)
	}
	r.clock.Advance(10 * time.Second) // b is CRITICAL now
	push(t, r, r.job("c", "job.echo", prio(critical)))
	if got := q.Next().ID; got != "b" {
		t.Fatalf("next %s, want b (CRITICAL since 20s, c since now)", got)
	}
}

// A tenant flooding the pool cannot starve a light one: a saturated pool is
// shared by weight.
func TestFairShareBetweenTenants(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                 string
		weightA, weightB     int
		floodA, floodB, runs int
		wantA, wantB         int // of the first runs
	}{
		{"flood next to ten", 1, 1, 10_000, 10, 20, 10, 10},
		{"weights 3:1", 3, 1, 1000, 1000, 400, 300, 100},
		{"weights 1:4", 1, 4, 1000, 1000, 500, 100, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, placement.Config{
				Tenants:           []placement.Tenant{{Name: "a", Weight: tc.weightA}, {Name: "b", Weight: tc.weightB}},
				DefaultMaxPending: 20_000,
			})
			r.beat(hb("w", 1, func(h *pb.Heartbeat) { h.IntervalMs = 3_600_000 }))
			for i := range tc.floodA {
				push(t, r, r.job(fmt.Sprint("a", i), "job.echo", tenant("a")))
			}
			for i := range tc.floodB {
				push(t, r, r.job(fmt.Sprint("b", i), "job.echo", tenant("b")))
			}
			count := map[string]int{}
			for range tc.runs {
				started := r.dispatch(t, "job.echo")
				if len(started) != 1 {
					t.Fatalf("started %d", len(started))
				}
				count[started[0].Tenant]++
				r.finish(started[0])
			}
			if abs(count["a"]-tc.wantA) > 2 || abs(count["b"]-tc.wantB) > 2 {
				t.Errorf("of the first %d runs a got %d, b %d; want %d, %d", tc.runs, count["a"], count["b"], tc.wantA, tc.wantB)
			}
		})
	}
}

// Priority comes before fairness: a light tenant's CRITICAL job passes a
// flood of INTERACTIVE work at once.
func TestPriorityBeforeTenantShare(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	for i := range 100 {
		push(t, r, r.job(fmt.Sprint("a", i), "job.echo", tenant("a")))
	}
	push(t, r, r.job("urgent", "job.echo", tenant("b"), prio(critical)))
	if got := r.qs.Queue("job.echo").Next().ID; got != "urgent" {
		t.Fatalf("next %s, want urgent", got)
	}
}

// A tenant at MaxConcurrent waits, says why, and goes on when a job of its
// finishes; other tenants are not held up.
func TestTenantConcurrencyLimit(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{Tenants: []placement.Tenant{{Name: "acme", MaxConcurrent: 2}}})
	r.beat(hb("w", 100))
	for i := range 5 {
		push(t, r, r.job(fmt.Sprint("acme", i), "job.echo", tenant("acme"), prio(critical)))
	}
	for i := range 3 {
		push(t, r, r.job(fmt.Sprint("other", i), "job.echo", tenant("other"), prio(batch)))
	}
	started := r.dispatch(t, "job.echo")
	if got, want := ids(started), "acme0 acme1 other0 other1 other2"; got != want {
		t.Fatalf("started %q, want %q", got, want)
	}
	if got := r.qs.Running("acme"); got != 2 {
		t.Errorf("acme runs %d", got)
	}
	if got := r.qs.Reason("acme2"); got != "tenant acme at its limit of 2" {
		t.Errorf("acme2 waits because %q", got)
	}
	if r.qs.Queue("job.echo").Next() != nil {
		t.Error("Next offered a job of a tenant at its limit")
	}
	r.finish(started[0])
	if got := ids(r.dispatch(t, "job.echo")); got != "acme2" {
		t.Errorf("after one finished: started %q, want acme2", got)
	}
	// A job readmitted (its worker refused it) stops counting as running.
	r.qs.Readmit(started[1])
	if got := r.qs.Running("acme"); got != 1 {
		t.Errorf("after a readmit acme runs %d, want 1", got)
	}
	if got := ids(r.dispatch(t, "job.echo")); got != "acme1" {
		t.Errorf("started %q, want acme1 again (it waited longest)", got)
	}
	// The limit spans pools.
	push(t, r, r.job("acme-x", "job.other", tenant("acme")))
	r.beat(hb("x", 4, topics("job.other")))
	if got := r.dispatch(t, "job.other"); len(got) != 0 {
		t.Errorf("started %q in another pool past the tenant's limit", ids(got))
	}
}

// The bounds refuse with the reasons, retryably; jobs coming back are not
// refused; the queues stay bounded under a flood.
func TestBounds(t *testing.T) {
	t.Parallel()
	cfg := placement.Config{
		Pools: []placement.Pool{
			{Name: "echo", Topics: []string{"job.echo"}, MaxPending: 5},
			{Name: "gpu", Topics: []string{"job.gpu"}, MaxPending: 100, TenantMaxPending: 2},
		},
		Tenants:         []placement.Tenant{{Name: "acme", MaxPending: 3}},
		MaxPendingTotal: 20,
	}
	for _, tc := range []struct {
		name    string
		fill    func(r *rig) // pushes that succeed
		refused *placement.Job
		reason  string
	}{
		{
			name: "pool",
			fill: func(r *rig) {
				for i := range 5 {
					push(t, r, r.job(fmt.Sprint("j", i), "job.echo", tenant(fmt.Sprint("t", i))))
				}
			},
			refused: &placement.Job{ID: "x", Topic: "job.echo"},
			reason:  "pool echo full: 5 jobs pending",
		},
		{
			name: "tenant",
			fill: func(r *rig) {
				push(t, r, r.job("j0", "job.echo", tenant("acme")), r.job("j1", "job.gpu", tenant("acme")), r.job("j2", "job.z", tenant("acme")))
			},
			refused: &placement.Job{ID: "x", Topic: "job.y", Tenant: "acme"},
			reason:  "tenant acme at its pending limit of 3",
		},
		{
			name: "tenant in pool",
			fill: func(r *rig) {
				push(t, r, r.job("j0", "job.gpu", tenant("zeta")), r.job("j1", "job.gpu", tenant("zeta")), r.job("j2", "job.gpu", tenant("other")))
			},
			refused: &placement.Job{ID: "x", Topic: "job.gpu", Tenant: "zeta"},
			reason:  "tenant zeta at its pending limit of 2 in pool gpu",
		},
		{
			name: "total",
			fill: func(r *rig) {
				for i := range 20 {
					push(t, r, r.job(fmt.Sprint("j", i), fmt.Sprint("job.t", i)))
				}
			},
			refused: &placement.Job{ID: "x", Topic: "job.new"},
			reason:  "scheduler full: 20 jobs pending",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, cfg)
			tc.fill(r)
			n := r.qs.Len()
			err := r.qs.Push(tc.refused)
			if err == nil || err.Error() != tc.reason {
				t.Fatalf("Push = %v, want %q", err, tc.reason)
			}
			var full *placement.QueueFullError
			if !errors.Is(err, placement.ErrQueueFull) || !errors.As(err, &full) || !full.Retryable() {
				t.Errorf("%v: want a retryable ErrQueueFull", err)
			}
			if r.qs.Len() != n {
				t.Errorf("a refused job was queued")
			}
			// A job that was admitted before comes back regardless.
			r.qs.Readmit(tc.refused)
			if r.qs.Len() != n+1 {
				t.Error("Readmit was refused at the bound")
			}
		})
	}
	t.Run("flood", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, placement.Config{DefaultMaxPending: 1000, MaxPendingTotal: 5000})
		refused := 0
		for i := range 100_000 {
			err := r.qs.Push(r.job(fmt.Sprint("j", i), fmt.Sprint("job.t", i%10), tenant(fmt.Sprint("t", i%1000))))
			if errors.Is(err, placement.ErrQueueFull) {
				refused++
			} else if err != nil {
				t.Fatal(err)
			}
		}
		if r.qs.Len() != 5000 || refused != 95_000 {
			t.Errorf("queued %d, refused %d; want 5000 and 95000", r.qs.Len(), refused)
		}
	})
}

// Cancelled jobs leave the queue and free their room.
func TestRemove(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{Pools: []placement.Pool{{Name: "echo", Topics: []string{"job.echo"}, MaxPending: 2}}})
	a, b := r.job("a", "job.echo"), r.job("b", "job.echo", prio(critical))
	push(t, r, a, b)
	if !r.qs.Remove("b") || r.qs.Remove("b") {
		t.Fatal("Remove of a queued job")
	}
	if got := r.qs.Queue("echo").Next(); got != a {
		t.Fatalf("next %v, want a", got)
	}
	push(t, r, r.job("c", "job.echo"))
	if r.qs.Reason("b") != "" {
		t.Error("a removed job has a reason")
	}
	r.qs.Start(a)
	if !r.qs.Remove("a") || r.qs.Running(placement.DefaultTenantName) != 0 {
		t.Error("removing a started job did not end its run")
	}
}

// Parked jobs let the others by and come back on Wake; a blocked pool gives
// its reason to every queued job.
func TestParkWakeAndReasons(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{})
	r.beat(hb("w", 4))
	push(t, r,
		r.job("gpu", "job.echo", needs("gpu"), prio(critical)),
		r.job("plain", "job.echo"),
	)
	started := r.dispatch(t, "job.echo")
	if ids(started) != "plain" {
		t.Fatalf("started %q, want plain (gpu parked)", ids(started))
	}
	if got := r.qs.Reason("gpu"); got != "no live worker with capability gpu" {
		t.Errorf("gpu waits because %q", got)
	}
	r.beat(hb("g", 1, caps("gpu")))
	r.qs.WakeAll()
	if got := ids(r.dispatch(t, "job.echo")); got != "gpu" {
		t.Errorf("after a gpu worker joined: started %q", got)
	}
	// Fill everything: the pool blocks.
	for i := range 10 {
		push(t, r, r.job(fmt.Sprint("f", i), "job.echo"))
	}
	r.dispatch(t, "job.echo")
	q := r.qs.Queue("job.echo")
	if q.Blocked() == "" || r.qs.Reason("f9") != "pool job.echo full: 5 of 5 slots busy" {
		t.Errorf("blocked %q, f9 waits because %q", q.Blocked(), r.qs.Reason("f9"))
	}
	if len(r.qs.Backlogged()) != 0 {
		t.Error("a blocked queue is backlogged")
	}
	q.Wake()
	if r.qs.Reason("f9") != "waiting in pool job.echo" || len(r.qs.Backlogged()) != 1 {
		t.Errorf("after Wake: %q", r.qs.Reason("f9"))
	}
}

// Every error says what it is to errors.Is, and nothing else.
func TestErrorsIs(t *testing.T) {
	t.Parallel()
	all := []error{placement.ErrWait, placement.ErrUnplaceable, placement.ErrQueueFull, placement.ErrPoolFull, placement.ErrNoWorker, placement.ErrTenantLimit}
	for _, tc := range []struct {
		err error
		is  []error
		msg string
	}{
		{&placement.PoolFullError{Pool: "gpu", Busy: 4, Slots: 4}, []error{placement.ErrWait, placement.ErrPoolFull}, "pool gpu full: 4 of 4 slots busy"},
		{&placement.NoWorkerError{Capability: "gpu"}, []error{placement.ErrUnplaceable, placement.ErrNoWorker}, "no live worker with capability gpu"},
		{&placement.NoWorkerError{Label: "region=eu"}, []error{placement.ErrUnplaceable, placement.ErrNoWorker}, "no live worker with label region=eu"},
		{&placement.NoWorkerError{Topic: "job.x"}, []error{placement.ErrUnplaceable, placement.ErrNoWorker}, "no live worker serves job.x"},
		{&placement.TenantLimitError{Tenant: "acme", Limit: 10}, []error{placement.ErrWait, placement.ErrTenantLimit}, "tenant acme at its limit of 10"},
		{&placement.QueueFullError{Bound: placement.BoundPool, Pool: "echo", Limit: 10000}, []error{placement.ErrQueueFull}, "pool echo full: 10000 jobs pending"},
		{&placement.QueueFullError{Bound: placement.BoundTenant, Tenant: "acme", Limit: 1000}, []error{placement.ErrQueueFull}, "tenant acme at its pending limit of 1000"},
	} {
		wrapped := fmt.Errorf("dispatch: %w", tc.err)
		if tc.err.Error() != tc.msg {
			t.Errorf("message %q, want %q", tc.err.Error(), tc.msg)
		}
		for _, s := range all {
			want := false
			for _, w := range tc.is {
				want = want || w == s
			}
			if errors.Is(wrapped, s) != want {
				t.Errorf("errors.Is(%q, %q) = %v, want %v", tc.msg, s, !want, want)
			}
		}
	}
}

func abs(n int) int { return max(n, -n) }

// StartNow starts a job at once only when nothing can be ahead of it: its
// pool has nothing pending and its tenant is under its limit.
func TestStartNow(t *testing.T) {
	t.Parallel()
	r := newRig(t, placement.Config{Tenants: []placement.Tenant{{Name: "acme", MaxConcurrent: 1}}})
	a := r.job("a", "job.echo", tenant("acme"))
	if !r.qs.StartNow(a) {
		t.Fatal("StartNow of a job with nothing ahead: false")
	}
	if r.qs.Running("acme") != 1 {
		t.Fatalf("running %d, want 1", r.qs.Running("acme"))
	}
	if r.qs.StartNow(r.job("b", "job.echo", tenant("acme"))) {
		t.Error("StartNow past the tenant's limit: true")
	}
	if r.qs.StartNow(a) {
		t.Error("StartNow of a known job: true")
	}
	if err := r.qs.Push(r.job("c", "job.other")); err != nil {
		t.Fatal(err)
	}
	if r.qs.StartNow(r.job("d", "job.other")) {
		t.Error("StartNow with a job pending in its pool: true")
	}
	if !r.qs.StartNow(r.job("e", "job.echo")) {
		t.Error("StartNow of another tenant's job: false")
	}
	r.qs.Readmit(a) // handed back: queued again, no longer running
	if r.qs.Running("acme") != 0 || r.qs.Reason("a") == "" {
		t.Errorf("after Readmit: running %d, reason %q", r.qs.Running("acme"), r.qs.Reason("a"))
	}
	r.qs.Remove("e")
	if r.qs.Remove("e") {
		t.Error("Remove of a removed job: true")
	}
}
