package worker_test

import (
	"context"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cortex-os/core/internal/systest"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// Heartbeats carry what placement needs: capacity, capabilities, labels,
// pool, and whether the worker takes jobs on its own subject.
func TestHeartbeatReportsPlacementFields(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	labels := map[string]string{"gpu": "h100", "region": "eu"}
	r := e.start(t, worker.Config{
		Handler: worker.HandlerFunc(echoHandler), HeartbeatInterval: time.Hour,
		Capacity: 3, Capabilities: []string{"echo", "gpu"}, Labels: labels, Pool: "gpu", Direct: true,
	})
	labels["region"] = "us" // the worker keeps its own copy
	hb := e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() }, "heartbeat").GetHeartbeat()
	if hb.GetCapacity() != 3 || !slices.Equal(hb.GetCapabilities(), []string{"echo", "gpu"}) || hb.GetPool() != "gpu" || !hb.GetDirect() ||
		!maps.Equal(hb.GetLabels(), map[string]string{"gpu": "h100", "region": "eu"}) {
		t.Errorf("heartbeat = %v", hb)
	}
}

// A worker reports the GPU utilization its GPUUtilization reads, within
// 0–100: a reading that is not a number is reported as 0, so the
// scheduler does not refuse the heartbeat.
func TestHeartbeatReportsGPUUtilization(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		read float32
		want float32
	}{{42.5, 42.5}, {float32(math.NaN()), 0}, {float32(math.Inf(1)), 100}, {-3, 0}} {
		e := newEnv(t, "echo")
		r := e.start(t, worker.Config{
			Handler: worker.HandlerFunc(echoHandler), HeartbeatInterval: time.Hour,
			GPUUtilization: func() float32 { return c.read },
		})
		hb := e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() }, "heartbeat").GetHeartbeat()
		if got := hb.GetGpuUtilization(); got != c.want {
			t.Errorf("reading %v: heartbeat reports %v, want %v", c.read, got, c.want)
		}
	}
}

func TestHeartbeatCapacityDefaults(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	for _, tc := range []struct {
		cfg  worker.Config
		want int32
	}{
		{worker.Config{}, 64},
		{worker.Config{Concurrency: 5}, 5},
		{worker.Config{Capacity: 7}, 7},
		{worker.Config{Capacity: 2, Concurrency: 2}, 2},
	} {
		tc.cfg.Handler, tc.cfg.HeartbeatInterval = worker.HandlerFunc(echoHandler), time.Hour
		r := e.start(t, tc.cfg)
		hb := e.waitHeartbeat(t, func(hb *pb.Heartbeat) bool { return hb.GetWorkerId() == r.w.ID() }, "heartbeat").GetHeartbeat()
		if hb.GetCapacity() != tc.want || hb.GetDirect() || hb.GetPool() != "" || len(hb.GetLabels()) != 0 {
			t.Errorf("%+v: heartbeat = %v, want capacity %d, not direct", tc.cfg, hb, tc.want)
		}
	}
}

// A direct worker takes jobs on sys.worker.<id>.job as on its topic:
// confirmed, run, and refused beyond its capacity.
func TestDirectSubject(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	g := newGates()
	r := e.start(t, worker.Config{Capacity: 1, Direct: true, SlotWait: 50 * time.Millisecond, Handler: g.handler()})
	t.Cleanup(g.releaseAll)
	subject := wire.WorkerJobSubject(r.w.ID())
	if subject != "sys.worker."+r.w.ID()+".job" {
		t.Fatalf("subject %q", subject)
	}
	request := func(req *pb.JobRequest) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			p, err := e.observer.Request(ctx, subject, wire.JobRequestPacket("trace-"+req.GetJobId(), "test-scheduler", req))
			ch <- answer{p, err}
		}()
		return ch
	}
	first := e.job("first", 1)
	waitAck(t, request(first), first, r.w.ID())
	// Full: refused, on either subject.
	waitRefusal(t, request(e.job("second", 1)), "at capacity")
	waitRefusal(t, e.request(e.job("third", 1)), "at capacity")
	g.release("first", 1)
	e.results.waitResult(t, "first")
	systest.Eventually(t, waitFor, "the first job to end", func() bool { return r.w.Stats().Active == 0 })
	fourth := e.job("fourth", 1)
	waitAck(t, request(fourth), fourth, r.w.ID())
	g.release("fourth", 1)
	e.results.waitResult(t, "fourth")
	if s := r.w.Stats(); s.Refused != 2 || s.Completed != 2 {
		t.Errorf("stats = %+v", s)
	}
}

// A worker that is not direct does not listen on its own subject.
func TestNotDirectByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t, "echo")
	r := e.start(t, worker.Config{Handler: worker.HandlerFunc(echoHandler)})
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	_, err := e.observer.Request(ctx, wire.WorkerJobSubject(r.w.ID()), wire.JobRequestPacket("t", "s", e.job("j", 1)))
	if err == nil {
		t.Fatal("a worker that is not direct answered on its own subject")
	}
}

func TestPlacementConfigValidation(t *testing.T) {
	t.Parallel()
	b := &nopBus{}
	h := worker.HandlerFunc(echoHandler)
	for _, tc := range []struct {
		cfg  worker.Config
		want string
	}{
		{worker.Config{Capacity: -1}, "capacity -1"},
		{worker.Config{Concurrency: -2}, "concurrency -2"},
		{worker.Config{Capacity: 2, Concurrency: 3}, "differ"},
		{worker.Config{Capabilities: []string{"echo", ""}}, "capability"},
		{worker.Config{Capabilities: []string{" gpu"}}, "capability"},
		{worker.Config{Labels: map[string]string{"": "x"}}, "label key"},
		{worker.Config{Labels: map[string]string{"a=b": "x"}}, "label key"},
		{worker.Config{Labels: map[string]string{"region": " eu"}}, "label region"},
		{worker.Config{Pool: "my pool"}, "pool"},
	} {
		tc.cfg.Handler, tc.cfg.Kind = h, "echo"
		if _, err := worker.NewOnTransport(b, tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error about %q", tc.cfg, err, tc.want)
		}
	}
}
