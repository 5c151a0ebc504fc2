package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
)

// waitLimit bounds every wait of these tests. Waits poll; nothing sleeps to
// synchronise, and nothing asserts how long something took, only that it
// happened (or, for a lower bound, not before it may).
const waitLimit = 10 * time.Second

// historyStore is a jobstore.Memory that remembers every record written, in
// the order the writes happened, so a test sees every transition however
// fast the engine moves. It can be told to fail.
type historyStore struct {
	*jobstore.Memory
	watch bool // make the engine follow the store with Watch, as with a shared store
	// silent: with watch, the watch delivers nothing: the engine's cache
	// falls behind what other replicas write.
	silent bool

	lists atomic.Int64 // calls of List, the store's full scan

	mu        sync.Mutex
	hist      map[string][]*pb.JobInfo
	createErr error
	getErr    error
}

func newHistoryStore() *historyStore {
	return &historyStore{Memory: jobstore.NewMemory(), hist: make(map[string][]*pb.JobInfo)}
}

// InProcess hides or shows Memory's: with watch, the engine watches the
// store as it does a store other replicas write to.
func (s *historyStore) InProcess() bool { return !s.watch }

func (s *historyStore) note(j *pb.JobInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hist[j.GetJobId()] = append(s.hist[j.GetJobId()], j)
}

func (s *historyStore) failCreate(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.createErr = err
}

func (s *historyStore) failGet(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.getErr = err
}

func (s *historyStore) Create(ctx context.Context, job *pb.JobInfo) (jobstore.Record, error) {
	s.mu.Lock()
	err := s.createErr
	s.mu.Unlock()
	if err != nil {
		return jobstore.Record{}, err
	}
	rec, err := s.Memory.Create(ctx, job)
	if err == nil {
		s.note(rec.Job)
	}
	return rec, err
}

func (s *historyStore) Get(ctx context.Context, id string) (jobstore.Record, error) {
	s.mu.Lock()
	err := s.getErr
	s.mu.Unlock()
	if err != nil {
		return jobstore.Record{}, err
	}
	return s.Memory.Get(ctx, id)
}

func (s *historyStore) Update(ctx context.Context, prev jobstore.Record, next *pb.JobInfo) (jobstore.Record, error) {
	rec, err := s.Memory.Update(ctx, prev, next)
	if err == nil {
		s.note(rec.Job)
	}
	return rec, err
}

// List is Memory's, counted: queries must not scan the whole store.
func (s *historyStore) List(ctx context.Context, f jobstore.Filter) ([]jobstore.Record, error) {
	s.lists.Add(1)
	return s.Memory.List(ctx, f)
}

// Watch is Memory's, or, when silent, a watch that never delivers.
func (s *historyStore) Watch(ctx context.Context, fn func(jobstore.Record)) error {
	if s.silent {
		<-ctx.Done()
		return nil
	}
	return s.Memory.Watch(ctx, fn)
}

// history returns every record written of a job, oldest first.
func (s *historyStore) history(id string) []*pb.JobInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*pb.JobInfo(nil), s.hist[id]...)
}

// rig is a started engine on a fake bus with fast timers.
type rig struct {
	t        *testing.T
	e        *scheduler.Engine
	cfg      scheduler.Config
	bus      *fakeBus
	reg      *scheduler.MemoryRegistry
	store    *historyStore
	dead     *jobstore.MemoryDeadLetters
	logs     *logBuffer
	safety   *recordingSafety
	strategy *recordingStrategy
	stopOnce sync.Once
}

// fast timers, so that every path of the lifecycle runs in milliseconds.
func fastConfig() scheduler.Config {
	return scheduler.Config{
		ID:              "sched-test",
		AckTimeout:      50 * time.Millisecond,
		LeaseInterval:   20 * time.Millisecond,
		LeaseMisses:     3,
		Tick:            2 * time.Millisecond,
		NoWorkerRetry:   5 * time.Millisecond,
		RetryBackoff:    10 * time.Millisecond,
		RetryBackoffMax: 40 * time.Millisecond,
	}
}

type rigOption func(*rig)

func withConfig(f func(*scheduler.Config)) rigOption { return func(r *rig) { f(&r.cfg) } }

func withLevel(level slog.Level) rigOption {
	return func(r *rig) { r.cfg.Logger = r.logs.logger(level) }
}

