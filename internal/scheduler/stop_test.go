package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Stop lets the submission in hand finish its dispatch, and only then
// returns: the job is recorded as dispatched, never half-way.
func TestStopWaitsForTheDispatchInHand(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	hold := make(chan struct{})
	r.bus.script("", held(hold, ackBy("w-1")))
	submitted := make(chan error, 1)
	go func() {
		submitted <- r.bus.submit(t, submitPacket("t", request("in-hand", "job.echo")), "_INBOX.test.1")
	}()
	r.waitDispatches("in-hand", 1) // its publish is under way, and stuck
	stopped := make(chan struct{})
	go func() {
		r.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a dispatch was in hand")
	case <-time.After(50 * time.Millisecond):
	}
	close(hold)
	select {
	case <-stopped:
	case <-time.After(waitLimit):
		t.Fatal("Stop did not return")
	}
	if err := <-submitted; err != nil {
		t.Errorf("the intake handler = %v", err)
	}
	if _, a := r.answerOn("_INBOX.test.1"); !a.GetOk() {
		t.Errorf("answer = %v", a)
	}
	j := r.job("in-hand")
	if (j.GetState() != lifecycle.Dispatched && j.GetState() != lifecycle.Running) || j.GetAttempt() != 1 {
		t.Errorf("after Stop: %s", describe(j))
	}
}

// Once Stop has returned nothing is published; and no dispatch goes out
// whose answer the engine could no longer hear (its replies already
// drained), which would leave the job DISPATCHED with nobody to settle it.
func TestNoDispatchAfterTheRepliesAreDrained(t *testing.T) {
	t.Parallel()
	for round := range 5 {
		r := newRig(t, withConfig(func(c *scheduler.Config) {
			c.Tick, c.NoWorkerRetry = time.Millisecond, time.Millisecond
		}))
		r.bus.fallback("", noResponders())
		// Draining takes a round trip to the server.
		for _, s := range r.bus.subscriptions() {
			s.drainDelay = 5 * time.Millisecond
		}
		for i := range 50 {
			r.submit(request(fmt.Sprintf("busy-%d", i), "job.none"), "t", "")
		}
		systest.Eventually(t, waitLimit, "the timers to offer jobs again", func() bool { return r.e.Stats().NoResponders > 100 })
		r.stop()
		n := len(r.bus.dispatches())
		time.Sleep(20 * time.Millisecond) // would any timer still be running, it would have fired
		if after := len(r.bus.dispatches()); after != n {
			t.Errorf("round %d: %d dispatches after Stop returned", round, after-n)
		}
		if v := r.bus.violated(); len(v) != 0 {
			t.Fatalf("round %d: %d violations, first: %s", round, len(v), v[0])
		}
	}
}

