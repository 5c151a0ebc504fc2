package worker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// A dispatch (attempt >= 1, with a reply subject) that runs is confirmed
// with a JobAck naming the job, the attempt and the worker, and its result
// carries the attempt.
func TestDispatchIsConfirmed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	req := e.job("d1", 1)
	waitAck(t, e.request(req), req, r.w.ID())
	g.release("d1", 1)
	p := e.results.waitResult(t, "d1")
	res := p.GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || res.GetAttempt() != 1 || res.GetResultPtr() != "memory://test/d1" ||
		res.GetWorkerId() != r.w.ID() || res.GetError() != "" || p.GetTraceId() != "trace-d1" {
		t.Errorf("result = %v", p)
	}
	// A later attempt of another job is confirmed with its own attempt.
	req = e.job("d2", 4)
	waitAck(t, e.request(req), req, r.w.ID())
	g.release("d2", 4)
	if res := e.results.waitResult(t, "d2").GetJobResult(); res.GetAttempt() != 4 || res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("result = %v", res)
	}
	if s := r.w.Stats(); s.Refused != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// A dispatch that finishes at once is confirmed by its result alone (no
// JobAck is promised for it); the result carries the attempt.
func TestShortDispatchYieldsItsResult(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	req := e.job("quick", 2)
	if err := e.observer.PublishRequest(wire.JobSubjectPrefix+e.kind, e.observer.NewInbox(), wire.JobRequestPacket("t", "s", req)); err != nil {
		t.Fatal(err)
	}
	res := e.results.waitResult(t, "quick").GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || res.GetAttempt() != 2 || res.GetWorkerId() != r.w.ID() {
		t.Errorf("result = %v", res)
	}
}

// At capacity a dispatch waits SlotWait for a slot, then is refused, so the
// scheduler can offer it elsewhere; once a slot is free, dispatches are
// confirmed again.
func TestDispatchRefusedAtCapacity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Concurrency: 1, SlotWait: 50 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	first := e.job("first", 1)
	waitAck(t, e.request(first), first, r.w.ID())
	waitRefusal(t, e.request(e.job("second", 1)), "at capacity")
	if s := r.w.Stats(); s.Refused != 1 || s.Active != 1 {
		t.Errorf("stats after the refusal = %+v", s)
	}

	g.release("first", 1)
	e.results.waitResult(t, "first")
	systest.Eventually(t, waitFor, "the first job to end", func() bool { return r.w.Stats().Active == 0 })
	third := e.job("third", 1)
	waitAck(t, e.request(third), third, r.w.ID())
	g.release("third", 1)
	e.results.waitResult(t, "third")
	if got := e.results.results("second"); len(got) != 0 {
		t.Errorf("the refused job ran: %v", got)
	}
	if s := r.w.Stats(); s.Refused != 1 || s.Completed != 2 {
		t.Errorf("stats = %+v", s)
	}
}

// Once shutdown has begun, the worker says so in a heartbeat at once and
// refuses the dispatches that still reach it ("draining"), while a job it
// holds runs on within the grace.
func TestDispatchRefusedWhileDraining(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Concurrency: 1, ShutdownGrace: time.Minute, Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	// The only slot is held by "long"; "backlog", published straight on the
	// topic, waits for it in the subscription's callback, so that "late",
	// dispatched next, waits in the subscription's buffer.
	long := e.job("long", 1)
	waitAck(t, e.request(long), long, r.w.ID())
	e.send(t, "backlog")
	systest.Eventually(t, waitFor, "backlog to wait for a slot", func() bool { return r.w.Stats().Received == 2 })
	late := e.request(e.job("late", 1))
	// The worker's connection has read "late" off the socket: it is in the
	// subscription's buffer, which a drain delivers.
	systest.Eventually(t, waitFor, "late to reach the worker", func() bool { return e.workerBus.Conn().Stats().InMsgs >= 3 })

	r.cancel()
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() && hb.GetDraining() },
		"a heartbeat with draining=true")
	// A dispatch sent now is refused, or finds nobody subscribed if the
	// server has already processed the drain: never taken.
	later := e.request(e.job("later", 1))

	// "long" ends; "backlog" (attempt 0, which cannot be refused) takes its
	// slot and runs; "late" is refused.
	g.release("long", 1)
	g.waitStarted(t, "backlog", 0)
	waitRefusal(t, late, "draining")
	if a := waitAnswerOrErr(t, later); a.err != nil {
		if !errors.Is(a.err, wire.ErrNoResponders) {
			t.Errorf("dispatch after the draining heartbeat: %v", a.err)
		}
	} else if ans := a.p.GetJobAnswer(); ans == nil || ans.GetError() != "draining" || !ans.GetRetryable() {
		t.Errorf("dispatch after the draining heartbeat answered %v", a.p)
	}
	// "backlog" is still running within the grace.
	if r.returned() || len(e.results.results("backlog")) != 0 {
		t.Fatal("the job running within the grace was cut short")
	}
	g.release("backlog", 0)
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, id := range []string{"long", "backlog"} {
		if res := e.results.waitResult(t, id).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
			t.Errorf("%s: %v", id, res)
		}
	}
	for _, id := range []string{"late", "later"} {
		if got := e.results.results(id); len(got) != 0 {
			t.Errorf("refused job %s ran: %v", id, got)
		}
	}
	if s := r.w.Stats(); s.Refused < 1 || s.Completed != 2 {
		t.Errorf("stats = %+v", s)
	}
}

