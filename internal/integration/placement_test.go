package integration_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/scheduler"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

// Placement by what workers report (issue: capability, load, priority,
// fairness, backpressure), against a real NATS server: a scheduler with a
// placement config, direct workers with capacities, capabilities and labels,
// and a client that submits with confirmation.

type placedRig struct {
	url    string
	sched  *scheduler.Engine
	reg    *placement.Registry
	client *client.Client
}

func newPlacedRig(t *testing.T, placementYAML string) *placedRig {
	t.Helper()
	url := natstest.URL(t)
	cfg, err := placement.ParseConfig([]byte(placementYAML))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := placement.NewPools(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := placement.NewRegistry(placement.RegistryOptions{Pools: pools})
	s := startScheduler(t, url, "sched-placed", "memory", func(c *scheduler.Config) {
		c.Registry, c.Placement = reg, pools
		c.Tick = 20 * time.Millisecond
	})
	return &placedRig{url: url, sched: s.engine, reg: reg, client: systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "test-client"})}
}

// gateHandler records the order jobs start in and holds each until released.
type gateHandler struct {
	mu      sync.Mutex
	started []string
	by      map[string]string // job -> worker
	release chan struct{}
}

func newGateHandler() *gateHandler {
	return &gateHandler{by: map[string]string{}, release: make(chan struct{}, 1000)}
}

func (g *gateHandler) handler(workerID *string) worker.Handler {
	return worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		g.mu.Lock()
		g.started = append(g.started, job.ID())
		g.by[job.ID()] = *workerID
		g.mu.Unlock()
		select {
		case <-g.release:
		case <-ctx.Done():
			return worker.Result{}, ctx.Err()
		}
		return worker.Result{Ptr: "done"}, nil
	})
}

func (g *gateHandler) order() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.started...)
}

func (g *gateHandler) workerOf(job string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.by[job]
}

// startDirectWorker runs a direct echo-kind worker with the given capacity,
// capabilities and labels, and waits until the scheduler's registry has it.
func (r *placedRig) startDirectWorker(t *testing.T, capacity int, caps []string, labels map[string]string, h func(id *string) worker.Handler) string {
	t.Helper()
	var id string
	var handler worker.Handler = echo.Handler(echo.WorkTime{})
	if h != nil {
		handler = h(&id)
	}
	b := systest.Connect(t, r.url, "worker")
	w, err := worker.New(b.Conn(), worker.Config{
		Kind: echo.Kind, Handler: handler, Logger: discard,
		Capacity: capacity, Capabilities: caps, Labels: labels, Direct: true,
		HeartbeatInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	id = w.ID()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitFor):
			t.Error("worker did not stop")
		}
	})
	systest.Eventually(t, waitFor, fmt.Sprintf("worker %s registered", id), func() bool { _, ok := r.reg.Worker(id); return ok })
	return id
}