// newRig starts an engine; it is stopped, and the bus checked for anything
// the engine must never do, when the test ends.
func newRig(t *testing.T, opts ...rigOption) *rig {
	t.Helper()
	r := &rig{
		t:        t,
		bus:      &fakeBus{},
		reg:      scheduler.NewMemoryRegistry(),
		store:    newHistoryStore(),
		dead:     jobstore.NewMemoryDeadLetters(),
		logs:     &logBuffer{},
		safety:   &recordingSafety{},
		strategy: &recordingStrategy{blind: true},
		cfg:      fastConfig(),
	}
	r.cfg.Logger = r.logs.logger(slog.LevelInfo)
	for _, o := range opts {
		o(r)
	}
	r.cfg.Bus, r.cfg.Registry, r.cfg.Store, r.cfg.DeadLetters = r.bus, r.reg, r.store, r.dead
	if r.cfg.Safety == nil {
		r.cfg.Safety = r.safety
	}
	if r.cfg.Strategy == nil {
		r.cfg.Strategy = r.strategy
	}
	e, err := scheduler.New(r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.stop()
		for _, v := range r.bus.violated() {
			t.Errorf("bus misuse: %s", v)
		}
	})
	return r
}

// stop stops the engine; from then on the bus refuses to be used.
func (r *rig) stop() {
	r.stopOnce.Do(func() {
		if err := r.e.Stop(context.Background()); err != nil {
			r.t.Errorf("Stop: %v", err)
		}
		r.bus.close()
	})
}

func request(id, topic string) *pb.JobRequest {
	return &pb.JobRequest{JobId: id, Topic: topic}
}

func submitPacket(traceID string, req *pb.JobRequest) *pb.BusPacket {
	return wire.JobRequestPacket(traceID, "client-1", req)
}

// submit delivers req through the intake and fails the test on an error.
func (r *rig) submit(req *pb.JobRequest, traceID, replyTo string) {
	r.t.Helper()
	if err := r.bus.submit(r.t, submitPacket(traceID, req), replyTo); err != nil {
		r.t.Fatalf("submitting %s: %v", req.GetJobId(), err)
	}
}

// answerOn returns the one JobAnswer published on subject.
func (r *rig) answerOn(subject string) (*pb.BusPacket, *pb.JobAnswer) {
	r.t.Helper()
	ps := r.bus.publishedOn(subject)
	if len(ps) != 1 || ps[0].GetJobAnswer() == nil {
		r.t.Fatalf("%d packets on %s, want one JobAnswer: %v", len(ps), subject, ps)
	}
	return ps[0], ps[0].GetJobAnswer()
}

// job returns the stored job, or nil.
func (r *rig) job(id string) *pb.JobInfo {
	r.t.Helper()
	rec, err := r.store.Memory.Get(context.Background(), id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		r.t.Fatal(err)
	}
	return rec.Job
}

