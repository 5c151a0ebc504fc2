package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/safety"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
)

// Buckets of the queue-wait and run-time histograms, in seconds: from a
// millisecond (a job dispatched at once) to ten minutes.
var Buckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600}

// finishedStates are the label values of cortex_jobs_finished_total.
var finishedStates = []pb.JobState{lifecycle.Completed, lifecycle.Failed, lifecycle.Denied, lifecycle.Timeout, lifecycle.Cancelled}

// Scheduler is the scheduler's metrics. Set it as scheduler.Config.Observer,
// then Attach the engine it observes: until then the scrape-time series are
// absent.
type Scheduler struct {
	finished  map[pb.JobState]prometheus.Counter
	queueWait *prometheus.HistogramVec
	run       *prometheus.HistogramVec
	decisions *prometheus.CounterVec

	// pools: label -> its children of queueWait and run, resolved once.
	pools sync.Map

	src atomic.Pointer[source]
}

type source struct {
	engine *scheduler.Engine
	bus    func() bus.Stats
	dead   scheduler.DeadLetters
}

type poolHists struct{ wait, run prometheus.Observer }

var _ scheduler.Observer = (*Scheduler)(nil)

// NewScheduler registers the scheduler's series with reg.
func NewScheduler(reg prometheus.Registerer) *Scheduler {
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "jobs_finished_total",
		Help: "Jobs this scheduler recorded in a terminal state, by state.",
	}, []string{"state"})
	s := &Scheduler{
		finished: map[pb.JobState]prometheus.Counter{},
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "job_queue_wait_seconds", Buckets: Buckets,
			Help: "Time from a job's submission (or its return to PENDING) to its dispatch, by pool.",
		}, []string{"pool"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "job_run_seconds", Buckets: Buckets,
			Help: "Time from a job's dispatch to its result (or its end), by pool.",
		}, []string{"pool"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "safety_decisions_total",
			Help: "Safety decisions on jobs, by decision (allow, deny, throttle) and rule.",
		}, []string{"decision", "rule"}),
	}
	for _, st := range finishedStates {
		s.finished[st] = finished.WithLabelValues(lifecycle.Name(st))
	}
	reg.MustRegister(finished, s.queueWait, s.run, s.decisions, (*schedulerCollector)(s))
	return s
}

// Attach makes the scrape-time series read engine, the bus it runs on
// (b may be nil) and its dead letters (nil: no cortex_dlq_jobs).
func (s *Scheduler) Attach(engine *scheduler.Engine, b func() bus.Stats, dead scheduler.DeadLetters) {
	s.src.Store(&source{engine: engine, bus: b, dead: dead})
}

func (s *Scheduler) hists(pool string) *poolHists {
	if pool == "" {
		pool = scheduler.DefaultPoolLabel
	}
	if h, ok := s.pools.Load(pool); ok {
		return h.(*poolHists)
	}
	h, _ := s.pools.LoadOrStore(pool, &poolHists{wait: s.queueWait.WithLabelValues(pool), run: s.run.WithLabelValues(pool)})
	return h.(*poolHists)
}

// JobRecorded implements scheduler.Observer.
func (s *Scheduler) JobRecorded(prev, next *pb.JobInfo) {
	from, to := prev.GetState(), next.GetState()
	if from == to && prev.GetAttempt() == next.GetAttempt() {
		return
	}
	switch {
	case to == lifecycle.Dispatched:
		since := next.GetCreatedMs()
		if prev != nil {
			since = prev.GetUpdatedMs()
		}
		s.hists(scheduler.PoolLabel(next)).wait.Observe(seconds(next.GetUpdatedMs() - since))
	case lifecycle.Terminal(to) && !lifecycle.Terminal(from):
		if c := s.finished[to]; c != nil {
			c.Inc()
		}
		if (from == lifecycle.Dispatched || from == lifecycle.Running) && next.GetAttemptStartedMs() > 0 {
			s.hists(scheduler.PoolLabel(next)).run.Observe(seconds(next.GetUpdatedMs() - next.GetAttemptStartedMs()))
		}
	case to == lifecycle.Pending && from == lifecycle.Running && prev.GetAttemptStartedMs() > 0:
		// an attempt that ran and ended without the job (failed, lease
		// lost): it ran too. One no worker took (no responders, not
		// confirmed) did not.
		s.hists(scheduler.PoolLabel(next)).run.Observe(seconds(next.GetUpdatedMs() - prev.GetAttemptStartedMs()))
	}
}

func seconds(ms int64) float64 { return float64(max(ms, 0)) / 1000 }

// SafetyDecided implements scheduler.Observer.
func (s *Scheduler) SafetyDecided(_ *pb.JobRequest, _ string, v safety.Verdict) {
	s.decisions.WithLabelValues(v.Decision.String(), ruleLabel(v.RuleID)).Inc()
}