func (r *placedRig) submit(t *testing.T, req *pb.JobRequest) (*pb.JobInfo, error) {
	t.Helper()
	if req.Topic == "" {
		req.Topic = "job.echo"
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	return submitted(r.client.Submit(ctx, req, client.WithTraceID("trace-"+req.JobId)))
}

func (r *placedRig) mustSubmit(t *testing.T, req *pb.JobRequest) {
	t.Helper()
	if _, err := r.submit(t, req); err != nil {
		t.Fatalf("submit %s: %v", req.JobId, err)
	}
}

func (r *placedRig) get(t *testing.T, id string) *pb.JobInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	j, err := r.client.Get(ctx, id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return j
}

func (r *placedRig) waitState(t *testing.T, id string, state pb.JobState) *pb.JobInfo {
	t.Helper()
	var j *pb.JobInfo
	systest.Eventually(t, waitFor, fmt.Sprintf("job %s %s", id, lifecycle.Name(state)), func() bool { j = r.get(t, id); return j.GetState() == state })
	return j
}

func (r *placedRig) waitReason(t *testing.T, id, want string) {
	t.Helper()
	systest.Eventually(t, waitFor, fmt.Sprintf("job %s pending because %q", id, want), func() bool { return strings.Contains(r.get(t, id).GetPendingReason(), want) })
}

func TestCapabilityRoutingRunsJobsOnlyWhereTheCapabilityIs(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, "default_strategy: least-loaded\n")
	cpu := r.startDirectWorker(t, 4, []string{"echo", "cpu"}, nil, nil)
	gpu := r.startDirectWorker(t, 4, []string{"echo", "gpu"}, map[string]string{"region": "eu"}, nil)
	for i := range 6 {
		r.mustSubmit(t, &pb.JobRequest{JobId: fmt.Sprintf("needs-gpu-%d", i), RequiredCapabilities: []string{"gpu"}})
	}
	r.mustSubmit(t, &pb.JobRequest{JobId: "needs-eu", RequiredLabels: map[string]string{"region": "eu"}})
	for i := range 6 {
		if j := r.waitState(t, fmt.Sprintf("needs-gpu-%d", i), lifecycle.Completed); j.GetWorkerId() != gpu {
			t.Errorf("job needing gpu ran on %s, not the gpu worker %s (cpu worker %s)", j.GetWorkerId(), gpu, cpu)
		}
	}
	if j := r.waitState(t, "needs-eu", lifecycle.Completed); j.GetWorkerId() != gpu {
		t.Errorf("job needing region=eu ran on %s", j.GetWorkerId())
	}
	// Nothing has a TPU: the job waits and says why; the others go on.
	r.mustSubmit(t, &pb.JobRequest{JobId: "needs-tpu", RequiredCapabilities: []string{"tpu"}})
	r.mustSubmit(t, &pb.JobRequest{JobId: "after-tpu"})
	r.waitState(t, "after-tpu", lifecycle.Completed)
	r.waitReason(t, "needs-tpu", "no live worker with capability tpu")
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	listed, err := r.client.ListAll(ctx, client.ListOptions{State: lifecycle.Pending, Limit: 10})
	cancel()
	if err != nil || len(listed.Jobs) != 1 || !strings.Contains(listed.Jobs[0].GetPendingReason(), "capability tpu") {
		t.Errorf("job list --state pending: %v, %v; want needs-tpu with its reason", listed, err)
	}
	if j := r.get(t, "needs-tpu"); j.GetState() != lifecycle.Pending || j.GetPool() == "" {
		t.Errorf("needs-tpu: %s in pool %q, want PENDING in a pool", lifecycle.Name(j.GetState()), j.GetPool())
	}
	// A worker with the capability arrives: the job runs there.
	tpu := r.startDirectWorker(t, 1, []string{"echo", "tpu"}, nil, nil)
	if j := r.waitState(t, "needs-tpu", lifecycle.Completed); j.GetWorkerId() != tpu {
		t.Errorf("needs-tpu ran on %s, want %s", j.GetWorkerId(), tpu)
	}
}

func TestBurstSpreadsOverThePool(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, "default_strategy: least-loaded\n")
	g := newGateHandler()
	var ids []string
	for range 4 {
		ids = append(ids, r.startDirectWorker(t, 2, nil, nil, g.handler))
	}
	for i := range 8 {
		r.mustSubmit(t, &pb.JobRequest{JobId: fmt.Sprintf("burst-%d", i)})
	}
	systest.Eventually(t, waitFor, "8 jobs running", func() bool { return len(g.order()) == 8 })
	per := map[string]int{}
	for i := range 8 {
		per[g.workerOf(fmt.Sprintf("burst-%d", i))]++
	}
	for _, id := range ids {
		if per[id] != 2 {
			t.Errorf("worker %s runs %d jobs of the burst, want 2 each: %v", id, per[id], per)
		}
	}
	for range 8 {
		g.release <- struct{}{}
	}
	for i := range 8 {
		r.waitState(t, fmt.Sprintf("burst-%d", i), lifecycle.Completed)
	}
}

