// Package integration_test runs the real parts together on a real, in-process
// NATS server: the scheduler engine and the worker runtime with the echo
// handler, each on its own connection, as separate processes would. Most
// tests run twice, once per job store: in memory (core NATS intake) and in a
// JetStream key-value bucket (durable intake and results).
package integration_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

const waitFor = 15 * time.Second

var discard = slog.New(slog.DiscardHandler)

// storeModes are the job stores every flow runs on.
var storeModes = []string{config.StoreMemory, config.StoreJetStream}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

func flush(t testing.TB, b *bus.NatsBus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

type sched struct {
	engine   *scheduler.Engine
	registry *scheduler.MemoryRegistry
	bus      *bus.NatsBus
	store    scheduler.JobStore
	stop     func() // stops the engine, once
}

// startScheduler runs a scheduler replica on its own connection with the
// store of mode, opened as the cortex-scheduler binary opens it (a
// JetStream store makes the intake durable); the server has its
// subscriptions when it returns.
func startScheduler(t *testing.T, url, id, mode string, tune ...func(*scheduler.Config)) *sched {
	t.Helper()
	s := &sched{registry: scheduler.NewMemoryRegistry(), bus: systest.Connect(t, url, id)}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	store, dead, got, err := system.OpenStore(ctx, s.bus, mode)
	if err != nil || got != mode {
		t.Fatalf("store %s: got %q, %v", mode, got, err)
	}
	s.store = store
	cfg := scheduler.Config{
		Bus: s.bus, Safety: scheduler.NewSafetyStub(), Registry: s.registry,
		Strategy: scheduler.NewNaiveStrategy(), Store: store, DeadLetters: dead, ID: id, Logger: discard,
	}
	for _, f := range tune {
		f(&cfg)
	}
	e, err := scheduler.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			if err := e.Stop(context.Background()); err != nil {
				t.Errorf("scheduler %s stop: %v", id, err)
			}
			flush(t, s.bus)
		})
	}
	t.Cleanup(s.stop)
	flush(t, s.bus)
	s.engine = e
	return s
}

// job reads a job from the scheduler's store.
func (s *sched) job(t testing.TB, id string) *pb.JobInfo {
	t.Helper()
	rec, err := s.store.Get(context.Background(), id)
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.Job
}

func (s *sched) waitState(t testing.TB, id string, state pb.JobState) *pb.JobInfo {
	t.Helper()
	var j *pb.JobInfo
	systest.Poll(t, waitFor, 5*time.Millisecond, fmt.Sprintf("job %s to be %s", id, lifecycle.Name(state)), func() (bool, string) {
		j = s.job(t, id)
		return j.GetState() == state, "it is " + lifecycle.Name(j.GetState())
	})
	return j
}

type runningWorker struct {
	w    *worker.Worker
	stop func() // cancels Run and waits for it
}

// startWorker runs a worker on its own connection: the echo handler (no work
// time) unless another is given.
func startWorker(t *testing.T, url string, heartbeat time.Duration, h worker.Handler) *runningWorker {
	t.Helper()
	if h == nil {
		h = echo.Handler(echo.WorkTime{})
	}
	b := systest.Connect(t, url, "worker")
	w, err := worker.New(b.Conn(), worker.Config{
		Kind: echo.Kind, Handler: h, HeartbeatInterval: heartbeat, Logger: discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker Run: %v", err)
				}
			case <-time.After(waitFor):
				t.Error("worker did not stop")
			}
			flush(t, b)
		})
	}
	t.Cleanup(stop)
	return &runningWorker{w: w, stop: stop}
}

// waitRegistered waits until the worker is in the registry. The worker
// subscribed to its topic before it sent the heartbeat, on the same
// connection, so the server routes jobs to it from then on.
func waitRegistered(t testing.TB, s *sched, workerID string) {
	t.Helper()
	systest.Eventually(t, waitFor, fmt.Sprintf("worker %s in the registry of %s", workerID, s.engine.ID()), func() bool { _, ok := s.registry.Snapshot()[workerID]; return ok })
}

