package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cortex-os/core/internal/placement"
	"github.com/cortex-os/core/internal/systest"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test; skipped with -short")
	}
}

// The node leading the job store's stream stops mid-run and stays down:
// the two others elect a new stream leader, the schedulers and workers
// reconnect to them, and every accepted job completes exactly once.
func TestKillJobStoreLeaderNode(t *testing.T) {
	skipShort(t)
	t.Parallel()
	r := newRig(t, rigConfig{})
	r.startSchedulers(2)
	r.startWorker(8)
	r.startWorker(8)
	ctx, stop := context.WithCancel(context.Background())
	load := r.load(ctx, "kill-node", 4, 400)
	r.waitProgress(50, 30*time.Second)
	t.Logf("%s: 50 jobs ran", time.Now().Format("15:04:05.000"))

	lead := r.jobStoreLeader()
	t.Logf("stopping node %d, the job store's stream leader", lead)
	r.c.Node(lead).Stop()
	t.Logf("%s: stopped", time.Now().Format("15:04:05.000"))
	r.waitProgress(100, 30*time.Second)
	t.Logf("%s: 100 more ran", time.Now().Format("15:04:05.000"))
	stop()
	load.Wait()
	t.Logf("%s: load stopped", time.Now().Format("15:04:05.000"))
	r.verify()
}

// The active scheduler is cut off without a word (as a crash or a
// partition looks): a standby takes the lease within seconds, adopts the
// jobs in flight, and placement resumes; a tenant's max_concurrent holds
// across the handover, counted at the workers.
func TestKillActivePlacer(t *testing.T) {
	skipShort(t)
	t.Parallel()
	const limit = 3
	cfg := placement.Config{DefaultStrategy: "least-loaded", Tenants: []placement.Tenant{{Name: "capped", MaxConcurrent: limit}}}
	r := newRig(t, rigConfig{placement: &cfg, hold: true})
	r.startSchedulers(2)
	r.startWorker(4)
	r.startWorker(4)
	ctx, stop := context.WithCancel(context.Background())
	load := r.load(ctx, "kill-placer", 6, 200, "capped", "free", "free", "free")
	// Cut while the capped tenant has jobs running (at most limit).
	systest.Poll(t, 30*time.Second, time.Millisecond, "30 executions and the capped tenant running limit jobs at once", func() (bool, string) {
		return r.execs.Load() >= 30 && counter(&r.running, "capped").Load() >= limit, ""
	})

	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	var old *struct{ name string }
	if p := r.leader(wctx); p != nil {
		old = &struct{ name string }{p.name}
		t.Logf("cutting off %s, the active scheduler", p.name)
		p.crash()
	}
	cancel()
	if old == nil {
		t.Fatal("no active scheduler")
	}
	start := time.Now()
	r.waitProgress(1, 20*time.Second)
	t.Logf("placement resumed: a job ran %s after the cut", time.Since(start).Round(10*time.Millisecond))
	// The capped jobs placed before the cut still run: the new leader must
	// count them, and place no more of the tenant's meanwhile.
	r.waitProgress(40, 20*time.Second)
	close(r.hold)
	wctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	if p := r.leader(wctx); p == nil || p.name == old.name {
		t.Errorf("leader after the cut: %v, want the standby", p)
	}
	cancel()
	stop()
	load.Wait()
	r.verify()
	if got := counter(&r.maxSeen, "capped").Load(); got > limit {
		t.Errorf("tenant capped ran %d jobs at once at the workers, max_concurrent %d", got, limit)
	}
}

// Each node restarts in turn under load, the next only once the restarted
// one is back: nothing accepted is lost.
func TestRollingRestart(t *testing.T) {
	skipShort(t)
	t.Parallel()
	r := newRig(t, rigConfig{})
	r.startSchedulers(2)
	r.startWorker(8)
	r.startWorker(8)
	ctx, stop := context.WithCancel(context.Background())
	load := r.load(ctx, "rolling", 4, 100000)
	r.waitProgress(30, 30*time.Second)
	for _, n := range r.c.Nodes {
		n.Stop()
		r.waitProgress(10, 30*time.Second)
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		r.waitProgress(10, 30*time.Second)
	}
	stop()
	load.Wait()
	r.verify()
}

// The node leading the job store's stream is cut off from the other two
// for 3 s (it keeps running, and its clients stay connected to
// it) and then let back: the majority elects new stream leaders and goes
// on, a scheduler on the cut-off side loses its lease and is fenced, and
// every accepted job completes exactly once.
func TestPartitionOfOneNode(t *testing.T) {
	skipShort(t)
	t.Parallel()
	r := newRig(t, rigConfig{partitionable: true})
	r.startSchedulers(2)
	r.startWorker(8)
	r.startWorker(8)
	ctx, stop := context.WithCancel(context.Background())
	load := r.load(ctx, "partition", 4, 400)
	r.waitProgress(50, 30*time.Second)

	lead := r.jobStoreLeader()
	t.Logf("cutting node %d, the job store's stream leader, off for 3s", lead)
	r.part.Partition(lead)
	time.Sleep(3 * time.Second) // the fault's length, not an assertion
	r.part.Heal(lead)
	r.waitProgress(60, 60*time.Second)
	stop()
	load.Wait()
	r.verify()
}

// jobStoreLeader is the node leading the job store's stream (KV_CORTEX_JOBS).
func (r *rig) jobStoreLeader() int {
	r.t.Helper()
	nc, err := nats.Connect(r.urls)
	if err != nil {
		r.t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lead := r.c.StreamLeader(ctx, js, "KV_CORTEX_JOBS")
	if lead == 0 {
		r.t.Fatal("no leader for KV_CORTEX_JOBS")
	}
	return lead
}