func TestSaturatedWorkerServesCriticalFirst(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, "default_strategy: least-loaded\n")
	g := newGateHandler()
	r.startDirectWorker(t, 1, nil, nil, g.handler)
	r.mustSubmit(t, &pb.JobRequest{JobId: "occupier"})
	systest.Eventually(t, waitFor, "the occupier running", func() bool { return len(g.order()) == 1 })
	batch, inter, crit := pb.JobPriority_JOB_PRIORITY_BATCH, pb.JobPriority_JOB_PRIORITY_INTERACTIVE, pb.JobPriority_JOB_PRIORITY_CRITICAL
	for _, j := range []struct {
		id string
		p  pb.JobPriority
	}{{"batch-1", batch}, {"batch-2", batch}, {"inter-1", inter}, {"crit-1", crit}, {"inter-2", inter}, {"crit-2", crit}} {
		r.mustSubmit(t, &pb.JobRequest{JobId: j.id, Priority: j.p})
	}
	r.waitReason(t, "batch-1", "full")
	for n := 2; n <= 7; n++ {
		g.release <- struct{}{}
		systest.Eventually(t, waitFor, fmt.Sprintf("%d jobs started", n), func() bool { return len(g.order()) == n })
	}
	g.release <- struct{}{}
	want := []string{"occupier", "crit-1", "crit-2", "inter-1", "inter-2", "batch-1", "batch-2"}
	if got := g.order(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("start order %v, want %v", got, want)
	}
}

func TestFloodingTenantDoesNotStarveALightOne(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, "default_strategy: least-loaded\n")
	g := newGateHandler()
	r.startDirectWorker(t, 1, nil, nil, g.handler)
	r.mustSubmit(t, &pb.JobRequest{JobId: "occupier", Tenant: "flood"})
	systest.Eventually(t, waitFor, "the occupier running", func() bool { return len(g.order()) == 1 })
	for i := range 40 {
		r.mustSubmit(t, &pb.JobRequest{JobId: fmt.Sprintf("flood-%d", i), Tenant: "flood"})
	}
	for i := range 4 {
		r.mustSubmit(t, &pb.JobRequest{JobId: fmt.Sprintf("light-%d", i), Tenant: "light"})
	}
	// Release one job at a time; with equal weights the light tenant's four
	// jobs start within the next eight or so, not after the flood's forty.
	for n := 2; n <= 11; n++ {
		g.release <- struct{}{}
		systest.Eventually(t, waitFor, fmt.Sprintf("%d jobs started", n), func() bool { return len(g.order()) >= n })
	}
	light := 0
	for _, id := range g.order() {
		if strings.HasPrefix(id, "light-") {
			light++
		}
	}
	if light != 4 {
		t.Errorf("after 11 starts, %d of the light tenant's 4 jobs ran: %v", light, g.order())
	}
	for range 60 {
		g.release <- struct{}{}
	}
}

func TestTenantConcurrencyLimitAndItsReason(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, `
default_strategy: least-loaded
tenants:
  - name: acme
    max_concurrent: 1
`)
	g := newGateHandler()
	r.startDirectWorker(t, 4, nil, nil, g.handler)
	r.mustSubmit(t, &pb.JobRequest{JobId: "acme-1", Tenant: "acme"})
	r.mustSubmit(t, &pb.JobRequest{JobId: "acme-2", Tenant: "acme"})
	r.mustSubmit(t, &pb.JobRequest{JobId: "other-1", Tenant: "other"})
	systest.Eventually(t, waitFor, "acme-1 and other-1 running", func() bool { return len(g.order()) == 2 })
	r.waitReason(t, "acme-2", "tenant acme at its limit of 1")
	g.release <- struct{}{}
	g.release <- struct{}{}
	g.release <- struct{}{}
	r.waitState(t, "acme-2", lifecycle.Completed)
}

