// Package cluster_test runs the system on an in-process three-node NATS
// cluster with R3 streams and buckets, several schedulers electing one
// active placer, and workers, and breaks it: nodes stopped (the one leading
// the job store's stream included), the active scheduler cut off, rolling
// restarts, and a randomized run of all of these. Every test ends by
// checking that every job a client saw accepted is in exactly one terminal
// state in the job store, and that no client saw two terminal states.
package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/infrastructure/config"
	"github.com/cortex-os/core/internal/jobstore"
	"github.com/cortex-os/core/internal/jobstore/kvstore"
	"github.com/cortex-os/core/internal/lifecycle"
	"github.com/cortex-os/core/internal/natstest"
	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/system"
	"github.com/cortex-os/core/internal/systest"
	"github.com/cortex-os/core/pkg/client"
	pb "github.com/cortex-os/core/pkg/pb/v1"
	"github.com/cortex-os/core/pkg/wire"
	"github.com/cortex-os/core/pkg/worker"
)

var discard = slog.New(slog.DiscardHandler)

func logger() *slog.Logger {
	if os.Getenv("CORTEX_CLUSTER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return discard
}

// cutter is a dialer whose connections a test cuts at once, refusing new
// ones until it heals: a process that crashed or was cut off the network,
// as far as the cluster can tell.
type cutter struct {
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

func (c *cutter) Dial(network, address string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, errors.New("cut off")
	}
	conn, err := net.DialTimeout(network, address, 2*time.Second)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cutter) Cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = true
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

func (c *cutter) Heal() {
	c.mu.Lock()
	c.cut = false
	c.mu.Unlock()
}

func (c *cutter) options() []nats.Option {
	return []nats.Option{nats.SetCustomDialer(c), nats.ReconnectWait(50 * time.Millisecond), nats.MaxReconnects(-1)}
}

// proc is a scheduler or worker running in the test.
type proc struct {
	name   string
	cut    *cutter
	cancel context.CancelFunc
	done   chan struct{}
	// crashed: cut off for good; its stop spends drain timeouts on a
	// connection that is gone, and nobody waits for it.
	crashed atomic.Bool
}

// crash cuts the process off and stops it without letting it say goodbye:
// its lease lapses, its connection is gone.
func (p *proc) crash() {
	p.crashed.Store(true)
	p.cut.Cut()
	p.cancel()
}

// stop stops the process cleanly and waits for it.
// A process whose NATS node is down drains its subscriptions against a
// connection that is reconnecting, each up to its drain timeout: stop waits
// 5 s, then leaves it to finish on its own (it no longer counts as
// running; an elected scheduler has stopped renewing its lease by then).
func (p *proc) stop(t testing.TB) {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Logf("%s still stopping after 5s; left to finish on its own", p.name)
		p.crashed.Store(true)
	}
}

type rig struct {
	t       testing.TB
	c       *natstest.Cluster
	part    *natstest.PartitionableCluster // with rigConfig.partitionable
	urls    string
	place   *placement.Config
	lease   time.Duration
	seq     atomic.Int64
	mu      sync.Mutex
	scheds  []*proc
	workers []*proc

	// Worker-side observations.
	running sync.Map // tenant -> *atomic.Int64
	maxSeen sync.Map // tenant -> *atomic.Int64
	execs   atomic.Int64
	cl      *client.Client
	events  *events
	// hold holds tenant capped's jobs in their handlers until it is
	// closed (it is, unless rigConfig.hold).
	hold      chan struct{}
	submitted *submissions
}

type rigConfig struct {
	placement *placement.Config
	// partitionable: nodes routed through proxies (r.part) so that one
	// can be cut off.
	partitionable bool
	hold          bool // tenant capped's jobs wait for close(r.hold)
}

// clusterSlots bounds how many three-node clusters (each with schedulers,
// workers and load) run at once: on a two-core machine under -race, six at
// once starve the nodes' Raft heartbeats and turn the tests into tests of
// the machine's load.
var clusterSlots = make(chan struct{}, 2)