// Two replicas on one store (watched, as a JetStream bucket is): each
// dispatch is one compare-and-set, so however the replicas race, every
// dispatch published is a recorded DISPATCHED transition, and a job a dead
// replica started is finished by the other.
func TestTwoReplicasShareOneStore(t *testing.T) {
	t.Parallel()
	store := newHistoryStore()
	store.watch = true
	mk := func(id string) *rig {
		// A lease of 10 x 30 ms: the heartbeats below come every 5 ms, and a
		// lease lost to a stall of a loaded machine (-race, parallel tests)
		// would start an attempt 2 this test does not expect.
		return newRig(t, func(r *rig) { r.store = store }, withConfig(func(c *scheduler.Config) {
			c.ID = id
			c.LeaseInterval = 30 * time.Millisecond
			c.LeaseMisses = 10
		}))
	}
	a, b := mk("sched-a"), mk("sched-b")
	for _, r := range []*rig{a, b} {
		r.bus.script("job.echo", noResponders(), noResponders())
		r.bus.fallback("job.echo", ackBy("w-"+r.cfg.ID))
	}
	const jobs = 20
	// Both workers heartbeat to both replicas, holding attempt 1 of every
	// job (a replica only counts the heartbeat of the job's own worker).
	held := make([]*pb.HeldJob, jobs)
	for i := range jobs {
		held[i] = &pb.HeldJob{JobId: fmt.Sprintf("shared-%d", i), Attempt: 1}
	}
	toA, toB := make(chan struct{}), make(chan struct{})
	aQuiet := make(chan struct{})
	var beating sync.WaitGroup
	beating.Go(func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		sendA := true
		for {
			for _, w := range []string{"w-sched-a", "w-sched-b"} {
				hb := &pb.Heartbeat{WorkerId: w, IntervalMs: 100, Held: held}
				if sendA {
					a.bus.heartbeat(t, hb)
				}
				b.bus.heartbeat(t, hb)
			}
			select {
			case <-toA:
				if sendA {
					sendA = false
					close(aQuiet)
				}
			case <-toB:
				return
			case <-tk.C:
			}
		}
	})
	defer func() {
		select {
		case <-toB:
		default:
			close(toB)
		}
		beating.Wait()
	}()

	for i := range jobs {
		r := a
		if i%2 == 1 {
			r = b
		}
		r.submit(request(fmt.Sprintf("shared-%d", i), "job.echo"), "t", "")
	}
	dispatchedWrites := 0
	for i := range jobs {
		id := fmt.Sprintf("shared-%d", i)
		a.waitState(id, lifecycle.Running, 1)
	}
	for i := range jobs {
		for _, j := range store.history(fmt.Sprintf("shared-%d", i)) {
			if j.GetState() == lifecycle.Dispatched {
				dispatchedWrites++
			}
		}
	}
	// Every job is visible to both.
	for _, r := range []*rig{a, b} {
		if q := r.query(&pb.JobQuery{State: lifecycle.Running}); len(q.GetJobs()) != jobs {
			t.Errorf("%s lists %d running jobs, want %d", r.cfg.ID, len(q.GetJobs()), jobs)
		}
	}
	if published := len(a.bus.dispatches()) + len(b.bus.dispatches()); published != dispatchedWrites {
		t.Errorf("%d dispatches published, %d DISPATCHED records: a dispatch without its compare-and-set", published, dispatchedWrites)
	}

	// Replica a dies, and both workers' attempts with it: b notices the
	// lost leases and runs every job again, on its worker (which confirms
	// each dispatch, ackBy). That worker heartbeats what it now holds, as
	// a live worker does: without it, an attempt 2 would lose its lease too
	// whenever a loaded machine kept this test from answering it within
	// the 300 ms lease (CI saw all three attempts lost so).
	close(toA)
	<-aQuiet
	a.stop()
	close(toB)
	beating.Wait()
	stopB := make(chan struct{})
	var beatingB sync.WaitGroup
	beatingB.Go(func() {
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for {
			var holds []*pb.HeldJob
			for i := range jobs {
				id := fmt.Sprintf("shared-%d", i)
				if j := b.job(id); j.GetAttempt() == 2 && j.GetWorkerId() == "w-sched-b" {
					holds = append(holds, &pb.HeldJob{JobId: id, Attempt: 2})
				}
			}
			b.bus.heartbeat(t, &pb.Heartbeat{WorkerId: "w-sched-b", IntervalMs: 100, Held: holds})
			select {
			case <-stopB:
				return
			case <-tk.C:
			}
		}
	})
	defer func() {
		close(stopB)
		beatingB.Wait()
	}()
	for i := range jobs {
		id := fmt.Sprintf("shared-%d", i)
		j := b.waitState(id, lifecycle.Running, 2)
		b.result(completed(id, 2, j.GetWorkerId()))
	}
	for i := range jobs {
		if j := b.job(fmt.Sprintf("shared-%d", i)); j.GetState() != lifecycle.Completed || j.GetWorkerId() != "w-sched-b" {
			t.Errorf("job %d = %s", i, describe(j))
		}
	}
}

// A replica that starts on a store another replica left behind (it died)
// picks up its jobs: a PENDING one is dispatched, one whose dispatch outcome
// was never recorded is offered again once its confirmation is overdue, and
// a RUNNING one whose worker is silent loses its lease.
func TestNewReplicaPicksUpTheJobsOfADeadOne(t *testing.T) {
	t.Parallel()
	store := newHistoryStore()
	store.watch = true
	ctx := context.Background()
	now := time.Now().UnixMilli()
	write := func(id string, edits ...func(j *pb.JobInfo)) {
		rec, err := store.Create(ctx, &pb.JobInfo{JobId: id, State: lifecycle.Pending, MaxAttempts: 3, TraceId: "trace-" + id,
			Request: request(id, "job.echo"), CreatedMs: now, UpdatedMs: now, PendingReason: "waiting to be dispatched"})
		if err != nil {
			t.Fatal(err)
		}
		for _, edit := range edits {
			next := proto.Clone(rec.Job).(*pb.JobInfo)
			edit(next)
			if rec, err = store.Update(ctx, rec, next); err != nil {
				t.Fatal(err)
			}
		}
	}
	dispatched := func(j *pb.JobInfo) {
		j.State, j.Attempt, j.PendingReason, j.AttemptStartedMs = lifecycle.Dispatched, 1, "", now
	}
	write("left-pending")
	write("left-dispatched", dispatched)
	write("left-running", dispatched, func(j *pb.JobInfo) { j.State, j.WorkerId = lifecycle.Running, "w-dead" })

	r := newRig(t, func(r *rig) {
		r.store = store
		// Workers that confirm serve the topic: a dispatch nobody confirmed failed.
		r.reg.UpdateHeartbeat(&pb.Heartbeat{WorkerId: "w-new", Topics: []string{"job.echo"}, Confirms: true, IntervalMs: 60_000})
	})
	r.bus.fallback("job.echo", ackBy("w-new"))
	r.waitState("left-pending", lifecycle.Running, 1)
	d := r.waitState("left-dispatched", lifecycle.Running, 2)
	if !strings.Contains(r.find("left-dispatched", func(j *pb.JobInfo) bool { return j.GetState() == lifecycle.Pending && j.GetAttempt() == 1 }).GetPendingReason(), "no worker confirmed attempt 1") {
		t.Errorf("left-dispatched:\n%s", r.describeHistory("left-dispatched"))
	}
	run := r.waitState("left-running", lifecycle.Running, 2)
	for _, j := range []*pb.JobInfo{d, run} {
		if j.GetWorkerId() != "w-new" {
			t.Errorf("%s = %s", j.GetJobId(), describe(j))
		}
	}
	if !strings.Contains(run.GetError(), "w-dead lost its lease") || run.GetFailedAttempts() != 1 {
		t.Errorf("left-running = %s", describe(run))
	}
	// (w-new does not heartbeat: its own leases lapse later, and the jobs go
	// round again; only the first dispatch by this replica matters here.)
	for id, attempt := range map[string]int32{"left-pending": 1, "left-dispatched": 2, "left-running": 2} {
		ds := r.bus.dispatchesOf(id)
		if len(ds) == 0 || ds[0].packet.GetTraceId() != "trace-"+id || ds[0].packet.GetJobRequest().GetAttempt() != attempt {
			t.Errorf("%s: first dispatch %v, want attempt %d with its trace", id, ds, attempt)
		}
	}
}