// recorder subscribes with plain nats.go, so that it sees every message
// whatever its bytes.
type recorder struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func record(t testing.TB, url, subject string) (*recorder, *nats.Conn) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r := &recorder{}
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) {
		r.mu.Lock()
		r.msgs = append(r.msgs, m)
		r.mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r, nc
}

func (r *recorder) all() []*nats.Msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func decode(t testing.TB, m *nats.Msg) *pb.BusPacket {
	t.Helper()
	p, err := bus.Decode(m.Data, 0)
	if err != nil {
		t.Fatalf("message on %s does not decode: %v", m.Subject, err)
	}
	return p
}

// submitted is what a Submit answered, with a refusal's job (a DENIED one)
// as the job: job, err := submitted(c.Submit(ctx, req)).
func submitted(job *pb.JobInfo, err error) (*pb.JobInfo, error) {
	var re *client.RefusedError
	if errors.As(err, &re) {
		return re.Job, err
	}
	return job, err
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	t.Cleanup(cancel)
	return ctx
}

// A job submitted with confirmation, and one published as the design
// document's sender does, both run to COMPLETED on a real worker with their
// trace on the dispatch and on the result.
func TestJobFlowsEndToEndWithOneTraceID(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			dispatched, _ := record(t, url, "job.echo")
			results, _ := record(t, url, wire.SubjectResult)
			s := startScheduler(t, url, "sched-e2e", mode)
			w := startWorker(t, url, time.Hour, nil)
			waitRegistered(t, s, w.w.ID())

			c := systest.Connect(t, url, "client")
			cl := systest.Client(t, c, client.Options{SenderID: "integration-client"})
			accepted, err := cl.Submit(ctxFor(t), &pb.JobRequest{JobId: "job-e2e", Topic: "job.echo"}, client.WithTraceID("trace-e2e"))
			if err != nil {
				t.Fatal(err)
			}
			if accepted.GetJobId() != "job-e2e" || accepted.GetTraceId() != "trace-e2e" || accepted.GetState() != lifecycle.Dispatched {
				t.Errorf("accepted = %v", accepted)
			}
			done, err := cl.Wait(ctxFor(t), "job-e2e")
			if err != nil {
				t.Fatal(err)
			}
			if done.GetState() != lifecycle.Completed || done.GetResultPtr() != "memory://echo/job-e2e" || done.GetWorkerId() != w.w.ID() ||
				done.GetAttempt() != 1 || done.GetTraceId() != "trace-e2e" {
				t.Errorf("job = %v", done)
			}

			// The document's sender: plain publish, then wait for the result.
			res := submitAndWait(t, c, "trace-legacy", &pb.JobRequest{JobId: "job-legacy", Topic: "job.echo"})
			if r := res.GetJobResult(); r.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || r.GetResultPtr() != "memory://echo/job-legacy" ||
				res.GetTraceId() != "trace-legacy" {
				t.Errorf("legacy result = %v", res)
			}
			s.waitState(t, "job-legacy", lifecycle.Completed)

			// The dispatches and the results carried the traces and the attempt.
			systest.Eventually(t, waitFor, "2 dispatches and 2 results", func() bool { return len(dispatched.all()) == 2 && len(results.all()) == 2 })
			for _, m := range dispatched.all() {
				d := decode(t, m)
				id := d.GetJobRequest().GetJobId()
				if d.GetTraceId() != strings.Replace(id, "job-", "trace-", 1) || d.GetSenderId() != "sched-e2e" ||
					d.GetJobRequest().GetAttempt() != 1 || d.GetJobRequest().GetTimeoutMs() <= 0 || m.Reply == "" {
					t.Errorf("dispatched packet = %v (reply %q)", d, m.Reply)
				}
			}
			for _, m := range results.all() {
				r := decode(t, m)
				id := r.GetJobResult().GetJobId()
				if r.GetTraceId() != strings.Replace(id, "job-", "trace-", 1) || r.GetJobResult().GetAttempt() != 1 || r.GetJobResult().GetWorkerId() != w.w.ID() {
					t.Errorf("result packet = %v", r)
				}
			}

			systest.Eventually(t, waitFor, "the scheduler to complete both", func() bool { return s.engine.Stats().Completed == 2 })
			if st := s.engine.Stats(); st.Submitted != 2 || st.Accepted != 2 || st.Dispatched != 2 || st.Results != 2 ||
				st.Denied+st.Rejected+st.Unroutable+st.DispatchErrors+st.StaleResults+st.LateResults+st.Retries != 0 {
				t.Errorf("scheduler stats = %+v", st)
			}
			if st := w.w.Stats(); st.Received != 2 || st.Completed != 2 {
				t.Errorf("worker stats = %+v", st)
			}
		})
	}
}