// A handler that runs past the attempt's timeout_ms has its context
// cancelled (cause context.DeadlineExceeded), and the result is TIMEOUT.
func TestAttemptTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	req := e.job("slow", 1)
	req.TimeoutMs = 50
	e.publish(t, req)
	res := e.results.waitResult(t, "slow").GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_TIMEOUT || res.GetAttempt() != 1 || res.GetWorkerId() != r.w.ID() {
		t.Errorf("result = %v", res)
	}
	if msg := res.GetError(); !strings.Contains(msg, "timed out") || !strings.Contains(msg, "50ms") {
		t.Errorf("error = %q, want it to mention the 50ms timeout", msg)
	}
	if cause := g.cause("slow", 1); !errors.Is(cause, context.DeadlineExceeded) {
		t.Errorf("handler's context cause = %v, want context.DeadlineExceeded", cause)
	}
	// A job within its timeout is not touched.
	ok := e.job("fast", 1)
	ok.TimeoutMs = time.Minute.Milliseconds()
	e.publish(t, ok)
	g.waitStarted(t, "fast", 1)
	g.release("fast", 1)
	if res := e.results.waitResult(t, "fast").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job within its timeout: %v", res)
	}
	if s := r.w.Stats(); s.TimedOut != 1 || s.Completed != 1 || s.Failed != 0 {
		t.Errorf("stats = %+v", s)
	}
}

// A JobCancel on sys.worker.<id>.cancel cancels the handler's context of a
// job the worker holds; its result is CANCELLED. A cancel for a job it does
// not hold, or a packet that is no cancel, changes nothing.
func TestCancelHeldJob(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	keep, victim := e.job("keep", 1), e.job("victim", 2)
	waitAck(t, e.request(keep), keep, r.w.ID())
	waitAck(t, e.request(victim), victim, r.w.ID())

	cancel := func(jobID string) {
		t.Helper()
		p := wire.NewPacket("trace-cancel", "test-scheduler")
		p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: jobID, Reason: "user asked"}}
		if err := e.observer.Publish(wire.WorkerCancelSubject(r.w.ID()), p); err != nil {
			t.Fatal(err)
		}
	}
	cancel("unknown-job")
	if err := e.observer.Publish(wire.WorkerCancelSubject(r.w.ID()), wire.HeartbeatPacket("t", "x", &pb.Heartbeat{WorkerId: "x"})); err != nil {
		t.Fatal(err)
	}
	// Cancels are handled in order: once "victim" is cancelled, the two
	// packets before it have been handled.
	cancel("victim")
	res := e.results.waitResult(t, "victim").GetJobResult()
	if res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetAttempt() != 2 || res.GetError() != "job cancelled" {
		t.Errorf("cancelled job: %v", res)
	}
	if cause := g.cause("victim", 2); cause == nil {
		t.Error("the cancelled handler's context was not cancelled")
	}
	if cause := g.cause("keep", 1); cause != nil {
		t.Errorf("the other job's context was cancelled: %v", cause)
	}
	g.release("keep", 1)
	if res := e.results.waitResult(t, "keep").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job not cancelled: %v", res)
	}
	// Cancelling a job that has finished is harmless too, and the worker
	// takes jobs as before.
	cancel("keep")
	e.send(t, "after")
	g.waitStarted(t, "after", 0)
	g.release("after", 0)
	if res := e.results.waitResult(t, "after").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job after the cancels: %v", res)
	}
	if s := r.w.Stats(); s.Cancelled != 1 || s.Completed != 2 || s.Failed != 0 {
		t.Errorf("stats = %+v", s)
	}
	if n := len(e.results.results("keep")); n != 1 {
		t.Errorf("%d results for keep, want 1", n)
	}
}

