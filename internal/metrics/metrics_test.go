package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/metrics"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/worker"
)

const testPolicy = `version: "metrics-test"
default: allow
rules:
  - id: no-forbidden
    match:
      topics: ["job.forbidden"]
    decision: deny
    reason: forbidden in this test
`

// rig is NATS, a scheduler and workers sharing one registry, as cortex dev
// runs them with --metrics-addr.
type rig struct {
	reg    *prometheus.Registry
	url    string
	client *client.Client
}

func startRig(t *testing.T) *rig {
	t.Helper()
	srv := natstest.RunServer(t)
	r := &rig{reg: metrics.NewRegistry(), url: srv.ClientURL()}
	policy := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(policy, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, stop := context.WithCancel(context.Background())
	done, started := make(chan error, 1), make(chan struct{})
	go func() {
		done <- system.RunScheduler(ctx, system.SchedulerOptions{
			NatsURL: r.url, ID: "metrics-test", Logger: log, Metrics: r.reg,
			Settings: config.Scheduler{MaxAttempts: 1},
			Safety:   config.Safety{Policy: policy},
			Started:  func() { close(started) },
		})
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("scheduler: %v", err)
		}
	})
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("scheduler: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the scheduler did not start")
	}
	nc, err := nats.Connect(r.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if r.client, err = client.New(nc, client.Options{Logger: log}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) runWorker(t *testing.T, kind string, h worker.HandlerFunc) {
	t.Helper()
	nc, err := nats.Connect(r.url)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(nc, worker.Config{Kind: kind, Handler: h, Metrics: r.reg, Capacity: 4,
		HeartbeatInterval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-done; nc.Close() })
	<-w.Ready()
}

// value is the value of the series name{labels}, or NaN when it is absent.
// A histogram's value is its sample count.
func value(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return math.NaN()
}

func TestMetricsAfterKnownJobs(t *testing.T) {
	r := startRig(t)
	r.runWorker(t, "echo", func(_ context.Context, j *worker.Job) (worker.Result, error) {
		return worker.Result{Ptr: "memory://echo/" + j.ID()}, nil
	})
	r.runWorker(t, "fail", func(context.Context, *worker.Job) (worker.Result, error) {
		return worker.Result{}, errors.New("this job fails")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	systest.Eventually(t, 10*time.Second, "both workers known", func() bool { return value(t, r.reg, "cortex_workers", map[string]string{"pool": "default"}) == 2 })

	// The sequence: three jobs complete, one fails (one attempt: it is
	// dead-lettered), one is denied, one waits for a worker that never
	// comes and is cancelled.
	for range 3 {
		job, err := r.client.Submit(ctx, &pb.JobRequest{Topic: "job.echo"})
		if err != nil {
			t.Fatal(err)
		}
		if job, err = r.client.Wait(ctx, job.GetJobId()); err != nil || job.GetState() != pb.JobState_JOB_STATE_COMPLETED {
			t.Fatalf("echo job: %v %v", job.GetState(), err)
		}
	}
	job, err := r.client.Submit(ctx, &pb.JobRequest{Topic: "job.fail"})
	if err != nil {
		t.Fatal(err)
	}
	if job, err = r.client.Wait(ctx, job.GetJobId()); job.GetState() != pb.JobState_JOB_STATE_FAILED {
		t.Fatalf("failing job: %v %v", job.GetState(), err)
	}
	if _, err := r.client.Submit(ctx, &pb.JobRequest{Topic: "job.forbidden"}); !errors.Is(err, client.ErrDenied) {
		t.Fatalf("forbidden job: %v, want denied", err)
	}
	job, err = r.client.Submit(ctx, &pb.JobRequest{Topic: "job.nobody"})
	if err != nil {
		t.Fatal(err)
	}
	systest.Eventually(t, 10*time.Second, "a job pending", func() bool {
		return value(t, r.reg, "cortex_jobs_pending", map[string]string{"pool": "default"}) == 1
	})
	if _, err := r.client.Cancel(ctx, job.GetJobId(), "test"); err != nil {
		t.Fatal(err)
	}
	if job, err = r.client.Wait(ctx, job.GetJobId()); job.GetState() != pb.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("cancelled job: %v %v", job.GetState(), err)
	}
	// The failing job's result is counted by the worker before the
	// scheduler hears it; the scheduler writes before it answers Wait.
	systest.Eventually(t, 10*time.Second, "nothing active", func() bool {
		return value(t, r.reg, "cortex_jobs_pending", map[string]string{"pool": "default"}) == 0 &&
			value(t, r.reg, "cortex_jobs_running", map[string]string{"pool": "default"}) == 0
	})

	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"cortex_jobs_submitted_total", nil, 6},
		{"cortex_jobs_finished_total", map[string]string{"state": "COMPLETED"}, 3},
		{"cortex_jobs_finished_total", map[string]string{"state": "FAILED"}, 1},
		{"cortex_jobs_finished_total", map[string]string{"state": "DENIED"}, 1},
		{"cortex_jobs_finished_total", map[string]string{"state": "TIMEOUT"}, 0},
		{"cortex_jobs_finished_total", map[string]string{"state": "CANCELLED"}, 1},
		{"cortex_jobs_pending", map[string]string{"pool": "default"}, 0},
		{"cortex_jobs_running", map[string]string{"pool": "default"}, 0},
		{"cortex_workers", map[string]string{"pool": "default"}, 2},
		{"cortex_worker_slots", map[string]string{"pool": "default", "state": "used"}, 0},
		{"cortex_worker_slots", map[string]string{"pool": "default", "state": "free"}, 8},
		{"cortex_safety_decisions_total", map[string]string{"decision": "allow", "rule": "none"}, 5},
		{"cortex_safety_decisions_total", map[string]string{"decision": "deny", "rule": "no-forbidden"}, 1},
		{"cortex_job_run_seconds", map[string]string{"pool": "default"}, 4}, // 3 completed, 1 failed: the one that never ran has none
		{"cortex_dispatch_retries_total", nil, 0},
		{"cortex_leases_lost_total", nil, 0},
		{"cortex_results_fenced_total", nil, 0},
		{"cortex_job_follow_overflows_total", nil, 0},
		{"cortex_bus_packets_rejected_total", map[string]string{"reason": "malformed"}, 0},
		{"cortex_dlq_jobs", nil, 1},
		{"cortex_worker_jobs_total", map[string]string{"topic": "job.echo", "status": "completed"}, 3},
		{"cortex_worker_jobs_total", map[string]string{"topic": "job.fail", "status": "failed"}, 1},
		{"cortex_worker_jobs_total", map[string]string{"topic": "job.echo", "status": "failed"}, 0},
		{"cortex_worker_job_seconds", map[string]string{"topic": "job.echo"}, 3},
		{"cortex_worker_job_seconds", map[string]string{"topic": "job.fail"}, 1},
	}
	for _, w := range want {
		if got := value(t, r.reg, w.name, w.labels); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	// Wait follows the job it waits for: the scheduler heard it say so.
	if got := value(t, r.reg, "cortex_job_follows_total", nil); !(got >= 1) {
		t.Errorf("cortex_job_follows_total = %v, want at least 1 (Wait announces that it follows)", got)
	}
	// Every job that was dispatched waited in the queue: the four that a
	// worker served (placement, the default, never dispatches the
	// unserved one; the naive strategy would offer it again and again).
	if got := value(t, r.reg, "cortex_job_queue_wait_seconds", map[string]string{"pool": "default"}); !(got >= 4) {
		t.Errorf("cortex_job_queue_wait_seconds count = %v, want at least 4", got)
	}

	// The same over HTTP, with the runtime collectors.
	s, err := metrics.Listen("127.0.0.1:0", r.reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	resp, err := http.Get("http://" + s.Addr() + metrics.Path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{`cortex_jobs_finished_total{state="COMPLETED"} 3`, "go_goroutines", "process_cpu_seconds_total", "cortex_job_queue_wait_seconds_bucket"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("GET /metrics has no %q", name)
		}
	}
}