// submitAndWait does what the design document's sender does: it listens
// for results on sys.job.result and sys.job.result.>, publishes req plainly
// on sys.job.submit (asking for no answer), and returns its job's result.
func submitAndWait(t testing.TB, b *bus.NatsBus, traceID string, req *pb.JobRequest) *pb.BusPacket {
	t.Helper()
	results := make(chan *pb.BusPacket, 1)
	for _, subject := range []string{wire.SubjectResult, wire.SubjectResults} {
		drain, err := b.Subscribe(subject, "", func(p *pb.BusPacket) {
			if p.GetJobResult().GetJobId() != req.GetJobId() {
				return
			}
			select {
			case results <- p:
			default:
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = drain() }()
	}
	ctx := ctxFor(t)
	// The server has the subscriptions before the job can finish.
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := systest.PublishSubmit(b, "integration-client", traceID, req); err != nil {
		t.Fatalf("job %s: %v", req.GetJobId(), err)
	}
	select {
	case p := <-results:
		return p
	case <-ctx.Done():
		t.Fatalf("job %s: no result: %v", req.GetJobId(), context.Cause(ctx))
		return nil
	}
}

func TestHeartbeatsReachTheRegistry(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	s := startScheduler(t, url, "sched-hb", config.StoreMemory)
	w1 := startWorker(t, url, 20*time.Millisecond, nil)
	w2 := startWorker(t, url, 20*time.Millisecond, nil)
	systest.Eventually(t, waitFor, "two workers in the registry", func() bool { return s.registry.Len() == 2 })
	snap := s.registry.Snapshot()
	for _, w := range []*runningWorker{w1, w2} {
		hb := snap[w.w.ID()]
		if hb == nil || !slices.Equal(hb.GetCapabilities(), []string{echo.Kind}) || !slices.Equal(hb.GetTopics(), []string{"job.echo"}) ||
			!hb.GetConfirms() || hb.GetIntervalMs() != 20 {
			t.Errorf("registry entry for %s = %v", w.w.ID(), hb)
		}
	}
	// Heartbeats keep coming.
	n := s.engine.Stats().Heartbeats
	systest.Eventually(t, waitFor, "more heartbeats", func() bool { return s.engine.Stats().Heartbeats >= n+4 })
	// A stopped worker says so, and then leaves the registry.
	w1.stop()
	systest.Eventually(t, waitFor, "the stopped worker to leave the registry", func() bool { _, ok := s.registry.Snapshot()[w1.w.ID()]; return !ok })
}

func TestDestroyJobNeverReachesAWorker(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			everything, obs := record(t, url, ">")
			s := startScheduler(t, url, "sched-safety", mode)
			w := startWorker(t, url, time.Hour, nil)
			waitRegistered(t, s, w.w.ID())

			c := systest.Connect(t, url, "client")
			cl := systest.Client(t, c, client.Options{SenderID: "integration-client"})
			job, err := submitted(cl.Submit(ctxFor(t), &pb.JobRequest{JobId: "destroy-1", Topic: scheduler.ForbiddenTopic}, client.WithTraceID("trace-destroy")))
			var refused *client.RefusedError
			if !errors.As(err, &refused) || !errors.Is(err, client.ErrDenied) || refused.Retryable || !strings.Contains(refused.Reason, "forbidden topic") ||
				job.GetState() != lifecycle.Denied {
				t.Fatalf("Submit = %v, %v; want a refusal with the DENIED job", job, err)
			}
			if got, err := cl.Get(ctxFor(t), "destroy-1"); err != nil || got.GetState() != lifecycle.Denied ||
				got.GetError() != "denied by the safety policy: forbidden topic" {
				t.Errorf("Get = %v, %v", got, err)
			}
			// The document's sender, without confirmation: denied all the same.
			if err := systest.PublishSubmit(c, "integration-client", "trace-destroy-2", &pb.JobRequest{JobId: "destroy-2", Topic: scheduler.ForbiddenTopic}); err != nil {
				t.Fatal(err)
			}
			s.waitState(t, "destroy-2", lifecycle.Denied)

			// Stop drains: anything the handlers published has been flushed
			// to the server with the drain.
			s.stop()
			if err := obs.Flush(); err != nil {
				t.Fatal(err)
			}
			for _, m := range everything.all() {
				if m.Subject == scheduler.ForbiddenTopic || strings.HasPrefix(m.Subject, wire.JobSubjectPrefix) || strings.HasPrefix(m.Subject, "sys.worker.") {
					t.Errorf("published on %s: %v", m.Subject, decode(t, m))
				}
			}
			if st := s.engine.Stats(); st.Dispatched != 0 || st.Submitted != 2 || st.Denied != 2 {
				t.Errorf("scheduler stats = %+v", st)
			}
			if st := w.w.Stats(); st.Received != 0 {
				t.Errorf("the worker received %d jobs", st.Received)
			}
		})
	}
}