// While the worker holds jobs it heartbeats every LeaseInterval, listing
// them (their leases) with interval_ms = LeaseInterval; idle, it heartbeats
// every HeartbeatInterval with interval_ms = HeartbeatInterval and no leases.
func TestLeaseHeartbeats(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	const lease, idle = 20 * time.Millisecond, time.Second
	r := e.start(t, worker.Config{LeaseInterval: lease, HeartbeatInterval: idle, Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	req := e.job("leased", 3)
	waitAck(t, e.request(req), req, r.w.ID())
	holding := func(hb *pb.Heartbeat) bool {
		return len(hb.GetHeld()) == 1 && hb.GetHeld()[0].GetJobId() == "leased" && hb.GetHeld()[0].GetAttempt() == 3
	}
	const several = 5
	systest.Eventually(t, waitFor, fmt.Sprintf("%d heartbeats holding the job", several), func() bool {
		n := 0
		for _, hb := range e.heartbeatsOf(r.w.ID()) {
			if holding(hb) {
				n++
			}
		}
		return n >= several
	})
	for _, hb := range e.heartbeatsOf(r.w.ID()) {
		if !holding(hb) {
			continue
		}
		if hb.GetIntervalMs() != lease.Milliseconds() || hb.GetActiveJobs() != 1 || !hb.GetConfirms() ||
			!slices.Equal(hb.GetTopics(), []string{"job.echo"}) || hb.GetDraining() {
			t.Fatalf("lease heartbeat = %v", hb)
		}
	}

	g.release("leased", 3)
	e.results.waitResult(t, "leased")
	seen := len(e.heartbeatsOf(r.w.ID()))
	systest.Eventually(t, waitFor, "an idle heartbeat", func() bool {
		hbs := e.heartbeatsOf(r.w.ID())
		return len(hbs) > seen && len(hbs[len(hbs)-1].GetHeld()) == 0
	})
	hbs := e.heartbeatsOf(r.w.ID())
	if hb := hbs[len(hbs)-1]; hb.GetIntervalMs() != idle.Milliseconds() || hb.GetActiveJobs() != 0 || !hb.GetConfirms() {
		t.Errorf("idle heartbeat = %v", hb)
	}
}

// Lease heartbeats follow LeaseInterval whatever the idle interval: with an
// idle interval of an hour, only the lease clock can send several.
func TestLeaseHeartbeatsDoNotWaitForTheIdleInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{LeaseInterval: 20 * time.Millisecond, HeartbeatInterval: time.Hour, Handler: g.handler()})
	t.Cleanup(g.releaseAll)
	e.publish(t, e.job("leased", 1))
	systest.Eventually(t, waitFor, "3 lease heartbeats", func() bool {
		n := 0
		for _, hb := range e.heartbeatsOf(r.w.ID()) {
			if len(hb.GetHeld()) == 1 && hb.GetIntervalMs() == 20 {
				n++
			}
		}
		return n >= 3
	})
}

// A LeaseInterval longer than the idle interval is capped to it.
func TestLeaseIntervalCappedByHeartbeatInterval(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{LeaseInterval: time.Hour, HeartbeatInterval: 30 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)
	e.publish(t, e.job("leased", 1))
	e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool {
		return hb.GetWorkerId() == r.w.ID() && len(hb.GetHeld()) == 1 && hb.GetIntervalMs() == 30
	}, "a lease heartbeat with interval_ms 30")
}