func TestQueueBoundRefusesAFloodAndKeepsAnswering(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, `
default_strategy: least-loaded
pools:
  - name: gpu
    topics: [job.gpu]
    max_pending: 50
tenants:
  - name: capped
    max_pending: 5
`)
	// Nobody serves job.gpu: everything submitted there waits.
	var refused, accepted int
	var reason string
	for i := range 80 {
		_, err := r.submit(t, &pb.JobRequest{JobId: fmt.Sprintf("gpu-%d", i), Topic: "job.gpu"})
		var re *client.RefusedError
		switch {
		case err == nil:
			accepted++
		case errors.As(err, &re) && re.Retryable:
			refused++
			reason = re.Reason
		default:
			t.Fatalf("submit gpu-%d: %v", i, err)
		}
	}
	if accepted != 50 || refused != 30 || !strings.Contains(reason, "pool gpu full: 50 jobs pending") {
		t.Errorf("accepted %d, refused %d (%q); want 50, 30 and the pool's reason", accepted, refused, reason)
	}
	// A tenant's own bound, in another pool.
	for i := range 5 {
		r.mustSubmit(t, &pb.JobRequest{JobId: fmt.Sprintf("capped-%d", i), Topic: "job.unserved", Tenant: "capped"})
	}
	_, err := r.submit(t, &pb.JobRequest{JobId: "capped-5", Topic: "job.unserved", Tenant: "capped"})
	var re *client.RefusedError
	if !errors.As(err, &re) || !re.Retryable || !strings.Contains(re.Reason, "tenant capped at its pending limit of 5") {
		t.Errorf("sixth job of the capped tenant: %v, want a retryable refusal naming the tenant's bound", err)
	}
	// A flood of 100,000 submissions without confirmations: refused past
	// the bound and counted, nothing more recorded (the scheduler's memory
	// holds what the bounds allow), and the scheduler still answers.
	admitted := r.sched.Stats().Accepted
	b := systest.Connect(t, r.url, "flooder")
	const flood = 100_000
	for i := range flood {
		if err := b.Publish("sys.job.submit", submitPacketFor(fmt.Sprintf("flood-%d", i), "job.gpu")); err != nil {
			t.Fatal(err)
		}
		if i%10_000 == 0 {
			flush(t, b) // keep the publisher from outrunning its own buffer
		}
	}
	flush(t, b)
	systest.Eventually(t, 2*waitFor, "the flood refused", func() bool { return r.sched.Stats().Backpressure >= 30+1+flood })
	if got := r.sched.Stats().Accepted; got != admitted {
		t.Errorf("the flood added %d jobs past the bounds", got-admitted)
	}
	if j := r.get(t, "gpu-0"); j.GetState() != lifecycle.Pending {
		t.Errorf("gpu-0 is %s, want PENDING", lifecycle.Name(j.GetState()))
	}
}

func submitPacketFor(id, topic string) *pb.BusPacket {
	p := &pb.BusPacket{TraceId: id, SenderId: "flooder"}
	p.Payload = &pb.BusPacket_JobRequest{JobRequest: &pb.JobRequest{JobId: id, Topic: topic}}
	return p
}

func TestWorkersAreListedWithWhatTheyReport(t *testing.T) {
	t.Parallel()
	r := newPlacedRig(t, "default_strategy: least-loaded\n")
	id := r.startDirectWorker(t, 3, []string{"echo", "gpu"}, map[string]string{"gpu": "h100"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	ws, err := r.client.Workers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		hb := w.GetHeartbeat()
		if hb.GetWorkerId() == id {
			if hb.GetCapacity() != 3 || hb.GetLabels()["gpu"] != "h100" || w.GetLastSeenMs() == 0 {
				t.Errorf("worker listed as %v", w)
			}
			return
		}
	}
	t.Errorf("worker %s not listed: %v", id, ws)
}

// Without a placement section (the naive strategy: the NATS queue group
// picks), a job that needs a capability still runs only where it exists: a
// worker without it hands the job back and it is offered again.
func TestWorkersRefuseJobsTheyCannotRun(t *testing.T) {
	t.Parallel()
	url := natstest.URL(t)
	s := startScheduler(t, url, "sched-naive", "memory", func(c *scheduler.Config) { c.NoWorkerRetry = 20 * time.Millisecond })
	start := func(caps []string) string {
		b := systest.Connect(t, url, "worker")
		w, err := worker.New(b.Conn(), worker.Config{Kind: echo.Kind, Logger: discard, Capabilities: caps,
			Handler: echo.Handler(echo.WorkTime{}), HeartbeatInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		waitRegistered(t, s, w.ID())
		return w.ID()
	}
	start([]string{"echo"})
	gpu := start([]string{"echo", "gpu"})
	cl := systest.Client(t, systest.Connect(t, url, "client"), client.Options{SenderID: "test-client"})
	for i := range 8 {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		_, err := cl.Submit(ctx, &pb.JobRequest{JobId: fmt.Sprintf("gpu-%d", i), Topic: "job.echo", RequiredCapabilities: []string{"gpu"}}, client.WithTraceID("t"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		if j := s.waitState(t, fmt.Sprintf("gpu-%d", i), lifecycle.Completed); j.GetWorkerId() != gpu {
			t.Errorf("gpu-%d ran on %s, not on the gpu worker %s", i, j.GetWorkerId(), gpu)
		}
	}
}