func TestGarbageOnSubmitIsSurvived(t *testing.T) {
	skipShort(t)
	t.Parallel()
	for _, mode := range storeModes {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			url := natstest.URL(t)
			s := startScheduler(t, url, "sched-garbage", mode)
			w := startWorker(t, url, time.Hour, nil)
			waitRegistered(t, s, w.w.ID())

			nc, err := nats.Connect(url)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			for _, data := range [][]byte{[]byte("\xff\xfe not protobuf"), {0x0a, 0x05, 'a'}, nil} {
				if err := nc.Publish(wire.SubjectSubmit, data); err != nil {
					t.Fatal(err)
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			systest.Eventually(t, waitFor, "the scheduler's bus to drop the bad packets", func() bool {
				st := s.bus.Stats()
				return st.Malformed == 2 && st.UnknownPayload == 1
			})

			c := systest.Connect(t, url, "client")
			res := submitAndWait(t, c, "trace-after-garbage", &pb.JobRequest{JobId: "after-garbage", Topic: "job.echo"})
			if res.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
				t.Errorf("job after garbage: %v", res)
			}
			s.waitState(t, "after-garbage", lifecycle.Completed)
			if st := s.engine.Stats(); st.Submitted != 1 || st.Unknown != 0 {
				t.Errorf("scheduler stats = %+v", st)
			}
		})
	}
}