// Two attempts of one job can be on one worker at once: the scheduler heard
// no confirmation of attempt 1 in time and dispatched attempt 2, which the
// queue group gave to the same worker. Each attempt keeps its own context
// and lease: the end of one neither cancels the other nor drops its lease.
func TestTwoAttemptsOfOneJobOnOneWorker(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{LeaseInterval: 20 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	a1, a2 := e.job("dup", 1), e.job("dup", 2)
	waitAck(t, e.request(a1), a1, r.w.ID())
	waitAck(t, e.request(a2), a2, r.w.ID())
	g.release("dup", 1)
	if res := e.results.waitResultAttempt(t, "dup", 1).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("attempt 1: %v", res)
	}
	systest.Eventually(t, waitFor, "attempt 1 to end", func() bool { return r.w.Stats().Active == 1 })
	// Attempt 2's lease is still renewed.
	seen := len(e.heartbeatsOf(r.w.ID()))
	systest.Eventually(t, waitFor, "more heartbeats", func() bool { return len(e.heartbeatsOf(r.w.ID())) > seen+1 })
	hbs := e.heartbeatsOf(r.w.ID())
	if held := hbs[len(hbs)-1].GetHeld(); len(held) != 1 || held[0].GetJobId() != "dup" || held[0].GetAttempt() != 2 {
		t.Errorf("heartbeat after attempt 1 ended holds %v, want dup attempt 2", held)
	}
	if cause := g.cause("dup", 2); cause != nil {
		t.Errorf("attempt 2's context was cancelled when attempt 1 ended: %v", cause)
	}
	g.release("dup", 2)
	if res := e.results.waitResultAttempt(t, "dup", 2).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("attempt 2: %v", res)
	}
}

// On shutdown both attempts of a job held twice are handed back, and Run
// returns.
func TestTwoAttemptsOfOneJobAreBothHandedBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{ShutdownGrace: 50 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	a1, a2 := e.job("dup", 1), e.job("dup", 2)
	waitAck(t, e.request(a1), a1, r.w.ID())
	waitAck(t, e.request(a2), a2, r.w.ID())
	r.cancel()
	if err := r.waitRun(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	for _, attempt := range []int32{1, 2} {
		res := e.results.waitResultAttempt(t, "dup", attempt).GetJobResult()
		if res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetError() != "worker shutting down" {
			t.Errorf("attempt %d: %v", attempt, res)
		}
	}
}

// A JobCancel reaches every attempt of the job the worker holds.
func TestCancelReachesEveryAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Handler: g.handler()})
	t.Cleanup(g.releaseAll)

	a1, a2 := e.job("dup", 1), e.job("dup", 2)
	waitAck(t, e.request(a1), a1, r.w.ID())
	waitAck(t, e.request(a2), a2, r.w.ID())
	p := wire.NewPacket("t", "test-scheduler")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "dup"}}
	if err := e.observer.Publish(wire.WorkerCancelSubject(r.w.ID()), p); err != nil {
		t.Fatal(err)
	}
	for _, attempt := range []int32{1, 2} {
		if res := e.results.waitResultAttempt(t, "dup", attempt).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED {
			t.Errorf("attempt %d: %v", attempt, res)
		}
	}
}

// An inline worker runs each job on the delivery goroutine: one after
// another in arrival order (a job that arrives while another runs starts
// only once it has ended), each held and cancellable as on a runner.
func TestInlineRunsJobsOneAfterAnother(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	t.Cleanup(g.releaseAll)
	var (
		mu     sync.Mutex
		events []string
	)
	note := func(s string) {
		mu.Lock()
		events = append(events, s)
		mu.Unlock()
	}
	gated := g.handler()
	h := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		note("start " + job.ID())
		defer note("end " + job.ID())
		return gated.HandleJob(ctx, job)
	})
	r := e.start(t, worker.Config{Handler: h, Inline: true})

	e.send(t, "first")
	g.waitStarted(t, "first", 0)
	in := e.workerBus.Conn().Stats().InMsgs
	e.send(t, "second")
	// Once the worker's connection has read "second", a worker with runners
	// would take it; an inline one cannot while "first" runs.
	systest.Eventually(t, waitFor, "the worker's connection to read second", func() bool { return e.workerBus.Conn().Stats().InMsgs > in })
	if got := r.w.Stats().Received; got != 1 {
		t.Errorf("received %d jobs while the first ran inline, want 1", got)
	}
	g.release("second", 0) // it may run at once, once it starts
	g.release("first", 0)
	for _, id := range []string{"first", "second"} {
		if res := e.results.waitResult(t, id).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || res.GetWorkerId() != r.w.ID() {
			t.Errorf("%s: result %v", id, res)
		}
	}
	mu.Lock()
	got := strings.Join(events, ", ")
	mu.Unlock()
	if want := "start first, end first, start second, end second"; got != want {
		t.Errorf("handler calls: %s; want %s", got, want)
	}

	// A held inline job is cancelled like any other.
	e.send(t, "victim")
	g.waitStarted(t, "victim", 0)
	p := wire.NewPacket("trace-cancel", "test-scheduler")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: "victim", Reason: "user asked"}}
	if err := e.observer.Publish(wire.WorkerCancelSubject(r.w.ID()), p); err != nil {
		t.Fatal(err)
	}
	if res := e.results.waitResult(t, "victim").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED {
		t.Errorf("cancelled inline job: %v", res)
	}
}