// A replica that takes over a job DISPATCHED before it started does not
// conclude "a worker that does not confirm" before it has heard the workers'
// heartbeats: a confirming worker heard a moment later still gets the job
// offered again at once.
func TestTakenOverDispatchWaitsForTheWorkersHeartbeats(t *testing.T) {
	t.Parallel()
	store := newHistoryStore()
	store.watch = true
	ctx := context.Background()
	past := time.Now().Add(-time.Second).UnixMilli()
	rec, err := store.Create(ctx, &pb.JobInfo{JobId: "taken-over", State: lifecycle.Pending, MaxAttempts: 3,
		Request: request("taken-over", "job.echo"), CreatedMs: past, UpdatedMs: past})
	if err != nil {
		t.Fatal(err)
	}
	next := proto.Clone(rec.Job).(*pb.JobInfo)
	next.State, next.Attempt, next.AttemptStartedMs = lifecycle.Dispatched, 1, past
	if _, err := store.Update(ctx, rec, next); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, func(r *rig) { r.store = store })
	r.bus.fallback("job.echo", ackBy("w-c"))
	// Well past its confirmation timeout, with no worker heard yet.
	time.Sleep(5 * r.cfg.AckTimeout)
	if j := r.job("taken-over"); j.GetState() != lifecycle.Dispatched || j.GetPendingReason() != "" {
		t.Fatalf("decided before hearing any heartbeat: %s", describe(j))
	}
	r.heartbeat(&pb.Heartbeat{WorkerId: "w-c", Topics: []string{"job.echo"}, Confirms: true, IntervalMs: 60_000})
	j := r.waitState("taken-over", lifecycle.Running, 2)
	if j.GetWorkerId() != "w-c" {
		t.Errorf("job = %s", describe(j))
	}
}

// Stop honours its context: with a dispatch stuck in hand, Stop returns
// ErrStopTimeout and the context's error once the context ends; the drain
// still finishes in the background, and the engine can be stopped (a no-op)
// and started again after it.
func TestStopHonoursItsContext(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	hold := make(chan struct{})
	r.bus.script("", held(hold, ackBy("w-1")))
	submitted := make(chan error, 1)
	go func() {
		submitted <- r.bus.submit(t, submitPacket("t", request("stuck", "job.echo")), "_INBOX.test.1")
	}()
	r.waitDispatches("stuck", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := r.e.Stop(ctx)
	if !errors.Is(err, scheduler.ErrStopTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want ErrStopTimeout and DeadlineExceeded", err)
	}
	close(hold)
	if err := <-submitted; err != nil {
		t.Errorf("the intake handler = %v", err)
	}
	// The drain ends: a second Stop waits for it and finds nothing to stop.
	if err := r.e.Stop(context.Background()); err != nil {
		t.Errorf("second Stop = %v", err)
	}
	if err := r.e.Start(context.Background()); err != nil {
		t.Fatalf("Start after the drain = %v", err)
	}
	if err := r.e.Stop(context.Background()); err != nil {
		t.Errorf("Stop after restart = %v", err)
	}
}