// Two replicas share one JetStream store and the durable intake: every
// heartbeat reaches both, every job is taken by one of them, and each job
// runs and completes exactly once.
func TestTwoSchedulerReplicas(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	heartbeats, hbConn := record(t, url, wire.SubjectHeartbeats)
	results, resConn := record(t, url, wire.SubjectResult)
	// Each job must run once: a confirmation slower than the ack timeout
	// (a loaded CI machine) would rightly dispatch it again, so the timeout
	// is out of reach here.
	patient := func(c *scheduler.Config) { c.AckTimeout = time.Minute }
	a := startScheduler(t, url, "sched-a", config.StoreJetStream, patient)
	b := startScheduler(t, url, "sched-b", config.StoreJetStream, patient)
	w := startWorker(t, url, 20*time.Millisecond, nil)
	waitRegistered(t, a, w.w.ID())
	waitRegistered(t, b, w.w.ID())

	const jobs = 20
	c := systest.Connect(t, url, "client")
	cl := systest.Client(t, c, client.Options{SenderID: "integration-client"})
	for i := range jobs {
		id := fmt.Sprint("r", i)
		req := &pb.JobRequest{JobId: id, Topic: "job.echo"}
		if i%2 == 0 { // half with confirmation, half as the document's sender
			if _, err := cl.Submit(ctxFor(t), req, client.WithTraceID("trace-"+id)); err != nil {
				t.Fatal(err)
			}
		} else if err := systest.PublishSubmit(c, "integration-client", "trace-"+id, req); err != nil {
			t.Fatal(err)
		}
	}
	for i := range jobs {
		j := a.waitState(t, fmt.Sprint("r", i), lifecycle.Completed)
		if j.GetAttempt() != 1 || j.GetWorkerId() != w.w.ID() {
			t.Errorf("job %s = %v", j.GetJobId(), j)
		}
	}
	// Both replicas read the same store.
	if recs, err := b.store.List(context.Background(), jobstore.Filter{State: lifecycle.Completed}); err != nil || len(recs) != jobs {
		t.Errorf("replica b sees %d completed jobs, %v", len(recs), err)
	}
	systest.Eventually(t, waitFor, fmt.Sprintf("the replicas to record %d completions between them", jobs), func() bool {
		return a.engine.Stats().Completed+b.engine.Stats().Completed == jobs
	})
	sa, sb := a.engine.Stats(), b.engine.Stats()
	if sa.Submitted+sb.Submitted != jobs || sa.Accepted+sb.Accepted != jobs || sa.Dispatched+sb.Dispatched != jobs ||
		sa.Results+sb.Results != jobs || sa.Duplicates+sb.Duplicates != 0 {
		t.Errorf("replica stats a=%+v b=%+v: want %d of each in all", sa, sb, jobs)
	}

	// Every heartbeat reaches both: stop the worker (it sends a last one), let
	// everything arrive, and compare with what a plain subscriber saw.
	w.stop()
	for _, s := range []*sched{a, b} {
		flush(t, s.bus)
	}
	if err := hbConn.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := resConn.Flush(); err != nil {
		t.Fatal(err)
	}
	// The recorder's callback may still be behind its flush: count again
	// at every look, until all three agree.
	var sent uint64
	systest.Eventually(t, waitFor, "both replicas to see every heartbeat the recorder saw", func() bool {
		sent = uint64(len(heartbeats.all()))
		return sent > 0 && a.engine.Stats().Heartbeats == sent && b.engine.Stats().Heartbeats == sent
	})

	// Each job ran once and produced one result.
	systest.Eventually(t, waitFor, fmt.Sprintf("the recorder to see %d results", jobs), func() bool { return len(results.all()) >= jobs })
	count := map[string]int{}
	for _, m := range results.all() {
		p := decode(t, m)
		count[p.GetJobResult().GetJobId()]++
		if p.GetTraceId() != "trace-"+p.GetJobResult().GetJobId() {
			t.Errorf("result %v lost its trace", p)
		}
	}
	if len(count) != jobs {
		t.Errorf("%d distinct results, want %d", len(count), jobs)
	}
	for id, n := range count {
		if n != 1 {
			t.Errorf("job %s: %d results", id, n)
		}
	}
	if st := w.w.Stats(); st.Received != jobs || st.Completed != jobs {
		t.Errorf("worker stats = %+v", st)
	}
}

// gate is a handler that holds every job until released (or cancelled).
type gate struct {
	release chan struct{}
	started chan string
}

func newGate() *gate { return &gate{release: make(chan struct{}), started: make(chan string, 16)} }

func (g *gate) HandleJob(ctx context.Context, job *worker.Job) (worker.Result, error) {
	g.started <- job.ID()
	select {
	case <-g.release:
		return worker.Result{Ptr: "memory://gated/" + job.ID()}, nil
	case <-ctx.Done():
		return worker.Result{}, context.Cause(ctx)
	}
}

