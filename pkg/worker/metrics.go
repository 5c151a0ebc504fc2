package worker

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// workerMetrics are cortex_worker_jobs_total{topic,status} and
// cortex_worker_job_seconds{topic}, registered with Config.Metrics. Workers
// sharing a registry share the series (the collectors are registered once).
type workerMetrics struct {
	byStatus map[pb.JobStatus]prometheus.Counter
	seconds  prometheus.Observer
}

// jobBuckets are the handler-time histogram's buckets, in seconds.
var jobBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600}

func newWorkerMetrics(reg prometheus.Registerer, topic string) (*workerMetrics, error) {
	jobs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "cortex_worker_jobs_total",
		Help: "Jobs this worker ran, by topic and result status (completed, failed, timeout, cancelled).",
	}, []string{"topic", "status"})
	secs := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "cortex_worker_job_seconds", Buckets: jobBuckets,
		Help: "Time this worker's handler took per job (and storing its result), by topic.",
	}, []string{"topic"})
	var err error
	if jobs, err = registerOnce(reg, jobs); err != nil {
		return nil, err
	}
	if secs, err = registerOnce(reg, secs); err != nil {
		return nil, err
	}
	m := &workerMetrics{byStatus: map[pb.JobStatus]prometheus.Counter{}, seconds: secs.WithLabelValues(topic)}
	for st, name := range map[pb.JobStatus]string{
		pb.JobStatus_JOB_STATUS_COMPLETED: "completed",
		pb.JobStatus_JOB_STATUS_FAILED:    "failed",
		pb.JobStatus_JOB_STATUS_TIMEOUT:   "timeout",
		pb.JobStatus_JOB_STATUS_CANCELLED: "cancelled",
	} {
		m.byStatus[st] = jobs.WithLabelValues(topic, name)
	}
	return m, nil
}

// registerOnce registers c, or returns the equal collector already there.
func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

// observe counts one job's end; nil-safe.
func (m *workerMetrics) observe(status pb.JobStatus, took time.Duration) {
	if m == nil {
		return
	}
	if c := m.byStatus[status]; c != nil {
		c.Inc()
	}
	m.seconds.Observe(took.Seconds())
}
