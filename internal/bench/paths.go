package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"

	"github.com/cortex-os/core/internal/echo"
	"github.com/cortex-os/core/internal/infrastructure/bus"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/logging"
	"github.com/cortex-os/core/internal/scheduler"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

// env is what both paths share in a run.
type env struct {
	opts    Options
	url     string
	runID   string
	topic   string // job.bench.<run>: the subject jobs are dispatched on
	payload string
}

// path is one of the two things measured.
type path struct {
	name  string
	label string // for the progress bar
	tag   string // in job ids, so the two runs never mix
	// subjects the client submits on and takes results from.
	subjects func(e *env) (submit, result string)
	// start runs the parts between the client's submission and its result.
	start func(ctx context.Context, e *env, tr *tracker) (*parts, error)
}

// parts is what a path started: its connections, and how to stop them.
type parts struct {
	buses []*bus.NatsBus
	stop  []func() error // run in order, before the buses close
}

// close stops the parts, then drains and closes their connections.
func (p *parts) close() error {
	var errs []error
	for _, stop := range p.stop {
		errs = append(errs, stop())
	}
	for _, b := range p.buses {
		b.Close()
	}
	return errors.Join(errs...)
}

// busErrors counts what the connections of p saw go wrong: asynchronous errors
// (a slow consumer drops messages), undecodable packets, handler panics.
func (p *parts) busErrors() uint64 {
	var n uint64
	for _, b := range p.buses {
		s := b.Stats()
		n += s.AsyncErrors + s.Malformed + s.TooLarge + s.UnknownPayload + s.HandlerPanics
	}
	return n
}

func (e *env) connect(p *parts, name string) (*bus.NatsBus, error) {
	b, err := bus.Connect(bus.Config{URL: e.url, Name: name, Logger: logging.Discard(), Options: e.opts.NatsOptions})
	if err != nil {
		return nil, err
	}
	p.buses = append(p.buses, b)
	return b, nil
}

// floorPath is the same message path without control-plane logic: the relay
// republishes the client's bytes to the worker subject without decoding them;
// a worker (a queue subscriber) decodes the job and publishes its result with
// the same bus code and the same packet a real echo worker would.
var floorPath = path{
	name:     "floor",
	label:    "floor",
	tag:      "f",
	subjects: floorSubjects,
	start:    startFloor,
}

func floorSubjects(e *env) (submit, result string) {
	return "bench." + e.runID + ".submit", "bench." + e.runID + ".result"
}