// A result published while no scheduler runs waits in its stream, and the
// next scheduler on the same store applies it.
func TestResultPublishedWhileNoSchedulerRunsIsApplied(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	a := startScheduler(t, url, "sched-first", config.StoreJetStream)
	g := newGate()
	w := startWorker(t, url, time.Hour, g)
	t.Cleanup(func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	})
	waitRegistered(t, a, w.w.ID())

	c := systest.Connect(t, url, "client")
	cl := systest.Client(t, c, client.Options{SenderID: "integration-client"})
	if _, err := cl.Submit(ctxFor(t), &pb.JobRequest{JobId: "survivor", Topic: "job.echo"}, client.WithTraceID("trace-survivor")); err != nil {
		t.Fatal(err)
	}
	<-g.started
	a.waitState(t, "survivor", lifecycle.Running)
	a.stop()

	// The worker finishes with no scheduler running: its result waits in
	// the results stream.
	close(g.release)
	js, err := jetstream.New(c.Conn())
	if err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, waitFor, "the result to wait in its stream", func() bool {
		st, err := js.Stream(context.Background(), bus.StreamName(wire.SubjectResult))
		if err != nil {
			return false
		}
		info, err := st.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	if j := a.job(t, "survivor"); j.GetState() != lifecycle.Running {
		t.Fatalf("with no scheduler the job moved: %v", j)
	}

	// A new scheduler on the same store takes it. (A long lease, so that
	// nothing but the result can move the job.)
	b := startScheduler(t, url, "sched-second", config.StoreJetStream, func(c *scheduler.Config) { c.LeaseInterval = 5 * time.Second })
	j := b.waitState(t, "survivor", lifecycle.Completed)
	if j.GetResultPtr() != "memory://gated/survivor" || j.GetWorkerId() != w.w.ID() || j.GetAttempt() != 1 || j.GetTraceId() != "trace-survivor" {
		t.Errorf("job = %v", j)
	}
	if st := b.engine.Stats(); st.Results != 1 || st.Completed != 1 || st.Dispatched != 0 {
		t.Errorf("second scheduler stats = %+v", st)
	}
	if st := w.w.Stats(); st.Received != 1 {
		t.Errorf("the job ran %d times", st.Received)
	}
}

// Cancelling a running job cancels its handler's context on the worker.
func TestCancelReachesTheRunningHandler(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	s := startScheduler(t, url, "sched-cancel", config.StoreMemory)
	g := newGate()
	w := startWorker(t, url, time.Hour, g)
	waitRegistered(t, s, w.w.ID())

	c := systest.Connect(t, url, "client")
	cl := systest.Client(t, c, client.Options{SenderID: "integration-client"})
	if _, err := cl.Submit(ctxFor(t), &pb.JobRequest{JobId: "to-cancel", Topic: "job.echo"}, client.WithTraceID("trace-cancel")); err != nil {
		t.Fatal(err)
	}
	<-g.started
	s.waitState(t, "to-cancel", lifecycle.Running)
	job, err := cl.Cancel(ctxFor(t), "to-cancel", "no longer needed")
	if err != nil || job.GetState() != lifecycle.Cancelled {
		t.Fatalf("Cancel = %v, %v", job, err)
	}
	systest.Eventually(t, waitFor, "the handler to be cancelled", func() bool { return w.w.Stats().Cancelled == 1 })
	// The worker's CANCELLED result comes after: it changes nothing.
	systest.Eventually(t, waitFor, "the worker's result", func() bool { return s.engine.Stats().LateResults == 1 })
	if j := s.job(t, "to-cancel"); j.GetState() != lifecycle.Cancelled || j.GetError() != "no longer needed" {
		t.Errorf("job = %v", j)
	}
	// Cancelling again is refused.
	if _, err := cl.Cancel(ctxFor(t), "to-cancel", ""); !errors.Is(err, client.ErrRefused) || !errors.Is(err, client.ErrConflict) {
		t.Errorf("second Cancel = %v", err)
	}
}
