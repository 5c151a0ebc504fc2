package cluster_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"
)

// chaosSettings: CORTEX_CHAOS_SEED replays a run (its faults, in order; not
// their timing against the load), CORTEX_CHAOS_TIME sets how long faults go
// on (default 5s; make chaos sets CHAOS_TIME).
func chaosSettings(t *testing.T) (uint64, time.Duration) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CORTEX_CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CORTEX_CHAOS_SEED=%q: %v", s, err)
		}
		seed = v
	}
	d := 5 * time.Second
	if s := os.Getenv("CORTEX_CHAOS_TIME"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CORTEX_CHAOS_TIME=%q: %v", s, err)
		}
		d = v
	}
	return seed, d
}

// Workers, schedulers and nodes crash, stop and start, and nodes are cut
// off and let back, at random under load; at the end every accepted job is in exactly one terminal state.
// The seed is printed; CORTEX_CHAOS_SEED=<seed> replays the faults.
func TestChaos(t *testing.T) {
	skipShort(t)
	t.Parallel()
	seed, length := chaosSettings(t)
	t.Logf("chaos: CORTEX_CHAOS_SEED=%d CORTEX_CHAOS_TIME=%s", seed, length)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))

	r := newRig(t, rigConfig{partitionable: true})
	r.startSchedulers(2)
	scheds := append([]*proc(nil), r.scheds...)
	workers := []*proc{r.startWorker(6), r.startWorker(6)}
	ctx, stop := context.WithCancel(context.Background())
	load := r.load(ctx, "chaos", 4, 1<<30)
	r.waitProgress(20, 30*time.Second)

	// One node at a time is down or cut off, which keeps a quorum.
	down, cut := 0, 0
	end := time.Now().Add(length)
	faults := 0
	for time.Now().Before(end) {
		time.Sleep(time.Duration(200+rng.IntN(600)) * time.Millisecond)
		faults++
		switch a := rng.IntN(6); {
		case a == 0 && down == 0 && cut == 0:
			n := 1 + rng.IntN(len(r.c.Nodes))
			if rng.IntN(2) == 0 {
				down = n
				t.Logf("chaos %d: stop node %d", faults, n)
				r.c.Node(n).Stop()
			} else {
				cut = n
				t.Logf("chaos %d: cut node %d off", faults, n)
				r.part.Partition(n)
			}
		case a <= 1 && down != 0:
			t.Logf("chaos %d: start node %d", faults, down)
			if err := r.c.Node(down).Start(); err != nil {
				t.Fatal(err)
			}
			down = 0
		case a <= 1 && cut != 0:
			t.Logf("chaos %d: heal node %d", faults, cut)
			r.part.Heal(cut)
			cut = 0
		case a == 2:
			i := rng.IntN(len(scheds))
			t.Logf("chaos %d: crash %s, start another", faults, scheds[i].name)
			scheds[i].crash()
			scheds[i] = r.startScheduler()
		case a == 3:
			i := rng.IntN(len(scheds))
			t.Logf("chaos %d: stop %s, start another", faults, scheds[i].name)
			scheds[i].stop(t)
			scheds[i] = r.startScheduler()
		case a == 4:
			i := rng.IntN(len(workers))
			t.Logf("chaos %d: crash %s, start another", faults, workers[i].name)
			workers[i].crash()
			workers[i] = r.startWorker(6)
		default:
			i := rng.IntN(len(workers))
			t.Logf("chaos %d: stop %s, start another", faults, workers[i].name)
			workers[i].stop(t)
			workers[i] = r.startWorker(6)
		}
	}
	if down != 0 {
		if err := r.c.Node(down).Start(); err != nil {
			t.Fatal(err)
		}
	}
	if cut != 0 {
		r.part.Heal(cut)
	}
	stop()
	load.Wait()
	r.verify()
}