func startFloor(ctx context.Context, e *env, tr *tracker) (_ *parts, err error) {
	p := &parts{}
	defer func() {
		if err != nil {
			_ = p.close()
		}
	}()
	submit, result := floorSubjects(e)
	work := "bench." + e.runID + ".work"

	relay, err := e.connect(p, "cortex-bench-floor-relay")
	if err != nil {
		return nil, err
	}
	rc := relay.Conn()
	sub, err := rc.Subscribe(submit, func(m *nats.Msg) { _ = rc.Publish(work, m.Data) })
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	p.stop = append(p.stop, sub.Drain)

	for i := range e.opts.Workers {
		wb, err := e.connect(p, "cortex-bench-floor-worker")
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("bench-floor-worker-%d", i)
		drain, err := wb.Subscribe(work, "bench-floor-"+e.runID, func(pkt *pb.BusPacket) {
			req := pkt.GetJobRequest()
			if req == nil {
				return
			}
			tr.dispatch(req.GetJobId())
			start := time.Now()
			ptr, err := echo.Echo(ctx, echo.WorkTime{}, req.GetJobId())
			res := &pb.JobResult{
				JobId:       req.GetJobId(),
				Status:      pb.JobStatus_JOB_STATUS_COMPLETED,
				ResultPtr:   ptr,
				WorkerId:    id,
				ExecutionMs: time.Since(start).Milliseconds(),
			}
			if err != nil {
				res.Status = pb.JobStatus_JOB_STATUS_FAILED
			}
			_ = wb.Publish(result, wire.JobResultPacket(pkt.GetTraceId(), id, res))
		})
		if err != nil {
			return nil, fmt.Errorf("floor worker: %w", err)
		}
		p.stop = append(p.stop, drain)
	}
	for _, b := range p.buses {
		if err := flush(ctx, b); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// systemPath is the complete system: the scheduler (as cortex-scheduler
// runs it by default: placement by the workers' reports, the shipped policy
// through the safety kernel; see placed.go) and direct echo workers on the
// worker runtime, each on its own connection.
var systemPath = path{
	name:  "system",
	label: "system",
	tag:   "s",
	subjects: func(*env) (string, string) {
		return wire.SubjectSubmit, wire.SubjectResult
	},
	start: startSystem,
}

func startSystem(ctx context.Context, e *env, tr *tracker) (_ *parts, err error) {
	p := &parts{}
	defer func() {
		if err != nil {
			_ = p.close()
		}
	}()
	log := logging.Discard()
	sb, err := e.connect(p, "cortex-bench-scheduler")
	if err != nil {
		return nil, err
	}
	reg, pools, err := systemPlacement(e.opts.Strategy)
	if err != nil {
		return nil, err
	}
	schedID := scheduler.UniqueID("cortex-bench-scheduler")
	checker, stopSafety, err := systemSafety(e.opts, sb, schedID, log)
	if err != nil {
		return nil, err
	}
	p.stop = append(p.stop, func() error { stopSafety(); return nil })
	var (
		store      scheduler.JobStore
		dead       scheduler.DeadLetters
		closeStore func() error
	)
	if e.opts.Store == StoreJetStream {
		// Buckets of this run's own, so a bench against a live server
		// never touches its jobs; intake and results through streams.
		js, err := sb.JetStream()
		if err != nil {
			return nil, err
		}
		replicas := bus.DefaultReplicas(sb.Conn(), e.opts.Replicas)
		sb.SetReplicas(replicas)
		kv, err := kvstore.New(ctx, js, kvstore.Config{Bucket: "CORTEX_BENCH_JOBS_" + e.runID, SkipOwnWrites: true, Replicas: replicas})
		if err != nil {
			return nil, err
		}
		store, closeStore = kv, kv.Close
		if dead, err = kvstore.NewDeadLetters(ctx, js, kvstore.DLConfig{
			Stream: "CORTEX_BENCH_DLQ_" + e.runID, SubjectPrefix: "bench." + e.runID + ".dlq", Replicas: replicas,
		}); err != nil {
			return nil, err
		}
		sb.SetDurable(true)
	}
	obs := newBenchMetrics(e.opts.Metrics) // metrics.go; nil without --metrics
	spans := newBenchTraces(e.opts.Traces) // traces.go; nil without --traces
	engine, err := scheduler.New(scheduler.Config{
		Observer:    scheduler.Observers(obs.observer(), spans.observer(sb)),
		Bus:         sb,
		Safety:      checker,
		Registry:    reg,
		Placement:   pools,
		ID:          schedID,
		Strategy:    scheduler.NewNaiveStrategy(),
		Store:       store,
		DeadLetters: dead,
		Logger:      log,
	})
	if err != nil {
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		return nil, err
	}
	obs.start(p, engine, sb, dead)
	spans.stop(p)
	// Workers stop first, so that their last results still reach the
	// scheduler; the scheduler then drains (the stop functions run in order).
	var (
		runs     sync.WaitGroup
		runErrs  = make(chan error, e.opts.Workers)
		stopWork context.CancelFunc
		workCtx  context.Context
	)
	workCtx, stopWork = context.WithCancel(context.WithoutCancel(ctx))
	p.stop = append(p.stop,
		func() error {
			stopWork()
			runs.Wait()
			close(runErrs)
			var errs []error
			for err := range runErrs {
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		},
		func() error { return engine.Stop(context.WithoutCancel(ctx)) },
	)
	if closeStore != nil {
		p.stop = append(p.stop, closeStore) // once the engine no longer writes
	}
	if err := flush(ctx, sb); err != nil {
		return nil, err
	}

	// The hook: the time a worker's handler receives the job is its dispatch.
	echoHandler := echo.Handler(echo.WorkTime{})
	hooked := worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
		tr.dispatch(job.ID())
		return echoHandler(ctx, job)
	})
	ids := make([]string, e.opts.Workers)
	for i := range e.opts.Workers {
		wb, err := e.connect(p, "cortex-bench-worker-echo")
		if err != nil {
			return nil, err
		}
		w, err := worker.New(wb.Conn(), worker.Config{
			Kind:           echo.Kind,
			Topic:          e.topic,
			QueueGroup:     "workers-bench-" + e.runID,
			Handler:        hooked,
			Inline:         !e.opts.WorkerRunners,
			Capacity:       workerCapacity(e.opts),
			Direct:         true,
			Logger:         log,
			Metrics:        obs.registerer(),
			TracerProvider: spans.provider(),
		})
		if err != nil {
			return nil, err
		}
		ids[i] = w.ID()
		runs.Go(func() {
			if err := w.Run(workCtx); err != nil {
				runErrs <- fmt.Errorf("worker %s: %w", w.ID(), err)
			}
		})
	}
	// A worker heartbeats right after it subscribes, on the same connection:
	// once the scheduler has every worker's heartbeat, the server has every
	// worker's subscription.
	if err := waitFor(ctx, 10*time.Second, func() bool {
		snap := reg.Snapshot()
		for _, id := range ids {
			if snap[id] == nil {
				return false
			}
		}
		return true
	}); err != nil {
		return nil, fmt.Errorf("waiting for %d workers to heartbeat: %w", len(ids), err)
	}
	return p, nil
}

func waitFor(ctx context.Context, limit time.Duration, ok func() bool) error {
	deadline := time.Now().Add(limit)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", limit)
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// usage is the process's CPU time, peak resident set, heap allocations and
// garbage collections.
type usage struct {
	cpu         time.Duration
	maxRSS      int64 // bytes
	mallocs, gc uint64
	machine     time.Duration // the whole machine's busy CPU time
	machineOK   bool
}

func readUsage() usage {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	u := usage{mallocs: ms.Mallocs, gc: uint64(ms.NumGC)}
	u.machine, u.machineOK = machineBusy()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		u.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		u.maxRSS = maxRSSBytes(ru.Maxrss)
	}
	return u
}

// phase is one path set up and warmed up, measured round by round. What
// the rounds measure adds up in it.
type phase struct {
	e      *env
	pa     path
	d      *driver
	client *parts // the load generator's connection
	parts  *parts // what the path started

	jobs                 int
	elapsed, cpu         time.Duration
	machine              time.Duration
	machineUnknown       bool // some round could not read the machine's busy time
	mallocs, gcs         uint64
	maxRSS               int64
	failed, undispatched int64
	result1, dispatch    *hdrhistogram.Histogram
	lag                  *hdrhistogram.Histogram
}

// setup connects the load generator, starts the path and runs its warm-up.
// The caller closes the phase, also on error.
func (e *env) setup(ctx context.Context, pa path) (_ *phase, err error) {
	o := e.opts
	tr := newTracker("bench-"+e.runID+"-"+pa.tag+"-", o.Warmup+o.Jobs)
	submit, result := pa.subjects(e)
	ph := &phase{e: e, pa: pa, client: &parts{}, parts: &parts{},
		result1: newHistogram(), dispatch: newHistogram(), lag: newHistogram()}
	defer func() {
		if err != nil {
			err = errors.Join(err, ph.close())
		}
	}()
	cb, err := e.connect(ph.client, "cortex-bench-client")
	if err != nil {
		return nil, err
	}
	ph.d = &driver{
		tr:       tr,
		nc:       cb.Conn(),
		subject:  submit,
		enc:      newEncoder(tr, "cortex-bench-client", e.topic, e.payload),
		window:   o.Window,
		rate:     o.Rate,
		idle:     o.IdleTimeout,
		progress: o.Progress,
	}
	drain, err := cb.Subscribe(result, "", ph.d.onResult)
	if err != nil {
		return nil, err
	}
	ph.client.stop = append(ph.client.stop, drain)
	if pa.name == systemPath.name && SubmitMode(o) == SubmitAnswered {
		ph.d.answers = cb.NewInbox()
		ph.d.resubEnc = newEncoder(tr, "cortex-bench-client", e.topic, e.payload)
		drain, err := cb.SubscribeAnswers(ph.d.answers+".*", ph.d.onAnswer)
		if err != nil {
			return nil, err
		}
		ph.client.stop = append(ph.client.stop, drain)
	}
	if err := flush(ctx, cb); err != nil {
		return nil, err
	}
	if ph.parts, err = pa.start(ctx, e, tr); err != nil {
		ph.parts = &parts{}
		return nil, err
	}
	if o.Warmup > 0 {
		ph.d.label = pa.label + " warm-up"
		if err := ph.d.drive(ctx, newRound(0, o.Warmup, o.Window, false)); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	return ph, nil
}

// close stops the path, then the load generator's connection.
func (ph *phase) close() error {
	return errors.Join(ph.parts.close(), ph.client.close())
}

// round measures jobs [lo, hi), the k-th round, and adds what it measured.
func (ph *phase) round(ctx context.Context, k, lo, hi int) (err error) {
	o := ph.e.opts
	ph.d.label = ph.pa.label
	if o.Rounds > 1 {
		ph.d.label = fmt.Sprintf("%s %d/%d", ph.pa.label, k+1, o.Rounds)
	}
	r := newRound(lo, hi, o.Window, true)
	stopProfile := func() {}
	if ph.pa.name == "system" && k == 0 {
		if stopProfile, err = profile(o.CPUProfile); err != nil {
			return err
		}
	}
	before := readUsage()
	err = ph.d.drive(ctx, r)
	after := readUsage()
	stopProfile()
	if err != nil {
		return err
	}
	if ph.pa.name == "system" && k == o.Rounds-1 && o.MemProfile != nil {
		if err := pprof.Lookup("allocs").WriteTo(o.MemProfile, 0); err != nil {
			return fmt.Errorf("memory profile: %w", err)
		}
	}
	ph.jobs += hi - lo
	ph.elapsed += time.Duration(r.end - r.start)
	ph.cpu += after.cpu - before.cpu
	ph.mallocs += after.mallocs - before.mallocs
	ph.gcs += after.gc - before.gc
	ph.maxRSS = max(ph.maxRSS, after.maxRSS)
	ph.machineUnknown = ph.machineUnknown || !before.machineOK || !after.machineOK
	ph.machine += after.machine - before.machine
	ph.failed += r.failed
	ph.undispatched += r.undispatched
	ph.result1.Merge(r.result)
	ph.dispatch.Merge(r.dispatch)
	ph.lag.Merge(r.lag)
	return nil
}

// result is what the rounds measured, together.
func (ph *phase) result() *PhaseResult {
	elapsed := ph.elapsed.Seconds()
	res := &PhaseResult{
		Jobs:         ph.jobs,
		Rounds:       ph.e.opts.Rounds,
		Seconds:      elapsed,
		JobsPerSec:   float64(ph.jobs) / elapsed,
		Result:       latencyOf(ph.result1),
		Dispatch:     latencyOf(ph.dispatch),
		SendLag:      latencyOf(ph.lag),
		CPUSeconds:   ph.cpu.Seconds(),
		RSSMB:        float64(ph.maxRSS) / (1 << 20),
		AllocsPerJob: float64(ph.mallocs) / float64(ph.jobs),
		GCs:          ph.gcs,
		Failed:       ph.failed,
		Undispatched: ph.undispatched,
		Duplicates:   ph.d.dups.Load(),
		Resubmitted:  ph.d.resubmits.Load(),
		Refused:      ph.d.refused.Load(),
		Foreign:      ph.d.foreign.Load(),
		BusErrors:    ph.parts.busErrors() + ph.client.busErrors(),
	}
	res.CPUPer1kJobs = res.CPUSeconds / float64(ph.jobs) * 1000
	res.CPUCores = res.CPUSeconds / elapsed
	if !ph.machineUnknown {
		// /proc/stat counts in 10 ms ticks: small negative values are rounding.
		other := ph.machine.Seconds() - res.CPUSeconds
		res.OtherCores = max(other, 0) / elapsed
	} else {
		res.OtherCores = -1
	}
	return res
}

// flush waits until the server has processed everything sent on b so far
// (its subscriptions included).
func flush(ctx context.Context, b *bus.NatsBus) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return b.Flush(ctx)
}