// ruleLabel is a rule id as a label: the policy's rule ids are bounded;
// "none" for a decision no rule made (the default allow).
func ruleLabel(id string) string {
	if id == "" {
		return "none"
	}
	return id
}

// schedulerCollector reads the engine at scrape time.
type schedulerCollector Scheduler

var (
	descSubmitted = prometheus.NewDesc("cortex_jobs_submitted_total", "Job requests this scheduler received.", nil, nil)
	descPending   = prometheus.NewDesc("cortex_jobs_pending", "Jobs PENDING, by pool.", []string{"pool"}, nil)
	descRunning   = prometheus.NewDesc("cortex_jobs_running", "Jobs handed to a worker (DISPATCHED or RUNNING), by pool.", []string{"pool"}, nil)
	descWorkers   = prometheus.NewDesc("cortex_workers", "Live workers, by the pool they serve.", []string{"pool"}, nil)
	descSlots     = prometheus.NewDesc("cortex_worker_slots", "Job slots of the live workers (their capacity), used and free, by pool.", []string{"pool", "state"}, nil)
	descRetries   = prometheus.NewDesc("cortex_dispatch_retries_total", "Attempts sent back to PENDING to be dispatched again.", nil, nil)
	descLeases    = prometheus.NewDesc("cortex_leases_lost_total", "Running jobs whose worker stopped heartbeating them.", nil, nil)
	descFenced    = prometheus.NewDesc("cortex_results_fenced_total", "Results of an attempt that was no longer current, refused.", nil, nil)
	descFollows   = prometheus.NewDesc("cortex_job_follows_total", "Follow announcements heard (sys.job.follow): clients following a job's events, or every job's.", nil, nil)
	descOverflows = prometheus.NewDesc("cortex_job_follow_overflows_total", "Follow announcements of a job beyond the scheduler's MaxFollows: each made it publish every job's events for FollowTTL.", nil, nil)
	descRejected  = prometheus.NewDesc("cortex_bus_packets_rejected_total", "Packets refused, by reason.", []string{"reason"}, nil)
	descDLQ       = prometheus.NewDesc("cortex_dlq_jobs", "Jobs in the dead-letter queue.", nil, nil)
)

func (c *schedulerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSubmitted, descPending, descRunning, descWorkers, descSlots, descRetries, descLeases, descFenced, descFollows, descOverflows, descRejected, descDLQ} {
		ch <- d
	}
}

// DLQCountTimeout bounds the dead-letter count of one scrape.
const DLQCountTimeout = 2 * time.Second

func (c *schedulerCollector) Collect(ch chan<- prometheus.Metric) {
	src := (*Scheduler)(c).src.Load()
	if src == nil || src.engine == nil {
		return
	}
	st := src.engine.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter(descSubmitted, st.Submitted)
	counter(descRetries, st.Retries)
	counter(descLeases, st.LeasesLost)
	counter(descFenced, st.StaleResults)
	counter(descFollows, st.Follows)
	counter(descOverflows, st.FollowOverflows)
	var bs bus.Stats
	if src.bus != nil {
		bs = src.bus()
	}
	for _, r := range []struct {
		reason string
		n      uint64
	}{
		{"malformed", bs.Malformed}, {"too_large", bs.TooLarge}, {"unknown_payload", bs.UnknownPayload},
		{"reply_refused", bs.RepliesRefused + st.RepliesRefused}, {"identity", st.IdentityRejected},
		{"client_refused", st.ClientsRefused}, {"foreign_result", st.ForeignResults},
		{"untrusted_result", st.UntrustedResults}, {"out_of_bounds", st.InvalidPackets}, {"unknown", st.Unknown},
	} {
		counter(descRejected, r.n, r.reason)
	}
	for pool, l := range src.engine.Load() {
		gauge(descPending, l.Pending, pool)
		gauge(descRunning, l.Running, pool)
		gauge(descWorkers, l.Workers, pool)
		gauge(descSlots, l.SlotsUsed, pool, "used")
		gauge(descSlots, l.SlotsFree, pool, "free")
	}
	if src.dead != nil {
		if n, ok := countDeadLetters(src.dead); ok {
			gauge(descDLQ, n)
		}
	}
}

// counter is a dead-letter queue that counts its jobs without reading them.
type counter interface {
	Count(ctx context.Context) (int, error)
}

func countDeadLetters(d scheduler.DeadLetters) (int, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), DLQCountTimeout)
	defer cancel()
	if c, ok := d.(counter); ok {
		n, err := c.Count(ctx)
		return n, err == nil
	}
	jobs, err := d.List(ctx, 0)
	return len(jobs), err == nil
}