func (r *rig) revision(id string) uint64 {
	r.t.Helper()
	rec, err := r.store.Memory.Get(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return rec.Revision
}

// waitJob waits until the stored job satisfies cond, and returns it.
func (r *rig) waitJob(id, what string, cond func(j *pb.JobInfo) bool) *pb.JobInfo {
	r.t.Helper()
	var last *pb.JobInfo
	deadline := time.Now().Add(waitLimit)
	for {
		last = r.job(id)
		if last != nil && cond(last) {
			return last
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for job %s to be %s; it is %s\nhistory:\n%s", id, what, describe(last), r.describeHistory(id))
		}
		time.Sleep(time.Millisecond)
	}
}

// waitState waits for a state (and attempt, unless attempt < 0).
func (r *rig) waitState(id string, state pb.JobState, attempt int32) *pb.JobInfo {
	r.t.Helper()
	return r.waitJob(id, fmt.Sprintf("%s at attempt %d", lifecycle.Name(state), attempt), func(j *pb.JobInfo) bool {
		return j.GetState() == state && (attempt < 0 || j.GetAttempt() == attempt)
	})
}

func (r *rig) waitStats(what string, cond func(scheduler.Stats) bool) scheduler.Stats {
	r.t.Helper()
	systest.Eventually(r.t, waitLimit, what, func() bool { return cond(r.e.Stats()) })
	return r.e.Stats()
}

// waitDispatches waits until job has been dispatched n times, and returns
// the dispatches.
func (r *rig) waitDispatches(jobID string, n int) []published {
	r.t.Helper()
	systest.Eventually(r.t, waitLimit, fmt.Sprintf("%d dispatches of %s", n, jobID), func() bool { return len(r.bus.dispatchesOf(jobID)) >= n })
	return r.bus.dispatchesOf(jobID)
}

func describe(j *pb.JobInfo) string {
	if j == nil {
		return "absent"
	}
	return fmt.Sprintf("%s attempt=%d failed=%d worker=%q reason=%q error=%q next_attempt_in=%dms",
		lifecycle.Name(j.GetState()), j.GetAttempt(), j.GetFailedAttempts(), j.GetWorkerId(), j.GetPendingReason(),
		j.GetError(), j.GetNextAttemptMs()-time.Now().UnixMilli())
}

func (r *rig) describeHistory(id string) string {
	s := ""
	for _, j := range r.store.history(id) {
		s += "  " + describe(j) + "\n"
	}
	return s
}

// result delivers a worker's result.
func (r *rig) result(res *pb.JobResult) {
	r.t.Helper()
	if err := r.bus.result(r.t, wire.JobResultPacket("trace-result", res.GetWorkerId(), res)); err != nil {
		r.t.Fatalf("result for %s: %v", res.GetJobId(), err)
	}
}

func completed(id string, attempt int32, worker string) *pb.JobResult {
	return &pb.JobResult{JobId: id, Attempt: attempt, WorkerId: worker, Status: pb.JobStatus_JOB_STATUS_COMPLETED,
		ResultPtr: "memory://echo/" + id, ExecutionMs: 7}
}

func failedResult(id string, attempt int32, worker string, status pb.JobStatus, msg string) *pb.JobResult {
	return &pb.JobResult{JobId: id, Attempt: attempt, WorkerId: worker, Status: status, Error: msg}
}

// heartbeat delivers a worker's heartbeat.
func (r *rig) heartbeat(hb *pb.Heartbeat) {
	r.t.Helper()
	r.bus.heartbeat(r.t, hb)
}

// query asks the engine on sys.job.query.
func (r *rig) query(q *pb.JobQuery) *pb.JobAnswer {
	r.t.Helper()
	p := wire.NewPacket("trace-query", "client-1")
	p.Payload = &pb.BusPacket_JobQuery{JobQuery: q}
	out := r.bus.ask(r.t, wire.SubjectQuery, p)
	if out.GetTraceId() != "trace-query" || out.GetJobAnswer() == nil {
		r.t.Fatalf("answer to a query: %v", out)
	}
	return out.GetJobAnswer()
}

// cancel asks the engine on sys.job.cancel.
func (r *rig) cancel(id, reason string) *pb.JobAnswer {
	r.t.Helper()
	p := wire.NewPacket("trace-cancel", "client-1")
	p.Payload = &pb.BusPacket_JobCancel{JobCancel: &pb.JobCancel{JobId: id, Reason: reason}}
	out := r.bus.ask(r.t, wire.SubjectCancel, p)
	if out.GetJobAnswer() == nil {
		r.t.Fatalf("answer to a cancel: %v", out)
	}
	return out.GetJobAnswer()
}

// recordingSafety wraps the stub and records what it was asked.
type recordingSafety struct {
	mu    sync.Mutex
	asked []string
}

func (r *recordingSafety) Check(ctx context.Context, req *pb.JobRequest) (safety.Verdict, error) {
	r.mu.Lock()
	r.asked = append(r.asked, req.GetJobId())
	r.mu.Unlock()
	return scheduler.NewSafetyStub().Check(ctx, req)
}

func (r *recordingSafety) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.asked)
}

// recordingStrategy wraps NaiveStrategy and records the registry snapshots it
// saw. blind makes it a WorkerBlind strategy, as NaiveStrategy is; fail makes
// PickSubject fail.
type recordingStrategy struct {
	blind bool
	fail  error

	mu   sync.Mutex
	seen []map[string]*pb.Heartbeat
}

func (r *recordingStrategy) PickSubject(req *pb.JobRequest, workers map[string]*pb.Heartbeat) (string, error) {
	r.mu.Lock()
	r.seen = append(r.seen, workers)
	r.mu.Unlock()
	if r.fail != nil {
		return "", r.fail
	}
	return scheduler.NewNaiveStrategy().PickSubject(req, workers)
}

func (r *recordingStrategy) WorkerBlind() bool { return r.blind }

func (r *recordingStrategy) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recordingStrategy) snapshots() []map[string]*pb.Heartbeat {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]map[string]*pb.Heartbeat(nil), r.seen...)
}
