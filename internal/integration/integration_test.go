// Package integration_test runs the real parts together on a real, in-process
// NATS server: the scheduler engine and the worker runtime with the echo
// handler, each on its own connection, as separate processes would.
package integration_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/client"
	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

const waitFor = 10 * time.Second

var discard = slog.New(slog.DiscardHandler)

func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
}

func connect(t testing.TB, url, name string) *bus.NatsBus {
	t.Helper()
	b, err := bus.Connect(bus.Config{URL: url, Name: name, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
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
}

// startScheduler runs a scheduler replica on its own connection; the server
// has its subscriptions when it returns.
func startScheduler(t *testing.T, url, id string) *sched {
	t.Helper()
	s := &sched{registry: scheduler.NewMemoryRegistry(), bus: connect(t, url, id)}
	e, err := scheduler.New(scheduler.Config{
		Bus: s.bus, Safety: scheduler.NewSafetyStub(), Registry: s.registry,
		Strategy: scheduler.NewNaiveStrategy(), ID: id, Logger: discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(context.Background()); err != nil {
			t.Errorf("scheduler %s stop: %v", id, err)
		}
	})
	flush(t, s.bus)
	s.engine = e
	return s
}

type runningWorker struct {
	w    *worker.Worker
	stop func() // cancels Run and waits for it
}

// startWorker runs an echo worker (no work time) on its own connection.
func startWorker(t *testing.T, url string, heartbeat time.Duration) *runningWorker {
	t.Helper()
	b := connect(t, url, "worker")
	w, err := worker.New(worker.Config{
		Bus: b, Kind: echo.Kind, Handler: worker.HandlerFunc(echo.Handler(echo.WorkTime{})),
		HeartbeatInterval: heartbeat, Logger: discard,
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
	eventually(t, waitFor, func() bool { _, ok := s.registry.Snapshot()[workerID]; return ok },
		"worker %s in the registry of %s", workerID, s.engine.ID())
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

func submitAndWait(t testing.TB, b *bus.NatsBus, traceID string, req *pb.JobRequest) (client.Submission, *pb.BusPacket) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	sub, p, err := client.SubmitAndWait(ctx, b, "integration-client", traceID, req)
	if err != nil {
		t.Fatalf("job %s: %v", req.GetJobId(), err)
	}
	return sub, p
}

func TestJobFlowsEndToEndWithOneTraceID(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	dispatched, _ := record(t, url, "job.echo")
	s := startScheduler(t, url, "sched-e2e")
	w := startWorker(t, url, time.Hour)
	waitRegistered(t, s, w.w.ID())

	c := connect(t, url, "client")
	sub, res := submitAndWait(t, c, "trace-e2e", &pb.JobRequest{JobId: "job-e2e", Topic: "job.echo"})

	r := res.GetJobResult()
	if r.GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED || r.GetResultPtr() != "memory://echo/job-e2e" || r.GetWorkerId() != w.w.ID() {
		t.Errorf("result = %v", r)
	}
	if sub.TraceID != "trace-e2e" || res.GetTraceId() != "trace-e2e" {
		t.Errorf("result trace_id = %q (submitted %q), want trace-e2e", res.GetTraceId(), sub.TraceID)
	}

	// The packet the scheduler dispatched carried the same trace.
	eventually(t, waitFor, func() bool { return len(dispatched.all()) == 1 }, "the dispatched packet")
	d := decode(t, dispatched.all()[0])
	if d.GetTraceId() != "trace-e2e" || d.GetSenderId() != "sched-e2e" || d.GetJobRequest().GetJobId() != "job-e2e" {
		t.Errorf("dispatched packet = %v", d)
	}

	// The scheduler saw the result come back.
	eventually(t, waitFor, func() bool { return s.engine.Stats().Results == 1 }, "the scheduler to receive the result")
	if st := s.engine.Stats(); st.Submitted != 1 || st.Dispatched != 1 || st.Denied+st.Rejected+st.Unroutable+st.DispatchErrors != 0 {
		t.Errorf("scheduler stats = %+v", st)
	}
	if st := w.w.Stats(); st.Received != 1 || st.Completed != 1 {
		t.Errorf("worker stats = %+v", st)
	}
}

func TestHeartbeatsReachTheRegistry(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	s := startScheduler(t, url, "sched-hb")
	w1 := startWorker(t, url, 20*time.Millisecond)
	w2 := startWorker(t, url, 20*time.Millisecond)
	eventually(t, waitFor, func() bool { return s.registry.Len() == 2 }, "two workers in the registry")
	snap := s.registry.Snapshot()
	for _, w := range []*runningWorker{w1, w2} {
		hb := snap[w.w.ID()]
		if hb == nil || !slices.Equal(hb.GetCapabilities(), []string{echo.Kind}) {
			t.Errorf("registry entry for %s = %v", w.w.ID(), hb)
		}
	}
	// Heartbeats keep coming.
	n := s.engine.Stats().Heartbeats
	eventually(t, waitFor, func() bool { return s.engine.Stats().Heartbeats >= n+4 }, "more heartbeats")
}

func TestDestroyJobNeverReachesAWorker(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	everything, obs := record(t, url, ">")
	s := startScheduler(t, url, "sched-safety")
	w := startWorker(t, url, time.Hour)
	waitRegistered(t, s, w.w.ID())

	c := connect(t, url, "client")
	if _, err := client.Submit(c, "integration-client", "trace-destroy", &pb.JobRequest{JobId: "destroy-1", Topic: scheduler.ForbiddenTopic}); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitFor, func() bool { return s.engine.Stats().Denied == 1 }, "the safety stub to deny the job")
	// Stop drains: the handler that denied the job has returned, and anything
	// it published has been flushed to the server with the drain.
	if err := s.engine.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	flush(t, s.bus)
	if err := obs.Flush(); err != nil {
		t.Fatal(err)
	}

	for _, m := range everything.all() {
		if m.Subject != wire.SubjectSubmit && !strings.HasPrefix(m.Subject, "sys.heartbeat.") {
			t.Errorf("published on %s: %v", m.Subject, decode(t, m))
		}
	}
	if st := s.engine.Stats(); st.Dispatched != 0 || st.Submitted != 1 {
		t.Errorf("scheduler stats = %+v", st)
	}
	if st := w.w.Stats(); st.Received != 0 {
		t.Errorf("the worker received %d jobs", st.Received)
	}
}

func TestGarbageOnSubmitIsSurvived(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	s := startScheduler(t, url, "sched-garbage")
	w := startWorker(t, url, time.Hour)
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
	eventually(t, waitFor, func() bool {
		st := s.bus.Stats()
		return st.Malformed == 2 && st.UnknownPayload == 1
	}, "the scheduler's bus to drop the bad packets")

	c := connect(t, url, "client")
	_, res := submitAndWait(t, c, "trace-after-garbage", &pb.JobRequest{JobId: "after-garbage", Topic: "job.echo"})
	if res.GetJobResult().GetStatus() != pb.JobStatus_JOB_STATUS_COMPLETED {
		t.Errorf("job after garbage: %v", res)
	}
	if st := s.engine.Stats(); st.Submitted != 1 || st.Unknown != 0 {
		t.Errorf("scheduler stats = %+v", st)
	}
}

func TestTwoSchedulerReplicas(t *testing.T) {
	skipShort(t)
	t.Parallel()
	url := natstest.URL(t)
	heartbeats, hbConn := record(t, url, wire.SubjectHeartbeats)
	results, resConn := record(t, url, wire.SubjectResult)
	a := startScheduler(t, url, "sched-a")
	b := startScheduler(t, url, "sched-b")
	w := startWorker(t, url, 20*time.Millisecond)
	waitRegistered(t, a, w.w.ID())
	waitRegistered(t, b, w.w.ID())

	const jobs = 20
	c := connect(t, url, "client")
	for i := range jobs {
		id := fmt.Sprint("r", i)
		if _, err := client.Submit(c, "integration-client", "trace-"+id, &pb.JobRequest{JobId: id, Topic: "job.echo"}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, waitFor, func() bool { return len(results.all()) >= jobs }, "%d results", jobs)

	// Submissions and results are shared: each was handled by one replica.
	eventually(t, waitFor, func() bool {
		return a.engine.Stats().Results+b.engine.Stats().Results == jobs
	}, "the replicas to take %d results between them", jobs)
	sa, sb := a.engine.Stats(), b.engine.Stats()
	if sa.Submitted+sb.Submitted != jobs || sa.Dispatched+sb.Dispatched != jobs {
		t.Errorf("replica stats a=%+v b=%+v: want %d submissions and dispatches in all", sa, sb, jobs)
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
	sent := uint64(len(heartbeats.all()))
	eventually(t, waitFor, func() bool {
		return a.engine.Stats().Heartbeats == sent && b.engine.Stats().Heartbeats == sent
	}, "both replicas to see all %d heartbeats", sent)

	// Each job produced one result, and no replica handled one twice.
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
	sa, sb = a.engine.Stats(), b.engine.Stats()
	if sa.Submitted+sb.Submitted != jobs || sa.Results+sb.Results != jobs {
		t.Errorf("after the flush: a=%+v b=%+v", sa, sb)
	}
	if st := w.w.Stats(); st.Received != jobs || st.Completed != jobs {
		t.Errorf("worker stats = %+v", st)
	}
}