// A handler's context is made only when the handler first looks at it, and
// is then what it always was: a handler that looks only after its job was
// cancelled sees the cancellation and its cause, a child context it derives
// is cancelled with the cause, and a handler that never looks is still
// reported CANCELLED.
func TestHandlerContextMadeOnFirstLook(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	type seen struct {
		err   error
		cause string
	}
	var (
		mu       sync.Mutex
		looked   = map[string]seen{}
		started  = map[string]bool{}
		releases = map[string]chan struct{}{"late": make(chan struct{}), "child": make(chan struct{}), "blind": make(chan struct{})}
	)
	h := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		id := job.ID()
		mu.Lock()
		started[id] = true
		release := releases[id]
		mu.Unlock()
		switch id {
		case "child": // derives a child before the cancel, and waits on it
			child, stop := context.WithTimeout(ctx, time.Hour)
			defer stop()
			<-child.Done()
			mu.Lock()
			looked[id] = seen{child.Err(), fmt.Sprint(context.Cause(child))}
			mu.Unlock()
			return worker.Result{}, child.Err()
		case "late": // looks only once the job was cancelled
			<-release
			mu.Lock()
			looked[id] = seen{ctx.Err(), fmt.Sprint(context.Cause(ctx))}
			mu.Unlock()
			return worker.Result{}, ctx.Err()
		default: // never looks
			<-release
			return worker.Result{}, errors.New("gave up")
		}
	})
	r := e.start(t, worker.Config{Handler: h})
	cancel := func(id string) {
		t.Helper()
		p := wire.NewPacket("trace-cancel", "test-scheduler")
		p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: id, Reason: "user asked"}}
		if err := e.observer.Publish(wire.WorkerCancelSubject(r.w.ID()), p); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"late", "blind", "child"} {
		e.send(t, id)
		systest.Eventually(t, waitFor, fmt.Sprintf("%s to start", id), func() bool { mu.Lock(); defer mu.Unlock(); return started[id] })
	}
	// Cancels are handled in order, on one subscription: once "child" has
	// seen its cancellation, "late" and "blind" were cancelled too.
	for _, id := range []string{"late", "blind", "child"} {
		cancel(id)
	}
	systest.Eventually(t, waitFor, "child to see its cancellation", func() bool { mu.Lock(); defer mu.Unlock(); _, ok := looked["child"]; return ok })
	close(releases["blind"])
	if res := e.results.waitResult(t, "blind").GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED || res.GetError() != "job cancelled" {
		t.Errorf("blind: result %v, want CANCELLED, job cancelled", res)
	}
	close(releases["late"])
	for _, id := range []string{"late", "child"} {
		if res := e.results.waitResult(t, id).GetJobResult(); res.GetStatus() != pb.JobStatus_JOB_STATUS_CANCELLED {
			t.Errorf("%s: result %v, want CANCELLED", id, res)
		}
		mu.Lock()
		got := looked[id]
		mu.Unlock()
		if !errors.Is(got.err, context.Canceled) || got.cause != "job cancelled" {
			t.Errorf("%s: the handler saw Err %v, Cause %q; want context.Canceled, job cancelled", id, got.err, got.cause)
		}
	}
}