func newRig(t *testing.T, rc rigConfig) *rig {
	t.Helper()
	clusterSlots <- struct{}{}
	t.Cleanup(func() { <-clusterSlots }) // registered first: runs after the cluster's own cleanup
	var (
		c    *natstest.Cluster
		part *natstest.PartitionableCluster
	)
	if rc.partitionable {
		part = natstest.RunPartitionableCluster(t, 3)
		c = part.Cluster
	} else {
		c = natstest.RunCluster(t, 3)
	}
	r := &rig{part: part, t: t, c: c, urls: c.URLs(), place: rc.placement, lease: 2 * time.Second, hold: make(chan struct{})}
	if !rc.hold {
		close(r.hold)
	}
	cl, err := client.Connect(r.urls, client.Options{Logger: discard, RequestTimeout: 3 * time.Second,
		NATSOptions: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	r.cl = cl
	r.events = watchEvents(t, r.urls)
	r.submitted = &submissions{accepted: map[string]bool{}}
	t.Cleanup(func() {
		r.mu.Lock()
		all := append(append([]*proc(nil), r.workers...), r.scheds...)
		r.mu.Unlock()
		// Clean stops, all at once: a process cut off would spend its
		// drain timeouts on a connection that is gone.
		var wg sync.WaitGroup
		for _, p := range all {
			p.cancel()
			if p.crashed.Load() {
				continue
			}
			wg.Go(func() {
				select {
				case <-p.done:
				case <-time.After(10 * time.Second):
					t.Logf("%s still stopping after 10s; left behind", p.name)
				}
			})
		}
		wg.Wait()
		cl.Close()
	})
	return r
}

// startScheduler starts a scheduler candidate: R3 store, leader election.
func (r *rig) startScheduler() *proc {
	n := r.seq.Add(1)
	cut := &cutter{}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: fmt.Sprintf("sched-%d", n), cut: cut, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		err := system.RunScheduler(ctx, system.SchedulerOptions{
			NatsURL: r.urls, ID: p.name, Logger: logger(), NatsOptions: cut.options(), Placement: r.place,
			Settings: config.Scheduler{Store: config.StoreJetStream, Replicas: 3, LeaderElection: true, LeaderLease: r.lease, MaxAttempts: 100},
		})
		if err != nil && ctx.Err() == nil {
			r.t.Logf("%s: %v", p.name, err)
		}
	}()
	r.mu.Lock()
	r.scheds = append(r.scheds, p)
	r.mu.Unlock()
	return p
}

// startSchedulers starts n scheduler candidates, each once the one before
// is up (the first leads; two starting at the very same moment spend a few
// seconds creating the same streams, see system.retryCreate).
func (r *rig) startSchedulers(n int) {
	r.t.Helper()
	for i := range n {
		p := r.startScheduler()
		if i == 0 {
			systest.Poll(r.t, 30*time.Second, 50*time.Millisecond, p.name+" to lead", func() (bool, string) {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				return r.leader(ctx) == p, ""
			})
		}
	}
}

// leader returns the running scheduler that holds the lease, if any.
func (r *rig) leader(ctx context.Context) *proc {
	nc, err := nats.Connect(r.urls)
	if err != nil {
		return nil
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "CORTEX_LEADER")
	if err != nil {
		return nil
	}
	e, err := kv.Get(ctx, "scheduler")
	if err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.scheds {
		if p.name == string(e.Value()) {
			return p
		}
	}
	return nil
}

func counter(m *sync.Map, key string) *atomic.Int64 {
	v, _ := m.LoadOrStore(key, new(atomic.Int64))
	return v.(*atomic.Int64)
}

// startWorker starts a worker of job.work with the given capacity; its
// handler takes 10-40 ms (tenant capped's jobs wait for r.hold first) and counts the jobs it runs at once per tenant.
func (r *rig) startWorker(capacity int) *proc {
	n := r.seq.Add(1)
	cut := &cutter{}
	ctx, cancel := context.WithCancel(context.Background())
	p := &proc{name: fmt.Sprintf("worker-%d", n), cut: cut, cancel: cancel, done: make(chan struct{})}
	nc, err := nats.Connect(r.urls, append(cut.options(), nats.Name(p.name))...)
	if err != nil {
		r.t.Fatal(err)
	}
	w, err := worker.New(nc, worker.Config{
		Kind: "work", Topic: "job.work", ID: p.name, Capacity: capacity, Direct: true, Logger: discard,
		Handler: worker.HandlerFunc(func(ctx context.Context, job *worker.Job) (worker.Result, error) {
			run := counter(&r.running, job.Tenant())
			now := run.Add(1)
			defer run.Add(-1)
			top := counter(&r.maxSeen, job.Tenant())
			for {
				old := top.Load()
				if now <= old || top.CompareAndSwap(old, now) {
					break
				}
			}
			r.execs.Add(1)
			work := time.Duration(10+rand.IntN(30)) * time.Millisecond
			if job.Tenant() == "capped" {
				select { // held until the test lets them go
				case <-r.hold:
				case <-ctx.Done():
					return worker.Result{}, ctx.Err()
				}
			}
			select {
			case <-time.After(work):
			case <-ctx.Done():
				return worker.Result{}, ctx.Err()
			}
			return worker.Result{Ptr: "memory://work/" + job.ID()}, nil
		}),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	go func() {
		defer close(p.done)
		defer nc.Close()
		_ = w.Run(ctx)
	}()
	r.mu.Lock()
	r.workers = append(r.workers, p)
	r.mu.Unlock()
	return p
}

// submissions are the jobs clients saw accepted.
type submissions struct {
	mu       sync.Mutex
	accepted map[string]bool
	refused  int
}

func (s *submissions) add(id string) {
	s.mu.Lock()
	s.accepted[id] = true
	s.mu.Unlock()
}

func (s *submissions) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id := range s.accepted {
		out = append(out, id)
	}
	return out
}

// submit submits one job, again with the same id until a scheduler answers
// (the same id is the same job) or ctx ends; a job is accepted once a
// scheduler answered with its record.
func (r *rig) submit(ctx context.Context, id, tenant string) bool {
	for ctx.Err() == nil {
		_, err := r.cl.Submit(ctx, &pb.JobRequest{JobId: id, Topic: "job.work", Tenant: tenant})
		if err == nil {
			r.submitted.add(id)
			return true
		}
		var ref *client.RefusedError
		if errors.As(err, &ref) && !errors.Is(err, client.ErrThrottled) {
			r.submitted.mu.Lock()
			r.submitted.refused++
			r.submitted.mu.Unlock()
			if !ref.Retryable {
				return false
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// load submits up to total jobs from n goroutines until ctx ends; prefix
// names them.
func (r *rig) load(ctx context.Context, prefix string, n, total int, tenants ...string) *sync.WaitGroup {
	if len(tenants) == 0 {
		tenants = []string{"t"}
	}
	var wg sync.WaitGroup
	var left atomic.Int64
	left.Store(int64(total))
	for g := range n {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil && left.Add(-1) >= 0; i++ {
				r.submit(ctx, fmt.Sprintf("%s-%d-%d", prefix, g, i), tenants[(g+i)%len(tenants)])
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return &wg
}

// events counts the terminal job events clients saw, per job.
type events struct {
	mu       sync.Mutex
	terminal map[string][]pb.JobState
}

func watchEvents(t testing.TB, urls string) *events {
	ev := &events{terminal: map[string][]pb.JobState{}}
	nc, err := nats.Connect(urls, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.Subscribe(wire.SubjectJobEvents, func(m *nats.Msg) {
		var p pb.BusPacket
		if p.UnmarshalVT(m.Data) != nil {
			return
		}
		for _, j := range p.GetJobAnswer().GetJobs() {
			if !lifecycle.Active(j.GetState()) {
				ev.mu.Lock()
				ev.terminal[j.GetJobId()] = append(ev.terminal[j.GetJobId()], j.GetState())
				ev.mu.Unlock()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Schedulers publish events only while someone follows: follow every
	// job, again every second (not every wire.FollowInterval: schedulers
	// started or restarted meanwhile hold no follows until they hear one),
	// until the test ends.
	follow := func() {
		if data, err := wire.FollowPacket("cluster-test", "").MarshalVT(); err == nil {
			_ = nc.Publish(wire.SubjectJobFollow, data) // a lost one is sent again
		}
	}
	follow()
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				follow()
			}
		}
	}()
	return ev
}

// verify waits (up to 60 s) for every accepted job to end, then checks it
// ended once: in the job store exactly one terminal record, COMPLETED (the
// workers never fail a job and attempts are plenty); no client saw two
// terminal events for it, nor one that disagrees with the store; a client's
// Get says the same.
func (r *rig) verify() {
	t := r.t
	t.Helper()
	ids := r.submitted.ids()
	if len(ids) == 0 {
		t.Fatal("no job was accepted")
	}
	nc, err := nats.Connect(r.urls, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Each try bounded: a request that reached a node as it came back
	// from a restart may go unanswered.
	var store *kvstore.Store
	for store == nil {
		tctx, tcancel := context.WithTimeout(ctx, 5*time.Second)
		store, err = kvstore.New(tctx, js, kvstore.Config{Replicas: 3, Logger: discard})
		tcancel()
		if err != nil && ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	var recs map[string]jobstore.Record
	start, logged := time.Now(), time.Now()
	defer func() { t.Logf("verified in %s", time.Since(start).Round(time.Millisecond)) }()
	for {
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		all, err := store.List(lctx, jobstore.Filter{})
		lcancel()
		if err == nil {
			recs = map[string]jobstore.Record{}
			for _, rec := range all {
				recs[rec.Job.GetJobId()] = rec
			}
			open := 0
			for _, id := range ids {
				if rec, ok := recs[id]; !ok || lifecycle.Active(rec.Job.GetState()) {
					open++
				}
			}
			if open == 0 {
				break
			}
			if lastLog := time.Since(logged); lastLog > 5*time.Second {
				logged = time.Now()
				for _, id := range ids {
					if rec, ok := recs[id]; !ok || lifecycle.Active(rec.Job.GetState()) {
						t.Logf("%d open, e.g. %s: %s attempt %d worker %s reason %q", open, id, lifecycle.Name(rec.Job.GetState()), rec.Job.GetAttempt(), rec.Job.GetWorkerId(), rec.Job.GetPendingReason())
						break
					}
				}
			}
			if ctx.Err() != nil {
				t.Fatalf("%d of %d accepted jobs not finished within 60s", open, len(ids))
			}
		} else if ctx.Err() != nil {
			t.Fatalf("listing the job store: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Late events of the last jobs.
	time.Sleep(200 * time.Millisecond)
	r.events.mu.Lock()
	defer r.events.mu.Unlock()
	bad := 0
	for _, id := range ids {
		rec := recs[id]
		if rec.Job.GetState() != lifecycle.Completed {
			bad++
			if bad < 10 {
				t.Errorf("job %s ended %s (%s), want COMPLETED", id, lifecycle.Name(rec.Job.GetState()), rec.Job.GetError())
			}
		}
		if seen := r.events.terminal[id]; len(seen) > 1 || (len(seen) == 1 && seen[0] != rec.Job.GetState()) {
			bad++
			t.Errorf("job %s: clients saw terminal events %v, the store holds %s", id, seen, lifecycle.Name(rec.Job.GetState()))
		}
	}
	// A client's Get agrees with the store (a sample, to keep it quick).
	for i, id := range ids {
		if i%10 != 0 {
			continue
		}
		var got *pb.JobInfo
		for got == nil && ctx.Err() == nil {
			if got, err = r.cl.Get(ctx, id); err != nil {
				got = nil
				time.Sleep(100 * time.Millisecond)
			}
		}
		if got.GetState() != recs[id].Job.GetState() {
			t.Errorf("job %s: Get says %s, the store %s", id, lifecycle.Name(got.GetState()), lifecycle.Name(recs[id].Job.GetState()))
		}
	}
	t.Logf("%d jobs accepted, all in one terminal state; %d executions (at least once), %d refusals retried", len(ids), r.execs.Load(), r.submitted.refused)
}

// waitProgress waits until n more jobs have completed in workers than
// when it was called, or fails the test after d.
func (r *rig) waitProgress(n int64, d time.Duration) {
	r.t.Helper()
	start := r.execs.Load()
	systest.Poll(r.t, d, 20*time.Millisecond, fmt.Sprintf("%d executions", n), func() (bool, string) {
		done := r.execs.Load() - start
		return done >= n, fmt.Sprintf("%d executions", done)
	})
}
